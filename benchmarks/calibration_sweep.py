"""Accuracy of `adapt calibrate` over the range users meet: photos made by tests/test_calibrate.py
(independent blur, Pillow bicubic, numpy noise, Pillow libjpeg; three 96 x 96 LR photos per
calibration, x4) for each setting and seed, and the estimates' errors. CPU only.

    python -m benchmarks.calibration_sweep                 # the grid of docs/degradations.md
    python -m benchmarks.calibration_sweep --seeds 3,4,5
    python -m benchmarks.calibration_sweep --real          # real photos (soft scenes)
    python -m benchmarks.calibration_sweep --soft 0.5      # half the shapes defocused

Prints one line per setting: the blur and noise errors per seed (estimate - truth), the
reported uncertainties, whether the targets (blur within 0.25 HR pixels, noise within 10% or
0.5 level, JPEG quality exact) hold, and the seconds per calibration. A noise under the
detection limit of the photos' JPEG (none can be told from no noise) meets its target when the
calibration says so: "hidden" with the limit; likewise a blur under the resolvable limit of the
photos' edges (none can be told from no blur) when the calibration reports it "unresolved".

--real degrades the five real photos of tests/test_calibrate.py::test_real_photos instead and
prints, per setting, the edges' spread, the blur error as calibrated and as the interquartile
mean of all edges would read it (what calibrate used before soft scenes were read from the
narrower edges), and the noise error.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from test_calibrate import write_photos, write_real_photos  # noqa: E402

from adaptsr.adapt.calibration import blur as blur_module  # noqa: E402
from adaptsr.adapt.calibration import calibrate  # noqa: E402
from adaptsr.adapt.calibration.photos import load_photos  # noqa: E402

# (blur, noise, JPEG quality): every blur 0.5-3, noise 0-25 and quality 30-95 (and none) appears
# with several of the others; no setting is one the estimators were tuned on.
GRID = [
    (0.5, 0, None), (0.5, 5, 75), (0.5, 15, 30), (0.5, 25, 95),
    (1.0, 0, 50), (1.0, 5, None), (1.0, 15, 95), (1.0, 25, 30),
    (1.5, 2, 50), (1.5, 10, 75), (2.0, 0, 30), (2.0, 5, 95),
    (2.0, 15, None), (2.0, 25, 50), (2.5, 0, 95), (2.5, 25, 75),
    (3.0, 0, 75), (3.0, 5, 30), (3.0, 15, 50), (3.0, 25, None),
]  # fmt: skip


def run(blur: float, noise: float, quality: int | None, seed: int, soft: float = 0.0):
    """(calibration, CPU seconds, the blur the interquartile mean of all edges reads)."""
    with tempfile.TemporaryDirectory() as folder:
        paths = write_photos(Path(folder), blur, noise, quality, seed=seed, soft=soft)
        start = time.process_time()
        c = calibrate(paths, 4)
        seconds = time.process_time() - start
        return c, seconds, whole_edge_sigma(paths, c) if c.blur.soft_scene else c.blur.sigma


def whole_edge_sigma(paths, c) -> float:
    """The blur the interquartile mean of all clean edges reads (calibrate's reading before
    soft scenes were read from their narrower edges)."""
    b = blur_module
    key = round(float(c.noise.sigma), 1)
    ref = b.reference_curve(c.scale, key, c.jpeg.quality, c.jpeg.subsampling)
    widths = np.concatenate(b.clean_edge_widths(load_photos(paths), ref))
    return b.sigma_from_width(ref.curve, b.interquartile_mean(widths))


# (blur, noise, JPEG quality) on the real photos: test_real_photos's three and three more
REAL_GRID = [(1.6, 8, 60), (1.0, 4, 80), (2.2, 15, None), (0.5, 2, 90), (3.0, 5, 75), (1.0, 15, 75)]


def run_real(blur: float, noise: float, quality: int | None) -> str:
    with tempfile.TemporaryDirectory() as folder:
        paths = write_real_photos(Path(folder), blur, noise, quality)
        c = calibrate(paths, 4)
        whole = whole_edge_sigma(paths, c)
    return (
        f"blur {blur} noise {noise} jpeg {quality}: edge spread {c.blur.spread:.2f}; "
        f"blur err {c.blur.sigma - blur:+.2f} (interquartile mean of all edges "
        f"{whole - blur:+.2f}); noise err {c.noise.sigma - noise:+.2f}; "
        f"jpeg {'exact' if c.jpeg.quality == quality else 'MISS'}"
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="3,4", help="comma-separated photo seeds")
    parser.add_argument("--real", action="store_true", help="the real photos instead")
    parser.add_argument(
        "--soft", type=float, default=0.0, help="share of shapes with defocused outlines"
    )
    args = parser.parse_args(argv)
    if args.real:
        for setting in REAL_GRID:
            print(run_real(*setting), flush=True)
        return
    seeds = [int(s) for s in args.seeds.split(",")]
    for blur, noise, quality in GRID:
        results = [run(blur, noise, quality, s, args.soft) for s in seeds]
        cals = [c for c, _, _ in results]
        eb = [c.blur.sigma - blur for c in cals]
        en = [c.noise.sigma - noise for c in cals]
        unresolved = [blur <= c.blur.resolvable_limit and c.blur.unresolved for c in cals]
        ok_b = all(u or abs(e) <= 0.25 for e, u in zip(eb, unresolved, strict=True))
        blur_limit = max(c.blur.resolvable_limit for c in cals)
        limits = " ".join(f"{c.blur.resolvable_limit:.2f}" for c in cals)
        blur_note = f" unresolved under {blur_limit:.2f}" if any(unresolved) else ""
        hidden = [noise <= c.noise.detection_limit and c.noise.hidden for c in cals]
        ok_n = all(h or abs(e) <= max(0.1 * noise, 0.5) for e, h in zip(en, hidden, strict=True))
        limit = max(c.noise.detection_limit for c in cals)
        note = f" hidden under {limit:.2f}" if any(hidden) else ""
        ok_q = all(c.jpeg.quality == quality for c in cals)
        # soft scenes (read from the narrower edges): what all edges read, for comparison
        whole = " ".join(f"{w - blur:+.2f}" if c.blur.soft_scene else "." for c, _, w in results)
        print(
            f"blur {blur} noise {noise} jpeg {quality}: "
            f"blur err {' '.join(f'{e:+.2f}' for e in eb)} "
            f"(+- {max(c.blur.uncertainty for c in cals):.2f}) {'ok' if ok_b else 'MISS'}"
            f"{blur_note} (limits {limits}); "
            f"noise err {' '.join(f'{e:+.2f}' for e in en)} "
            f"(+- {max(c.noise.uncertainty for c in cals):.2f}) {'ok' if ok_n else 'MISS'}"
            f"{note}; "
            f"jpeg {'exact' if ok_q else 'MISS'}; "
            f"edge spread {' '.join(f'{c.blur.spread:.2f}' for c in cals)}, "
            f"all edges read {whole}; "
            f"{np.mean([t for _, t, _ in results]):.1f} CPU s",
            flush=True,
        )


if __name__ == "__main__":
    main()
