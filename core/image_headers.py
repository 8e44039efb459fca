"""What an image file's header says, without decoding a pixel: its format, stored size, EXIF
orientation, frame count and whether its samples are floating point.

The reader (images.read_image) checks a file from this before decoding it (a 69-byte PNG may
declare 100000 x 100000; an animated PNG would lose all but its first frame), and the planners
learn the size an image has once it is turned upright (a portrait phone JPEG is stored
landscape with EXIF Orientation 6).
"""

from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass

MAX_WALK = 1_000_000  # chunks, segments or blocks visited at most: a hostile file ends the walk
TIFF_ORIENTATION, TIFF_SAMPLE_FORMAT, TIFF_SUBFILE = 274, 339, 254
SAMPLE_FLOAT = 3  # TIFF SampleFormat: IEEE floating point
REDUCED_RESOLUTION = 1  # NewSubfileType bit: a thumbnail page, not a frame


@dataclass(frozen=True)
class Header:
    kind: str  # "png", "jpeg", "webp", "tiff", "bmp", "gif"
    height: int  # as stored (before the orientation is applied)
    width: int
    orientation: int = 1  # EXIF Orientation, 1..8 (1: stored upright)
    frames: int = 1  # frames or pages (an animation, a multi-page TIFF)
    float_samples: bool = False  # TIFF SampleFormat 3 (HDR, negative values)

    @property
    def upright_size(self) -> tuple[int, int]:
        """(height, width) once the orientation is applied: 5 to 8 turn it a quarter."""
        if self.orientation in (5, 6, 7, 8):
            return self.width, self.height
        return self.height, self.width


def probe(source: str | os.PathLike | bytes | memoryview) -> Header | None:
    """The header of a file (a path) or of its bytes; None when the format is not one of
    PNG, JPEG, WebP, TIFF, BMP, GIF or its header is cut short or damaged. Orientation and
    frames that cannot be read are left at 1."""
    try:
        if isinstance(source, (bytes, bytearray, memoryview)):
            return _probe(io.BytesIO(source))
        with open(source, "rb") as f:
            return _probe(f)
    except (OSError, struct.error, ValueError, IndexError, OverflowError):
        return None


def image_header(path: str | os.PathLike) -> tuple[int, int] | None:
    """(height, width) as the file's header stores them; None when it cannot be read."""
    header = probe(path)
    return (header.height, header.width) if header else None


def upright_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """(height, width) of the picture as read_image returns it (orientation applied)."""
    header = probe(path)
    return header.upright_size if header else None


def _probe(f) -> Header | None:
    head = f.read(32)
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return _png(f, head)
    if head[:2] == b"\xff\xd8":
        return _jpeg(f)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return _webp(f, head)
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return _tiff(f, head)
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return _gif(f, head)
    if head[:2] == b"BM":
        return _bmp(head)
    return None


def _read(f, n: int) -> bytes:
    data = f.read(n)
    if len(data) < n:
        raise ValueError("cut short")
    return data


# -- EXIF ------------------------------------------------------------------------------------


def exif_orientation(blob: bytes) -> int:
    """Orientation (tag 274) from an EXIF block (a TIFF header and IFD0, optionally after
    `Exif\\0\\0`); 1 when absent or out of range."""
    if blob[:6] == b"Exif\x00\x00":
        blob = blob[6:]
    try:
        tags = _ifd_tags(io.BytesIO(blob), blob[:8])
    except (struct.error, ValueError):
        return 1
    value = tags.get(TIFF_ORIENTATION, 1)
    return value if 1 <= value <= 8 else 1


def _ifd_tags(f, head: bytes, offset: int | None = None) -> dict[int, int]:
    """The first value of each SHORT or LONG tag of one IFD (offset None: IFD0); key -1 holds
    the following IFD's offset (0: none)."""
    order = {b"II": "<", b"MM": ">"}.get(head[:2])
    if order is None or struct.unpack(order + "H", head[2:4])[0] != 42:
        raise ValueError("not a TIFF header")
    if offset is None:
        (offset,) = struct.unpack(order + "I", head[4:8])
    f.seek(offset)
    (count,) = struct.unpack(order + "H", _read(f, 2))
    tags: dict[int, int] = {}
    for _ in range(min(count, 4096)):
        entry = _read(f, 12)
        tag, kind, n = struct.unpack(order + "HHI", entry[:8])
        if kind in (3, 4) and n >= 1:  # SHORT or LONG
            fmt = order + ("H" if kind == 3 else "I")
            value = entry[8:12]
            if n * struct.calcsize(fmt) > 4:  # one per sample, kept elsewhere: read the first
                here = f.tell()
                f.seek(struct.unpack(order + "I", value)[0])
                value = _read(f, 4)
                f.seek(here)
            tags.setdefault(tag, struct.unpack(fmt, value[: struct.calcsize(fmt)])[0])
    f.seek(offset + 2 + 12 * count)
    tags[-1] = struct.unpack(order + "I", f.read(4).ljust(4, b"\x00"))[0]  # next IFD
    return tags


# -- formats ---------------------------------------------------------------------------------


def _png(f, head: bytes) -> Header | None:
    if head[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", head[16:24])
    orientation, frames = 1, 1
    f.seek(8)
    for _ in range(MAX_WALK):  # the chunks before the pixels: acTL and eXIf belong there
        top = f.read(8)
        if len(top) < 8 or top[4:] in (b"IDAT", b"IEND"):
            break
        (length,) = struct.unpack(">I", top[:4])
        if top[4:] == b"acTL" and length >= 8:
            frames = max(1, struct.unpack(">I", _read(f, 4))[0])
            f.seek(length, 1)  # the rest of its data and the CRC
        elif top[4:] == b"eXIf" and length <= 1 << 24:
            orientation = exif_orientation(_read(f, length))
            f.seek(4, 1)
        else:
            f.seek(length + 4, 1)  # data and CRC
    return Header("png", height, width, orientation, frames)


def _jpeg(f) -> Header | None:
    f.seek(2)
    orientation = 1
    for _ in range(MAX_WALK):
        if f.read(1) != b"\xff":
            return None
        byte = f.read(1)
        while byte == b"\xff":  # fill bytes before a marker
            byte = f.read(1)
        if not byte:
            return None
        marker = byte[0]
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            continue
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no frame header came
            return None
        (n,) = struct.unpack(">H", _read(f, 2))
        if n < 2:
            return None
        # start of frame: baseline, progressive, lossless... (not DHT C4, JPG C8, DAC CC)
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", _read(f, 5)[1:5])
            return Header("jpeg", height, width, orientation)
        if marker == 0xE1 and orientation == 1:  # APP1: EXIF (or XMP)
            body = f.read(n - 2)
            if body[:6] == b"Exif\x00\x00":
                orientation = exif_orientation(body)
            continue
        f.seek(n - 2, 1)
    return None


def _webp(f, head: bytes) -> Header | None:
    if len(head) < 30:
        return None
    kind = head[12:16]
    if kind == b"VP8X":
        width = 1 + int.from_bytes(head[24:27], "little")
        height = 1 + int.from_bytes(head[27:30], "little")
    elif kind == b"VP8L" and head[20] == 0x2F:
        bits = int.from_bytes(head[21:25], "little")
        height, width = 1 + ((bits >> 14) & 0x3FFF), 1 + (bits & 0x3FFF)
    elif kind == b"VP8 ":
        w, h = struct.unpack("<HH", head[26:30])
        height, width = h & 0x3FFF, w & 0x3FFF
    else:
        return None
    orientation, frames = 1, 0
    f.seek(12)
    for _ in range(MAX_WALK):
        top = f.read(8)
        if len(top) < 8:
            break
        (size,) = struct.unpack("<I", top[4:])
        if top[:4] == b"EXIF" and size <= 1 << 24:
            orientation = exif_orientation(_read(f, size))
            f.seek(size % 2, 1)
            continue
        frames += top[:4] == b"ANMF"
        f.seek(size + size % 2, 1)  # chunks are padded to an even size
    return Header("webp", height, width, orientation, max(frames, 1))


def _tiff(f, head: bytes) -> Header | None:
    tags = _ifd_tags(f, head)
    if 256 not in tags or 257 not in tags:
        return None
    orientation = tags.get(TIFF_ORIENTATION, 1)
    floats = tags.get(TIFF_SAMPLE_FORMAT) == SAMPLE_FLOAT
    frames, seen, offset = 1, set(), tags[-1]
    while offset and offset not in seen and len(seen) < MAX_WALK:  # the chain of pages
        seen.add(offset)
        try:
            page = _ifd_tags(f, head, offset)
        except (struct.error, ValueError):
            break
        frames += not page.get(TIFF_SUBFILE, 0) & REDUCED_RESOLUTION  # thumbnails are no frame
        offset = page[-1]
    orientation = orientation if 1 <= orientation <= 8 else 1
    return Header("tiff", tags[257], tags[256], orientation, frames, floats)


def _gif(f, head: bytes) -> Header | None:
    width, height = struct.unpack("<HH", head[6:10])
    flags = head[10]
    f.seek(13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 13))  # global colour table
    frames = 0
    for _ in range(MAX_WALK):
        block = f.read(1)
        if block == b"\x2c":  # an image: its descriptor, colour table, then its data
            frames += 1
            local = _read(f, 9)[8]
            f.seek((3 << ((local & 7) + 1) if local & 0x80 else 0) + 1, 1)
        elif block == b"\x21":  # an extension: its label, then its data
            f.seek(1, 1)
        else:  # the trailer, or the end of a damaged file
            break
        _skip_sub_blocks(f)
    return Header("gif", height, width, 1, max(frames, 1))


def _skip_sub_blocks(f) -> None:
    for _ in range(MAX_WALK):
        size = f.read(1)
        if not size or size == b"\x00":
            return
        f.seek(size[0], 1)


def _bmp(head: bytes) -> Header | None:
    if len(head) < 26:
        return None
    (info,) = struct.unpack("<I", head[14:18])
    if info == 12:  # OS/2 BITMAPCOREHEADER
        width, height = struct.unpack("<HH", head[18:22])
    else:
        width, height = struct.unpack("<ii", head[18:26])
    return Header("bmp", abs(height), abs(width))
