"""Licence-clean photographs that ship inside installed packages, for the bundled backbone and
the demo (nothing is downloaded).

scikit-image bundles a few photographs and textures in `skimage/data`; matplotlib bundles a
portrait in its sample data. Each entry records where it comes from and its licence, as the
packages document them. Gray images are written as RGB (three equal channels).

    python -m adaptsr.adapt.photos --out DIR     # writes every photo as DIR/NAME.png
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from adaptsr.core.errors import UserError
from adaptsr.core.images import Image, write_image
from adaptsr.core.lazy import lazy_import

# the packages that ship the photos: read only when a photo is
skimage_data = lazy_import("skimage.data")
matplotlib_cbook = lazy_import("matplotlib.cbook")
matplotlib_image = lazy_import("matplotlib.image")


@dataclass(frozen=True)
class Photo:
    name: str
    package: str  # the installed package that ships the file
    licence: str  # as the package documents it
    load: Callable[[], np.ndarray]  # (H, W, 3) or (H, W) uint8


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        return getattr(skimage_data, name)()

    return load


def _grace_hopper() -> np.ndarray:
    with matplotlib_cbook.get_sample_data("grace_hopper.jpg") as f:
        return np.asarray(matplotlib_image.imread(f, format="jpg"))


def _sk(name: str, licence: str) -> Photo:
    return Photo(name, "scikit-image", licence, _skimage(name))


PHOTOS: tuple[Photo, ...] = (
    _sk("astronaut", "public domain (NASA)"),
    _sk("camera", "CC0 (Lav Varshney)"),
    _sk("cell", "CC0"),
    _sk("chelsea", "CC0 (Stefan van der Walt)"),
    _sk("clock", "public domain (Stefan van der Walt)"),
    _sk("coffee", "CC0 (Rachel Michetti)"),
    _sk("coins", "no known copyright restrictions"),
    _sk("hubble_deep_field", "public domain (NASA)"),
    _sk("immunohistochemistry", "no known copyright restrictions"),
    _sk("moon", "no known copyright restrictions"),
    _sk("retina", "CC0 (Häggström, Wikimedia Commons)"),
    _sk("rocket", "public domain (SpaceX)"),
    _sk("brick", "CC0 (CC0Textures)"),
    _sk("grass", "CC0 (CC0Textures)"),
    _sk("gravel", "CC0 (CC0Textures)"),
    Photo("grace_hopper", "matplotlib", "public domain (US Navy)", _grace_hopper),
)
PHOTO_NAMES = tuple(p.name for p in PHOTOS)


def photo(name: str) -> np.ndarray:
    """One photo as (H, W, 3) uint8 RGB."""
    by_name = {p.name: p for p in PHOTOS}
    if name not in by_name:
        raise UserError(f"unknown bundled photo {name!r} (photos: {', '.join(PHOTO_NAMES)})")
    entry = by_name[name]
    try:
        rgb = entry.load()
    except ImportError as e:
        raise UserError(
            f"the bundled photo {name!r} ships with {entry.package}, which is not installed "
            f"(pip install {entry.package})"
        ) from e
    rgb = np.asarray(rgb)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[:, :, None], 3, axis=2)
    return np.ascontiguousarray(rgb[:, :, :3]).astype(np.uint8)


def write_photos(
    folder: str | os.PathLike, names: tuple[str, ...] | list[str] = PHOTO_NAMES, force=False
) -> list[Path]:
    """Write photos as FOLDER/NAME.png (8-bit RGB); returns their paths in `names` order."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        rgb = photo(name).astype(np.float32) / 255.0
        img = Image(rgb=rgb, alpha=None, bit_depth=8, gray=False)
        paths.append(write_image(img, folder / f"{name}.png", force=force))
    return paths


def _main(argv=None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m adaptsr.adapt.photos",
        description="Write the licence-clean photos that installed packages ship, as PNG.",
    )
    ap.add_argument("--out", required=True, help="folder to write NAME.png into")
    ap.add_argument("--force", action="store_true", help="replace existing files")
    ap.add_argument("--list", action="store_true", help="list the photos and their licences")
    args = ap.parse_args(argv)
    if args.list:
        for p in PHOTOS:
            print(f"{p.name:<22} {p.package:<13} {p.licence}")
        return
    for path in write_photos(args.out, force=args.force):
        print(path)


if __name__ == "__main__":
    _main()
