"""Accuracy of `adapt calibrate` over the range users meet: photos made by tests/test_calibrate.py
(independent blur, Pillow bicubic, numpy noise, Pillow libjpeg; three 96 x 96 LR photos per
calibration, x4) for each setting and seed, and the estimates' errors. CPU only.

    python -m benchmarks.calibration_sweep                 # the grid of docs/degradations.md
    python -m benchmarks.calibration_sweep --seeds 3,4,5

Prints one line per setting: the blur and noise errors per seed (estimate - truth), the
reported uncertainties, whether the targets (blur within 0.25 HR pixels, noise within 10% or
0.5 level, JPEG quality exact) hold, and the seconds per calibration. A noise under the
detection limit of the photos' JPEG (none can be told from no noise) meets its target when the
calibration says so: "hidden" with the limit; likewise a blur under the resolvable limit of the
photos' edges (none can be told from no blur) when the calibration reports it "unresolved".
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from test_calibrate import write_photos  # noqa: E402

from adaptsr.adapt.calibration import calibrate  # noqa: E402

# (blur, noise, JPEG quality): every blur 0.5-3, noise 0-25 and quality 30-95 (and none) appears
# with several of the others; no setting is one the estimators were tuned on.
GRID = [
    (0.5, 0, None), (0.5, 5, 75), (0.5, 15, 30), (0.5, 25, 95),
    (1.0, 0, 50), (1.0, 5, None), (1.0, 15, 95), (1.0, 25, 30),
    (1.5, 2, 50), (1.5, 10, 75), (2.0, 0, 30), (2.0, 5, 95),
    (2.0, 15, None), (2.0, 25, 50), (2.5, 0, 95), (2.5, 25, 75),
    (3.0, 0, 75), (3.0, 5, 30), (3.0, 15, 50), (3.0, 25, None),
]  # fmt: skip


def run(blur: float, noise: float, quality: int | None, seed: int):
    with tempfile.TemporaryDirectory() as folder:
        paths = write_photos(Path(folder), blur, noise, quality, seed=seed)
        start = time.process_time()
        c = calibrate(paths, 4)
        return c, time.process_time() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="3,4", help="comma-separated photo seeds")
    seeds = [int(s) for s in parser.parse_args(argv).seeds.split(",")]
    for blur, noise, quality in GRID:
        results = [run(blur, noise, quality, s) for s in seeds]
        eb = [c.blur.sigma - blur for c, _ in results]
        en = [c.noise.sigma - noise for c, _ in results]
        unresolved = [blur <= c.blur.resolvable_limit and c.blur.unresolved for c, _ in results]
        ok_b = all(u or abs(e) <= 0.25 for e, u in zip(eb, unresolved, strict=True))
        blur_limit = max(c.blur.resolvable_limit for c, _ in results)
        limits = " ".join(f"{c.blur.resolvable_limit:.2f}" for c, _ in results)
        blur_note = f" unresolved under {blur_limit:.2f}" if any(unresolved) else ""
        hidden = [noise <= c.noise.detection_limit and c.noise.hidden for c, _ in results]
        ok_n = all(h or abs(e) <= max(0.1 * noise, 0.5) for e, h in zip(en, hidden, strict=True))
        limit = max(c.noise.detection_limit for c, _ in results)
        note = f" hidden under {limit:.2f}" if any(hidden) else ""
        ok_q = all(c.jpeg.quality == quality for c, _ in results)
        print(
            f"blur {blur} noise {noise} jpeg {quality}: "
            f"blur err {' '.join(f'{e:+.2f}' for e in eb)} "
            f"(+- {max(c.blur.uncertainty for c, _ in results):.2f}) {'ok' if ok_b else 'MISS'}"
            f"{blur_note} (limits {limits}); "
            f"noise err {' '.join(f'{e:+.2f}' for e in en)} "
            f"(+- {max(c.noise.uncertainty for c, _ in results):.2f}) {'ok' if ok_n else 'MISS'}"
            f"{note}; "
            f"jpeg {'exact' if ok_q else 'MISS'}; "
            f"{np.mean([t for _, t in results]):.1f} CPU s",
            flush=True,
        )


if __name__ == "__main__":
    main()
