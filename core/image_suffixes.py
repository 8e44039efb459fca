"""Which files are images, by suffix: what both the image reader (images) and the guard against
overwriting inputs (fileio.check_not_input) need, kept apart so that neither imports the other
for it."""

from __future__ import annotations

import os
from pathlib import Path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES
