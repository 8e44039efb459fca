"""Small training images: textured enough for a loss to move, small enough for 2 CPU cores."""

import struct
import zlib

import cv2
import numpy as np
import pytest


def write_textured_pngs(folder, count, rng):
    """`count` 48x48 PNGs (12x12 noise from `rng`, enlarged) as 000.png, 001.png, ... in
    `folder` (made if missing); returns `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        small = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / f"{i:03d}.png"), cv2.resize(small, (48, 48)))
    return folder


def write_noise_pngs(folder, count, height, width, name="{}.png", seed=0):
    """`count` height x width PNGs of uniform 8-bit noise from np.random.default_rng(seed),
    named name.format(0), name.format(1), ... in `folder` (made if missing); returns `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / name.format(i)), pixels)
    return folder


def png_declaring(width, height):
    """A tiny valid-looking PNG whose header declares width x height (no pixel data)."""

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"") + chunk(b"IEND", b"")


def photo(h=96, w=128):
    """A crop of a real photograph (scikit-image's bundled astronaut), (3, H, W) in [0, 1]."""
    data = pytest.importorskip("skimage.data")
    return (
        data.astronaut()[100 : 100 + h, 150 : 150 + w].astype(np.float32).transpose(2, 0, 1) / 255
    )
