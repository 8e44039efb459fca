"""Property-based fuzzing of every reader of user files (issue 29): images (random bytes, cut
headers, flipped bytes, absurd declared sizes), JSON and TOML settings, typed records, adapter
metadata, rank maps, engine sidecars, run logs and data records. Whatever the bytes, a reader
returns or raises UserError: never another exception. Bounded to run in well under a minute."""

import io
import json
import os
import struct
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image as PILImage
from safetensors.torch import save_file

from adaptsr.adapt.adapter_file import AdapterFile
from adaptsr.adapt.rankmap import read_rank_map
from adaptsr.adapt.train.callbacks import JsonlLog
from adaptsr.adapt.train.config import config_from_dict, read_config_file
from adaptsr.adapt.train.data_record import read_record
from adaptsr.cli.app import error_line
from adaptsr.core.artifacts import engine_info_path, read_engine_info
from adaptsr.core.contracts import AdapterMeta, EngineSidecar, ExportReport
from adaptsr.core.errors import UserError
from adaptsr.core.fileio import parse_json
from adaptsr.core.image_headers import probe
from adaptsr.core.images import check_output_sizes, read_image

FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
FOLDER = Path(tempfile.mkdtemp(prefix="adaptsr-fuzz-"))


@pytest.fixture(autouse=True)
def small_pixel_limit(monkeypatch):
    """Mutated headers may declare large pictures: keep each decode small and quick."""
    monkeypatch.setenv("ADAPTSR_MAX_PIXELS", str(2**18))


def _only_user_errors(call, *args):
    """The reader's result, or None for a UserError, whose `error:` line as the CLI prints it
    is one line of printable characters (the mutated bytes may reach the message)."""
    try:
        return call(*args)
    except UserError as e:
        line = error_line(e)
        assert line.isprintable() and line.splitlines() == [line], repr(line)
        return None


# -- images ----------------------------------------------------------------------------------


def _encoded() -> dict[str, bytes]:
    """One small file of each kind adaptsr reads, some with EXIF, frames or float samples."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (12, 9, 3), dtype=np.uint8)
    files = {}
    for suffix in (".png", ".jpg", ".webp", ".bmp", ".tif"):
        files[suffix] = cv2.imencode(suffix, rgb)[1].tobytes()
    files["16.png"] = cv2.imencode(".png", rgb.astype(np.uint16) * 257)[1].tobytes()
    files["a.png"] = cv2.imencode(".png", np.dstack([rgb, rgb[:, :, :1]]))[1].tobytes()
    exif = PILImage.Exif()
    exif[0x0112] = 6
    frames = [PILImage.fromarray(rgb), PILImage.fromarray(rgb[::-1])]
    for fmt, suffix in (("JPEG", "e.jpg"), ("PNG", "e.png"), ("WEBP", "e.webp")):
        out = io.BytesIO()
        frames[0].save(out, fmt, exif=exif)
        files[suffix] = out.getvalue()
    for fmt, suffix in (("PNG", "anim.png"), ("GIF", "anim.gif"), ("WEBP", "anim.webp")):
        out = io.BytesIO()
        frames[0].save(out, fmt, save_all=True, append_images=frames[1:])
        files[suffix] = out.getvalue()
    out = io.BytesIO()
    tifffile.imwrite(out, rgb.astype(np.float32) / 255, photometric="rgb")
    files["f.tif"] = out.getvalue()
    return files


ENCODED = _encoded()


def _png(width: int, height: int) -> bytes:
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + b"\0\0\0\0"

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"") + chunk(b"IEND", b"")


def _jpeg(width: int, height: int) -> bytes:
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + sof + b"\xff\xd9"


def _tiff(width: int, height: int) -> bytes:
    entries = [(256, 4, 1, width), (257, 4, 1, height), (274, 3, 1, 6), (339, 3, 1, 1)]
    body = struct.pack("<H", len(entries))
    body += b"".join(struct.pack("<HHII", *e) for e in entries) + struct.pack("<I", 8)  # a loop
    return b"II*\x00" + struct.pack("<I", 8) + body


def _webp(width: int, height: int) -> bytes:
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\x08\0\0\0"
    vp8x += (width - 1 & 0xFFFFFF).to_bytes(3, "little") + (height - 1 & 0xFFFFFF).to_bytes(
        3, "little"
    )
    return b"RIFF" + struct.pack("<I", 4 + len(vp8x)) + b"WEBP" + vp8x


sides = st.integers(0, 2**32 - 1)
declared = st.builds(
    lambda make, w, h: make(
        w % (1 << 16) if make is _jpeg else w, h % (1 << 16) if make is _jpeg else h
    ),
    st.sampled_from([_png, _jpeg, _tiff, _webp]),
    sides,
    sides,
)


@st.composite
def damaged(draw):
    """A valid file cut short, with bytes flipped, or both."""
    data = bytearray(ENCODED[draw(st.sampled_from(sorted(ENCODED)))])
    for _ in range(draw(st.integers(0, 6))):
        at = draw(st.integers(0, len(data) - 1))
        data[at] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(data)))
    return bytes(data[:cut] if draw(st.booleans()) else data)


image_bytes = st.one_of(st.binary(max_size=600), declared, damaged())


@FUZZ
@given(data=image_bytes, suffix=st.sampled_from([".png", ".jpg", ".webp", ".tif", ".bmp"]))
def test_image_reading_raises_only_user_errors(data, suffix):
    path = FOLDER / f"fuzz{suffix}"
    path.write_bytes(data)
    header = probe(path)  # never raises: a header or None
    assert header is None or header.frames >= 1 and 1 <= header.orientation <= 8
    assert probe(data) == header
    image = _only_user_errors(read_image, path)
    if image is not None:
        assert image.rgb.dtype == np.float32 and image.rgb.ndim == 3
        assert np.isfinite(image.rgb).all() and 0 <= image.rgb.min() <= image.rgb.max() <= 1
    _only_user_errors(check_output_sizes, [(path, FOLDER / "out.webp")], 4)


def test_every_valid_sample_reads_or_is_refused_for_its_reason():
    for name, data in ENCODED.items():
        path = FOLDER / f"sample-{name}"
        path.write_bytes(data)
        if name.startswith("anim"):
            with pytest.raises(UserError, match="has 2 frames"):
                read_image(path)
        elif name.startswith("f."):
            with pytest.raises(UserError, match="floating-point"):
                read_image(path)
        else:
            assert read_image(path).size in ((12, 9), (9, 12)), name


# -- JSON, TOML and the records read from them -----------------------------------------------

leaves = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
json_values = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=16,
)
text_bytes = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(str.encode),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.integers(1, 5000).map(lambda n: b"[" * n + b"]" * n),
)


@FUZZ
@given(data=text_bytes)
def test_parse_json_and_settings_files_raise_only_user_errors(data):
    _only_user_errors(parse_json, data, "fuzz.json")
    for suffix in (".json", ".toml"):
        path = FOLDER / f"config{suffix}"
        path.write_bytes(data)
        values = _only_user_errors(read_config_file, path)
        if values is not None:
            _only_user_errors(config_from_dict, values, str(path))


CONFIG_KEYS = ["iters", "lr", "patch", "batch", "seed", "rank", "alpha", "mode", "data", "val"]
CONFIG_KEYS += ["degradation", "precision", "workers", "allocation", "r_min", "budget"]


@FUZZ
@given(values=st.dictionaries(st.sampled_from(CONFIG_KEYS), json_values, max_size=5))
def test_train_settings_of_any_type_raise_only_user_errors(values):
    _only_user_errors(config_from_dict, {"model": "m.pth", **values}, "fuzz")


def _mutate(draw, record: dict) -> dict:
    """`record` with keys removed, replaced by any JSON value, or added."""
    record = dict(record)
    keys = sorted(record)
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["drop", "replace", "add"]))
        key = draw(st.sampled_from(keys)) if action != "add" else draw(st.text(max_size=6))
        if action == "drop":
            record.pop(key, None)
        else:
            record[key] = draw(json_values)
    return record


def _sidecar() -> EngineSidecar:
    from adaptsr.core.contracts import EngineProfile

    return EngineSidecar(
        engine="m.engine", onnx="m.onnx", onnx_sha256="", onnx_input=[1, 3, "height", "width"],
        tensorrt_version="10.3.0.26", gpu="GPU", compute_capability="8.7", precision="fp16",
        onnx_precision="fp16", route="strongly-typed", strongly_typed=True,
        fp32_constrained_layers=0, refittable=False,
        profile=EngineProfile("input", (1, 3, 16, 16), (1, 3, 64, 64), (1, 3, 128, 128)),
        adapter_fingerprint=None, base_fingerprint=None, build_seconds=1.5,
        built_at="2026-12-05T10:00:00+00:00", build_command="adapt export trt",
        metadata={"scale": "4"},
    )  # fmt: skip


def _report() -> ExportReport:
    from adaptsr.core.contracts import ExportShape, Parity, ParityCheck

    return ExportReport(
        onnx="m.onnx", architecture="EDSR",
        parity=Parity(
            "ort", 1e-4, 2e-6, 1e-7, [ParityCheck([16, 16], 1, "image", 2e-6, 1e-7)], True
        ),
        rewrites=[], fp16=None, zero_overhead=None, metadata={"scale": "2"},
        spec=ExportShape(False, False, [16, 16], 18, [16, 16], [[16, 16]]),
    )  # fmt: skip


ADAPTER_META = AdapterMeta({"body.0.conv": 4}, 4.0, "EDSR", 2, "ab" * 32, "0.1")
RECORDS = [
    (ExportReport, json.loads(json.dumps(_report().to_json()))),
    (EngineSidecar, json.loads(json.dumps(_sidecar().to_json()))),
    (AdapterMeta, ADAPTER_META.to_json()),
]


@FUZZ
@given(st.data())
def test_typed_records_raise_only_user_errors(data):
    cls, valid = data.draw(st.sampled_from(RECORDS))
    assert cls.from_json(valid, "valid.json") is not None
    record = _mutate(data.draw, valid)
    if cls is AdapterMeta and data.draw(st.booleans()):  # safetensors metadata: all strings
        record = {k: v if isinstance(v, str) else json.dumps(v) for k, v in record.items()}
    _only_user_errors(cls.from_json, record, "fuzz.json")
    _only_user_errors(cls.from_json, data.draw(json_values), "fuzz.json")


@FUZZ
@given(st.data())
def test_adapter_files_raise_only_user_errors(data):
    path = FOLDER / "fuzz.safetensors"
    if data.draw(st.booleans()):
        meta = _mutate(data.draw, ADAPTER_META.to_json())
        meta = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}
        tensors = {"body.0.conv.lora_A": torch.zeros(data.draw(st.integers(0, 3)), 2)}
        save_file(tensors, str(path), metadata=meta)
        if data.draw(st.booleans()):  # then damage the file itself
            raw = bytearray(path.read_bytes())
            at = data.draw(st.integers(0, len(raw) - 1))
            raw[at] = data.draw(st.integers(0, 255))
            path.write_bytes(bytes(raw[: data.draw(st.integers(0, len(raw)))]))
    else:
        path.write_bytes(data.draw(st.binary(max_size=400)))
    _only_user_errors(AdapterFile.read, path)


@FUZZ
@given(data=text_bytes)
def test_rank_maps_sidecars_logs_and_data_records_raise_only_user_errors(data):
    rank_map = FOLDER / "ranks.json"
    rank_map.write_bytes(data)
    _only_user_errors(read_rank_map, rank_map)
    engine = FOLDER / "m.engine"
    engine_info_path(engine).write_bytes(data)
    _only_user_errors(read_engine_info, engine)
    run = FOLDER / "run"
    run.mkdir(exist_ok=True)
    (run / "data.json").write_bytes(data)
    _only_user_errors(read_record, run)
    log = run / "log.jsonl"
    log.write_bytes(data + b"\n" + data)
    _only_user_errors(JsonlLog(log).trim, 10)


@FUZZ
@given(ranks=json_values)
def test_rank_map_tables_of_any_shape_raise_only_user_errors(ranks):
    path = FOLDER / "ranks.json"
    path.write_text(json.dumps({"ranks": ranks}))
    _only_user_errors(read_rank_map, path)


def teardown_module():
    for entry in FOLDER.rglob("*"):
        if entry.is_file():
            os.unlink(entry)
