"""Write the reference data the native runner's ctests compare against, from the Python code.

Run by ctest (`python write_fixtures.py OUT_DIR`) with the project's Python, so the native tiler,
blender and image I/O are always checked against the current Python implementation, never
against a stale copy. Formats (little-endian raw arrays, one text manifest per topic):

- tiling.txt: one line per case, `case NAME H W MIN MULT STATIC_H STATIC_W MAX_H MAX_W TILE
  OVERLAP SCALE BATCH` (`none` = None), then either `error MESSAGE` or `plan PH PW TH TW`, `ys ...`,
  `xs ...`, and `blend NAME.f32` (the tiled output of the toy model below, C x H*s x W*s).
  Blend weights: `wy.NAME.f32` and `wx.NAME.f32` hold every tile's weights one after another.
- images.txt: `read FILE.png H W BIT_DEPTH GRAY HAS_ALPHA` for files written by the Python side
  (and a few written here byte by byte: gray+alpha, palette, 1-bit gray), with FILE.rgb.f32 and
  FILE.alpha.f32 holding what `adaptsr.core.images.read_image` returns; `upscale FILE.png SCALE
  MIN MULT TILE OUT.png` for the whole upscale path (toy model, gray, bicubic alpha, bit depth),
  with OUT.png.rgb.f32 and OUT.png.alpha.f32 holding the result before it is encoded.
- m.engine.json: an engine sidecar as `adapt export trt` writes it (EngineSidecar.to_json, with
  a verification whose PSNR is infinite), and
  sidecar.txt what the native reader must find in it: `tensorrt_version V`, `compute_capability
  MAJOR MINOR`, `gpu NAME`, `precision P`, `scale S`, `min_size N`, `multiple_of M`,
  `version V`.
"""

from __future__ import annotations

import json
import math
import struct
import sys
import zlib
from pathlib import Path

import numpy as np

from adaptsr.core.contracts import EngineProfile, EngineSidecar, EngineVerify, VerifyCheck
from adaptsr.core.errors import UserError
from adaptsr.core.images import Image, read_image, write_image
from adaptsr.core.tiling import SizeRule, axis_weights, plan_tiles, tiled_upscale
from adaptsr.serve.upscale import upscale_image

# name, (height, width), rule, tile, overlap, scale, batch
TILING_CASES = [
    ("small_auto", (37, 53), SizeRule(), None, None, 2, 1),
    ("odd_tiles", (101, 67), SizeRule(), 32, 4, 2, 1),
    ("odd_default_overlap", (131, 77), SizeRule(), 64, None, 3, 2),
    ("multiple_of_8", (99, 45), SizeRule(min_size=16, multiple_of=8), 40, 6, 2, 3),
    ("multiple_of_16_shrunk", (77, 130), SizeRule(multiple_of=16), 50, 3, 2, 1),
    ("below_min_size", (5, 9), SizeRule(min_size=24, multiple_of=4), None, None, 2, 1),
    ("max_size_profile", (150, 210), SizeRule(min_size=8, max_size=(64, 96)), None, None, 1, 4),
    ("static_bigger_than_image", (5, 3), SizeRule(min_size=16, static=(16, 16)), None, None, 2, 1),
    ("static_tiles", (70, 45), SizeRule(min_size=24, static=(32, 24)), None, 5, 2, 2),
    ("static_tile_given", (70, 45), SizeRule(min_size=24, static=(32, 24)), 32, None, 1, 1),
    ("static_untiled_exact", (32, 24), SizeRule(min_size=24, static=(32, 24)), 0, None, 2, 1),
    ("no_overlap", (50, 50), SizeRule(), 16, 0, 1, 1),
    ("untiled", (23, 31), SizeRule(multiple_of=4), 0, None, 2, 1),
    ("tile_multiple_rounded", (90, 90), SizeRule(multiple_of=8), 37, 4, 1, 1),
    ("err_negative_tile", (40, 40), SizeRule(), -1, None, 2, 1),
    ("err_static_tile", (70, 45), SizeRule(static=(32, 24)), 24, None, 2, 1),
    ("err_below_min", (40, 40), SizeRule(min_size=16), 8, None, 2, 1),
    ("err_above_max", (40, 40), SizeRule(max_size=(64, 48)), 64, None, 2, 1),
    ("err_overlap_half", (40, 40), SizeRule(), 16, 8, 2, 1),
    ("err_overlap_negative", (40, 40), SizeRule(), 16, -2, 2, 1),
    ("static_untiled_padded", (30, 20), SizeRule(static=(32, 24)), 0, None, 2, 1),
    ("err_untiled_too_large", (80, 40), SizeRule(max_size=(64, 64)), 0, None, 2, 1),
    ("err_tile_under_multiple", (40, 40), SizeRule(multiple_of=4), 3, None, 2, 1),
]


def toy_image(channels: int, height: int, width: int) -> np.ndarray:
    """The same pixels the C++ test builds: an integer pattern, exact in float32."""
    c, y, x = np.mgrid[0:channels, 0:height, 0:width]
    return (((c * 7 + y * 13 + x * 29) % 101) / np.float32(100)).astype(np.float32)


def toy_model(scale: int):
    """Nearest-neighbour upscale plus a quarter of each tile's top-left pixel and an eighth of
    its bottom-right one: its output depends on where a tile starts and on the padded pixels a
    tile reaches, so wrong weights, offsets or padding change the result."""

    def run(batch: np.ndarray) -> np.ndarray:
        up = batch.repeat(scale, axis=2).repeat(scale, axis=3)
        corners = np.float32(0.25) * batch[:, :, :1, :1], np.float32(0.125) * batch[:, :, -1:, -1:]
        return (up + corners[0] + corners[1]).astype(np.float32)

    return run


def opt(value) -> str:
    return "none" if value is None else str(int(value))


def write_tiling(out: Path) -> None:
    lines = []
    for name, (h, w), rule, tile, overlap, scale, batch in TILING_CASES:
        static = rule.static or (None, None)
        max_size = rule.max_size or (None, None)
        fields = [name, h, w, rule.min_size, rule.multiple_of, *map(opt, static)]
        fields += [*map(opt, max_size), opt(tile), opt(overlap), scale, batch]
        lines.append("case " + " ".join(str(f) for f in fields))
        try:
            plan = plan_tiles(h, w, rule, tile, overlap)
        except UserError as e:
            lines.append(f"error {e}")
            continue
        (ph, pw), (th, tw) = plan.padded, plan.tile
        lines.append(f"plan {ph} {pw} {th} {tw}")
        lines.append("ys " + " ".join(map(str, plan.ys)))
        lines.append("xs " + " ".join(map(str, plan.xs)))
        np.concatenate(axis_weights(plan.ys, th, ph, scale)).tofile(out / f"wy.{name}.f32")
        np.concatenate(axis_weights(plan.xs, tw, pw, scale)).tofile(out / f"wx.{name}.f32")
        image = toy_image(3, h, w)
        result = tiled_upscale(toy_model(scale), image, scale, rule, tile, overlap, batch)
        np.ascontiguousarray(result, dtype=np.float32).tofile(out / f"blend.{name}.f32")
        lines.append(f"blend blend.{name}.f32")
    (out / "tiling.txt").write_text("\n".join(lines) + "\n")


def png_bytes(
    array: np.ndarray, color_type: int, depth: int | None = None, palette: bytes = b""
) -> bytes:
    """A PNG written directly, for modes OpenCV cannot write (gray+alpha, palette, 1-bit):
    (H, W, C) uint8/uint16 samples, packed when `depth` < 8."""
    h, w = array.shape[:2]
    depth = depth or (16 if array.dtype == np.uint16 else 8)
    if depth < 8:  # 1-bit samples only here
        packed = np.packbits(array.reshape(h, w).astype(np.uint8), axis=1)
        lines = [packed[i].tobytes() for i in range(h)]
    else:
        raw = array.astype(">u2" if depth == 16 else "u1").reshape(h, -1)
        lines = [raw[i].tobytes() for i in range(h)]
    rows = b"".join(b"\x00" + line for line in lines)

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + (chunk(b"PLTE", palette) if palette else b"")
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


class ToyBackend:
    """What upscale_image needs from a backend, with the toy model."""

    def __init__(self, scale: int, rule: SizeRule):
        self.scale, self.rule, self.run = scale, rule, toy_model(scale)


def write_images(out: Path) -> None:
    rng = np.random.default_rng(0)
    lines = []
    files = []
    for bits in (8, 16):
        for gray in (False, True):
            for alpha in (False, True):
                h, w = 13, 22
                rgb = rng.uniform(0, 1, size=(h, w, 3)).astype(np.float32)
                if gray:
                    rgb = np.repeat(rgb[:, :, :1], 3, axis=2)
                a = rng.uniform(0, 1, size=(h, w)).astype(np.float32) if alpha else None
                name = f"py_{bits}bit_{'gray' if gray else 'rgb'}{'_alpha' if alpha else ''}.png"
                # OpenCV writes gray+alpha as RGBA (read back as colour): as the Python side does
                write_image(Image(rgb=rgb, alpha=a, bit_depth=bits, gray=gray), out / name)
                files.append(name)
    for bits in (8, 16):  # gray+alpha PNGs (colour type 4), which OpenCV only reads
        top, dtype = (255, np.uint8) if bits == 8 else (65535, np.uint16)
        data = rng.integers(0, top + 1, size=(9, 11, 2)).astype(dtype)
        name = f"direct_{bits}bit_gray_alpha.png"
        (out / name).write_bytes(png_bytes(data, color_type=4))
        files.append(name)
    colours = rng.integers(0, 256, size=(16, 3)).astype(np.uint8).tobytes()
    indices = rng.integers(0, 16, size=(8, 10, 1)).astype(np.uint8)
    (out / "direct_palette.png").write_bytes(png_bytes(indices, color_type=3, palette=colours))
    bits = rng.integers(0, 2, size=(7, 13, 1)).astype(np.uint8)
    (out / "direct_1bit_gray.png").write_bytes(png_bytes(bits, color_type=0, depth=1))
    files += ["direct_palette.png", "direct_1bit_gray.png"]
    for name in files:
        image = read_image(out / name)
        h, w = image.size
        image.rgb.astype(np.float32).tofile(out / f"{name}.rgb.f32")
        has_alpha = image.alpha is not None
        if has_alpha:
            image.alpha.astype(np.float32).tofile(out / f"{name}.alpha.f32")
        lines.append(f"read {name} {h} {w} {image.bit_depth} {int(image.gray)} {int(has_alpha)}")
        for scale, rule, tile in ((2, SizeRule(multiple_of=4), 12), (3, SizeRule(), None)):
            result = upscale_image(ToyBackend(scale, rule), image, tile=tile)
            up_name = f"up{scale}.{name}"
            write_image(result, out / up_name)
            result.rgb.astype(np.float32).tofile(out / f"{up_name}.rgb.f32")
            if result.alpha is not None:
                result.alpha.astype(np.float32).tofile(out / f"{up_name}.alpha.f32")
            lines.append(
                f"upscale {name} {scale} {rule.min_size} {rule.multiple_of} {opt(tile)} {up_name}"
            )
    (out / "images.txt").write_text("\n".join(lines) + "\n")


def write_sidecar(out: Path) -> None:
    requirements = {"min_size": 24, "multiple_of": 8, "shape": "dynamic"}
    sidecar = EngineSidecar(
        engine="m.engine",
        onnx="m.onnx",
        onnx_sha256="0" * 64,
        onnx_input=["batch", 3, "height", "width"],
        tensorrt_version="10.13.0.35",
        gpu="NVIDIA Jetson AGX Orin",
        compute_capability="8.7",
        precision="fp16",
        onnx_precision="fp16",
        route="strongly-typed",
        strongly_typed=True,
        fp32_constrained_layers=0,
        refittable=True,
        profile=EngineProfile("input", (1, 3, 24, 24), (2, 3, 256, 256), (4, 3, 512, 512)),
        adapter_fingerprint="abc123",
        base_fingerprint="def456",
        build_seconds=12.5,
        built_at="2026-12-05T10:00:00+00:00",
        build_command="adapt export trt --onnx m.onnx --out m.engine --fp16",
        metadata={"scale": "3", "size_requirements": json.dumps(requirements)},
        # identical outputs have an infinite PSNR: the file must stay JSON the runner can read
        verify=EngineVerify(
            reference="m.onnx",
            runtime="onnxruntime CPUExecutionProvider, fp32",
            input="synthetic",
            threshold_db=40.0,
            min_psnr_db=math.inf,
            max_abs=0.0,
            checks=[VerifyCheck("min/opt/max", [1, 3, 24, 24], math.inf, 0.0, 0.0)],
            passed=True,
        ),
    )
    # as export/trt_sidecar.py writes it
    (out / "m.engine.json").write_text(json.dumps(sidecar.to_json(), indent=2) + "\n")
    major, minor = sidecar.compute_capability.split(".")
    lines = [
        f"tensorrt_version {sidecar.tensorrt_version}",
        f"compute_capability {major} {minor}",
        f"gpu {sidecar.gpu}",
        f"precision {sidecar.precision}",
        f"scale {sidecar.metadata['scale']}",
        f"min_size {requirements['min_size']}",
        f"multiple_of {requirements['multiple_of']}",
        f"version {sidecar.version}",
    ]
    (out / "sidecar.txt").write_text("\n".join(lines) + "\n")


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: write_fixtures.py OUT_DIR", file=sys.stderr)
        return 2
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():  # a rerun starts clean: no file from an older case list survives
        if old.is_file():
            old.unlink()
    write_tiling(out)
    write_images(out)
    write_sidecar(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
