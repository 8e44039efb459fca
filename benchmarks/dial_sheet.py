"""The fidelity-perception dial as one picture (docs/results.md): the same crops of several
upscaled folders side by side, beside the HR image.

    python -m benchmarks.dial_sheet --hr HR_DIR --col "L1=UP_L1" --col "GAN=UP_GAN" \
        --crop chelsea:120:200:64 --crop astronaut:40:180:64 --out dial.png

Each --col is LABEL=FOLDER of `adapt upscale` outputs named as the HR images; each --crop is
STEM:TOP:LEFT:SIZE in HR pixels.
"""

from __future__ import annotations

from pathlib import Path

import click
import cv2
import numpy as np

from adaptsr.adapt.eval_report import compare_image
from adaptsr.core.images import read_image


def _find(folder: Path, stem: str) -> Path:
    found = sorted(p for p in folder.iterdir() if p.stem == stem)
    if not found:
        raise click.UsageError(f"no image named {stem} in {folder}")
    return found[0]


def _crop(path: Path, top: int, left: int, size: int) -> np.ndarray:
    img = read_image(path).rgb
    if top + size > img.shape[0] or left + size > img.shape[1]:
        raise click.UsageError(f"crop {top},{left}+{size} leaves {path} ({img.shape[:2]})")
    return img[top : top + size, left : left + size]


@click.command()
@click.option("--hr", "hr", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--col", "cols", multiple=True, required=True, help="LABEL=FOLDER")
@click.option("--crop", "crops", multiple=True, required=True, help="STEM:TOP:LEFT:SIZE")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
def main(hr: Path, cols: tuple[str, ...], crops: tuple[str, ...], out: Path) -> None:
    columns = [(label, Path(folder)) for label, folder in (c.split("=", 1) for c in cols)]
    rows = []
    for spec in crops:
        stem, top, left, size = spec.split(":")
        box = (int(top), int(left), int(size))
        tiles = [_crop(_find(folder, stem), *box) for _, folder in columns]
        rows.append((stem, [*tiles, _crop(_find(hr, stem), *box)]))
    grid = compare_image(rows, [label for label, _ in columns] + ["HR"])
    if not cv2.imwrite(str(out), grid[:, :, ::-1]):
        raise click.UsageError(f"cannot write {out}")


if __name__ == "__main__":
    main()
