"""Hostile inputs and interrupted runs: nothing crashes, nothing is lost, nothing is overwritten.

Each test covers one class of failure (docs/reliability.md lists them with these test names).
"""

import json
import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from adaptsr.errors import UserError

MAX_PIXELS_ENV = "ADAPTSR_MAX_PIXELS"  # adaptsr.images.MAX_PIXELS_ENV


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv(MAX_PIXELS_ENV, str(2**26))  # --max-pixels in one test leaks no further
    yield
    torch.set_num_threads(previous)


def _one_line(code, err, *words):
    assert code != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: "), err
    assert "Traceback" not in err and "internal error" not in err, err
    for word in words:
        assert word in lines[-1], lines[-1]
    return lines[-1]


def tiny_edsr(seed=0):
    from adaptsr.adapt.edsr import EDSR
    from adaptsr.adapt.models import model_from_state_dict

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = EDSR(scale=2, n_resblocks=1, n_feats=8, res_scale=1.0)
    return model_from_state_dict(model.state_dict(), name="tiny-edsr-x2")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny EDSR x2 checkpoint, an adapter for it, and a folder of three small PNGs."""
    from adaptsr.adapt.lora import inject_lora, save_adapter
    from adaptsr.adapt.models import save_model

    root = tmp_path_factory.mktemp("reliability")
    model = tiny_edsr()
    ckpt = save_model(model, root / "tiny.safetensors")
    adapted = inject_lora(tiny_edsr(), 2)
    with torch.no_grad():
        for name, p in adapted.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.01)
    adapter = save_adapter(adapted, root / "adapter.safetensors")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(images / f"{i}.png"), rng.integers(0, 256, (20, 24, 3), dtype=np.uint8))
    return {"root": root, "ckpt": str(ckpt), "adapter": str(adapter), "images": images}


def png_declaring(width, height):
    """A tiny valid-looking PNG whose header declares width x height (no pixel data)."""

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"") + chunk(b"IEND", b"")


# ---------------------------------------------------------------------------------------------
# images: headers first, a pixel limit, bounded memory


def test_image_header_is_read_without_decoding(tmp_path):
    from adaptsr.images import image_header

    rng = np.random.default_rng(1)
    for suffix in (".png", ".jpg", ".webp", ".bmp", ".tif"):
        for h, w, c in ((37, 53, 3), (5, 300, 1), (64, 9, 4)):
            if suffix == ".jpg" and c == 4:
                continue
            path = tmp_path / f"x{suffix}"
            cv2.imwrite(str(path), rng.integers(0, 256, (h, w, c), dtype=np.uint8))
            assert image_header(path) == (h, w), (suffix, c)
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_declaring(100_000, 100_000))
    assert len(bomb.read_bytes()) < 80 and image_header(bomb) == (100_000, 100_000)
    (tmp_path / "junk.png").write_bytes(b"\x89PNG")
    assert image_header(tmp_path / "junk.png") is None


def test_declared_huge_image_is_one_failed_file_not_an_abort(files, tmp_path, run_cli):
    """upscale of a folder: the bomb is reported and skipped, the others are written; the limit
    is a flag."""
    folder = tmp_path / "in"
    folder.mkdir()
    for p in files["images"].iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "bomb.png").write_bytes(png_declaring(100_000, 100_000))
    out = tmp_path / "out"
    code, _, err = run_cli("upscale", folder, "--out", out, "--model", files["ckpt"])
    line = _one_line(code, err, "1 of 4 image(s) failed")
    assert "failed:" in err and "megapixels" in err and "--max-pixels" in err, (err, line)
    assert sorted(p.name for p in out.iterdir()) == ["0.png", "1.png", "2.png"]
    # a lower limit refuses the small ones too, one by one
    out2 = tmp_path / "out2"
    code, _, err = run_cli(
        "upscale", files["images"], "--out", out2, "--model", files["ckpt"], "--max-pixels", "100"
    )
    _one_line(code, err, "3 of 3 image(s) failed")


def test_declared_huge_image_is_skipped_by_train_allocate_and_eval(files, tmp_path, run_cli):
    from adaptsr.adapt import data

    folder = tmp_path / "hr"
    folder.mkdir()
    rng = np.random.default_rng(2)
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.png"), rng.integers(0, 256, (48, 48, 3), dtype=np.uint8))
    (folder / "bomb.png").write_bytes(png_declaring(100_000, 100_000))
    found = data.scan([folder], scale=2, patch=16)
    assert [p.name for p in found.corrupt] == ["bomb.png"] and len(found.entries) == 3
    with pytest.raises(UserError, match="bomb.png"):
        data.scan([folder], scale=2, patch=16, strict=True)
    # eval (non-strict): the bomb is skipped with its reason
    report = tmp_path / "r.json"
    code, out, err = run_cli(
        "eval", "--model", files["ckpt"], "--hr", folder, "--degradation", "bicubic",
        "--report", report, "--no-perceptual", "--quiet",
    )  # fmt: skip
    assert code == 0, err
    skipped = json.loads(report.read_text())["skipped"]
    assert [s["name"] for s in skipped] == ["bomb"] and "megapixels" in skipped[0]["reason"]


def test_banded_upscale_equals_whole_image_and_holds_one_row_of_tiles(files, tmp_path):
    """upscale_file writes the pixels upscale_image computes (alpha included), while the
    float32 tile accumulator never exceeds one row of tiles."""
    from adaptsr import tiling
    from adaptsr.adapt.backend import TorchBackend
    from adaptsr.images import Image, encode_image, read_image
    from adaptsr.serve.upscale import upscale_file, upscale_image

    backend = TorchBackend(tiny_edsr(), device="cpu")
    rng = np.random.default_rng(3)
    rgba = rng.integers(0, 65536, (70, 45, 4), dtype=np.uint16)
    src = tmp_path / "in.png"
    cv2.imwrite(str(src), rgba)
    dst = upscale_file(backend, src, tmp_path / "out.png", tile=16, overlap=2)
    whole = upscale_image(backend, read_image(src), tile=16, overlap=2)
    expected = cv2.imdecode(np.frombuffer(encode_image(whole, ".png"), np.uint8), -1)
    assert np.array_equal(cv2.imread(str(dst), cv2.IMREAD_UNCHANGED), expected)

    sizes = []
    bands = tiling.tiled_upscale_bands
    image = read_image(src).rgb.transpose(2, 0, 1).copy()
    tops = []
    for top, band in bands(backend.run, image, 2, backend.rule, tile=16, overlap=2):
        tops.append(top)
        sizes.append(band.shape[1])
    assert tops == list(np.cumsum([0, *sizes[:-1]]))
    plan = tiling.plan_tiles(70, 45, backend.rule, 16, 2)
    assert len(sizes) == len(plan.ys) and max(sizes) <= plan.tile[0] * 2 and sum(sizes) == 140
    assert isinstance(whole, Image)


# ---------------------------------------------------------------------------------------------
# outputs never replace inputs, whatever --force says


def _tree(folder):
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_an_output_that_is_an_input_is_refused_even_with_force(files, tmp_path, run_cli):
    hr = tmp_path / "hr"
    hr.mkdir()
    rng = np.random.default_rng(4)
    for i in range(2):
        cv2.imwrite(str(hr / f"{i}.png"), rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    before = _tree(tmp_path)
    ev = ("eval", "--model", files["ckpt"], "--hr", hr, "--degradation", "bicubic",
          "--no-perceptual", "--quiet", "--force")  # fmt: skip
    for extra in (
        ("--save", hr),
        ("--report", hr / "0.png"),
        ("--csv", hr / "1.png"),
        ("--compare", hr / "0.png"),
    ):
        code, _, err = run_cli(*ev, *extra)
        _one_line(code, err, extra[0], "input")
    ckpt, adapter = files["ckpt"], files["adapter"]
    for args in (
        ("merge", "--model", ckpt, "--adapter", adapter, "--out", ckpt, "--force"),
        ("merge", "--model", ckpt, "--adapter", adapter, "--out", adapter, "--force"),
        ("export", "onnx", "--model", ckpt, "--out", ckpt, "--force"),
        ("allocate", "--model", ckpt, "--data", hr, "--budget", "r2", "--out", hr / "0.json",
         "--force"),
        ("upscale", hr / "0.png", "--out", hr, "--model", ckpt, "--force"),
    ):  # fmt: skip
        code, _, err = run_cli(*args)
        _one_line(code, err, "input")
    assert _tree(tmp_path) == before


def test_a_run_folder_holding_the_input_model_is_refused(files, tmp_path, run_cli):
    run = tmp_path / "run"
    run.mkdir()
    model = run / "model.safetensors"
    model.write_bytes(Path(files["ckpt"]).read_bytes())
    before = _tree(tmp_path)
    code, _, err = run_cli(
        "train", "--model", model, "--data", files["images"], "--out", run, "--force",
        "--iters", "1", "--patch", "16", "--batch", "1", "--device", "cpu", "--workers", "0",
    )  # fmt: skip
    _one_line(code, err, "input")
    assert _tree(tmp_path) == before


# ---------------------------------------------------------------------------------------------
# interrupted and failed writes


def test_outputs_follow_the_umask_safetensors_included(files, tmp_path, run_cli):
    old = os.umask(0o022)
    try:
        out = tmp_path / "merged.safetensors"
        code, _, err = run_cli(
            "merge", "--model", files["ckpt"], "--adapter", files["adapter"], "--out", out
        )
        assert code == 0, err
        assert (out.stat().st_mode & 0o777) == 0o644
        from adaptsr.adapt.lora import inject_lora, save_adapter

        path = save_adapter(inject_lora(tiny_edsr(), 1), tmp_path / "a.safetensors")
        assert (path.stat().st_mode & 0o777) == 0o644
    finally:
        os.umask(old)


def test_a_full_disk_is_a_user_error_and_leaves_nothing(files, tmp_path, run_cli, monkeypatch):
    """The writer fails as safetensors does on ENOSPC; the partial file is removed."""
    import safetensors.torch
    from safetensors import SafetensorError

    def full(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\0" * 1000)
        raise SafetensorError(
            'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No '
            'space left on device" })'
        )

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    out = tmp_path / "merged.safetensors"
    code, _, err = run_cli(
        "merge", "--model", files["ckpt"], "--adapter", files["adapter"], "--out", out
    )
    _one_line(code, err, "disk is full")
    assert list(tmp_path.iterdir()) == []


def test_partial_files_are_named_for_their_output_and_swept_by_the_next_write(tmp_path):
    """A killed writer's temporary file is `.NAME.partial-PID-...`; the next write of NAME
    removes it (its process is gone), and leaves a live process's one alone."""
    import subprocess
    import sys

    from adaptsr.fileio import atomic_output

    target = tmp_path / "out.png"
    code = (
        "import os, sys\n"
        "from adaptsr.fileio import atomic_output\n"
        "with atomic_output(sys.argv[1]) as tmp:\n"
        "    tmp.write_bytes(b'half')\n"
        "    os._exit(9)\n"  # killed in the middle of the write
    )
    subprocess.run([sys.executable, "-c", code, str(target)], check=False)
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(".out.png.partial-") and left[0].endswith(".png")
    live = tmp_path / f".out.png.partial-{os.getppid()}-x.png"  # a running process's write
    live.write_bytes(b"busy")
    with atomic_output(target) as tmp:
        tmp.write_bytes(b"done")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, "out.png"])
    assert target.read_bytes() == b"done"
