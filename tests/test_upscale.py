"""`adapt upscale` and serve.upscale (tiny EDSR, CPU): tiled inference of a real model, formats
and bit depths kept, bad input, the pixel limit, one row of tiles in memory."""

import sys

import cv2
import numpy as np
import pytest
import torch
from fakes.cli import one_line, only_line
from fakes.images import photo, png_declaring
from fakes.models import one_block_edsr, tiny_edsr

from adaptsr.adapt.backend import TorchBackend
from adaptsr.adapt.open import open_model
from adaptsr.core.images import Image, read_image
from adaptsr.core.tiling import tiled_upscale
from adaptsr.serve.backends import OnnxBackend
from adaptsr.serve.upscale import upscale_image

pytestmark = pytest.mark.usefixtures("one_thread")


def _seam_excess(out, ref):
    """Largest extra mean jump between neighbouring rows/columns of `out` versus `ref`, in
    8-bit levels: a seam is a line where the output jumps more than the untiled output."""

    def jumps(a, axis):
        return np.abs(np.diff(a, axis=axis)).mean(axis=(0, 3 - axis))

    return 255 * max((jumps(out, ax) - jumps(ref, ax)).max() for ax in (1, 2))


def test_tiled_matches_untiled_with_enough_overlap(edsr_artifacts):
    backend = TorchBackend(edsr_artifacts["model"], device="cpu")
    img = photo()
    untiled = tiled_upscale(backend.run, img, 2, backend.rule, tile=0)
    ref = edsr_artifacts["model"](torch.from_numpy(img)[None]).detach().numpy()[0]
    np.testing.assert_allclose(untiled, ref, atol=1e-5)
    # a quarter of the 32 px overlap is discarded per side: more than the receptive field
    tiled = tiled_upscale(backend.run, img, 2, backend.rule, tile=72, overlap=32, batch=4)
    assert np.abs(tiled - untiled).max() <= 1 / 255
    # the same check fails when the overlap is far below the receptive field
    short = tiled_upscale(backend.run, img, 2, backend.rule, tile=64, overlap=4, batch=4)
    assert np.abs(short - untiled).max() > 1 / 255


def test_no_seams_on_a_real_photo_even_with_short_overlap(edsr_artifacts):
    """Overlap (8 px, 2 discarded) below the receptive field (~8 px): tiles do differ from the
    untiled result, but the cross-fade leaves no visible line; a hard cut (overlap 0) does."""
    backend = TorchBackend(edsr_artifacts["model"], device="cpu")
    img = photo(128, 128)
    untiled = tiled_upscale(backend.run, img, 2, backend.rule, tile=0)
    blended = tiled_upscale(backend.run, img, 2, backend.rule, tile=64, overlap=8, batch=4)
    cut = tiled_upscale(backend.run, img, 2, backend.rule, tile=64, overlap=0, batch=4)
    assert np.abs(blended - untiled).max() > 1 / 255  # the tiles really are inexact here
    assert _seam_excess(blended, untiled) < 0.5
    assert _seam_excess(cut, untiled) > 2.0


def _write(path, array):
    import cv2

    assert cv2.imwrite(str(path), array)


@pytest.fixture
def image_folder(tmp_path):
    rng = np.random.default_rng(0)
    base = (photo(40, 48).transpose(1, 2, 0)[:, :, ::-1] * 255).round().astype(np.uint8)
    folder = tmp_path / "in"
    folder.mkdir()
    _write(folder / "rgb8.png", base)
    _write(folder / "photo.jpg", base)
    _write(folder / "lossless.webp", base)
    gray16 = (photo(40, 48)[1] * 65535).round().astype(np.uint16)
    _write(folder / "gray16.png", gray16)
    alpha = rng.integers(0, 256, size=base.shape[:2], dtype=np.uint8)
    _write(folder / "rgba.png", np.dstack([base, alpha]))
    return folder


def test_upscale_folder_keeps_formats_and_reports_a_bad_file(run_cli, edsr_artifacts, image_folder):
    import cv2

    (image_folder / "broken.png").write_bytes(b"not a png")
    out = image_folder.parent / "out"
    args = ["--model", edsr_artifacts["ckpt"], "--device", "cpu", "--tile", "32"]
    code, stdout, stderr = run_cli("upscale", image_folder, "--out", out, *args)
    assert code == 1
    assert "wrote 5 image(s)" in stdout
    assert "broken.png" in stderr and stderr.strip().splitlines()[-1].startswith("error: 1 of 6")
    expect = {
        "rgb8.png": (3, np.uint8),
        "photo.jpg": (3, np.uint8),
        "lossless.webp": (3, np.uint8),
        "gray16.png": (None, np.uint16),
        "rgba.png": (4, np.uint8),
    }
    for name, (channels, dtype) in expect.items():
        arr = cv2.imread(str(out / name), cv2.IMREAD_UNCHANGED)
        assert arr.dtype == dtype and arr.shape[:2] == (80, 96), name
        assert (arr.ndim == 2) if channels is None else arr.shape[2] == channels, name
    # colour went through the model (the same tiles as the library call), alpha bicubic
    backend = TorchBackend(edsr_artifacts["model"], "cpu")
    src = read_image(image_folder / "rgba.png")
    want = upscale_image(backend, src, tile=32)
    got = read_image(out / "rgba.png")
    assert np.abs(got.rgb - want.rgb).max() <= 1 / 255 + 1e-6
    bicubic = cv2.resize(src.alpha, (96, 80), interpolation=cv2.INTER_CUBIC).clip(0, 1)
    assert np.abs(got.alpha - bicubic).max() <= 1 / 255 + 1e-6
    g16 = read_image(out / "gray16.png")
    want16 = upscale_image(backend, read_image(image_folder / "gray16.png"), tile=32)
    assert g16.gray and np.abs(g16.rgb - want16.rgb.mean(axis=2, keepdims=True)).max() < 1e-4


def test_existing_outputs_are_skipped_without_force(run_cli, edsr_artifacts, image_folder):
    out = image_folder.parent / "out"
    out.mkdir()
    (out / "rgb8.png").write_bytes(b"keep me")
    args = [
        "upscale",
        image_folder / "rgb8.png",
        image_folder / "photo.jpg",
        "--out",
        out,
        "--onnx",
        edsr_artifacts["onnx"],
        "--provider",
        "cpu",
    ]
    code, stdout, stderr = run_cli(*args)
    assert code == 0 and "wrote 1 image(s)" in stdout
    assert "skipped 1 existing output" in stderr and "--force" in stderr
    assert (out / "rgb8.png").read_bytes() == b"keep me"
    code, stdout, _ = run_cli(*args, "--force")
    assert code == 0 and "wrote 2 image(s)" in stdout
    assert read_image(out / "rgb8.png").size == (80, 96)


def test_upscale_bad_input_is_one_clear_line(run_cli, edsr_artifacts, image_folder, monkeypatch):
    out = image_folder.parent / "out"
    img = image_folder / "rgb8.png"
    onnx = ["--onnx", edsr_artifacts["onnx"], "--provider", "cpu"]
    code, _, err = run_cli("upscale", image_folder / "nope.png", "--out", out, *onnx)
    only_line(code, err, "no such file or folder")
    code, _, err = run_cli("upscale", img, "--out", out, *onnx, "--tile", "4")
    only_line(code, err, "smaller than the model's minimum input 8")
    code, _, err = run_cli("upscale", img, "--out", out, *onnx, "--model", edsr_artifacts["ckpt"])
    only_line(code, err, "exactly one of --model, --onnx, --engine")
    code, _, err = run_cli("upscale", img, "--out", out, *onnx, "--adapter", "a.safetensors")
    only_line(code, err, "--adapter needs --model")
    code, _, err = run_cli("upscale", img, "--out", image_folder, *onnx, "--force")
    only_line(code, err, "is inside the input folder")
    code, _, err = run_cli("upscale", img, "--out", out, *onnx, "--overlap", "30", "--tile", "32")
    only_line(code, err, "less than half the tile")
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # as on a machine without TensorRT
    engine = image_folder / "x.engine"
    engine.write_bytes(b"serialized engine")
    code, _, err = run_cli("upscale", img, "--out", out, "--engine", engine)
    only_line(code, err, "TensorRT is not installed")
    assert not out.exists()


def test_upscale_with_adapter_matches_the_adapted_model(run_cli, edsr_artifacts, image_folder):
    from adaptsr.adapt.lora import inject_lora, save_adapter

    model = tiny_edsr()
    inject_lora(model, 4)
    with torch.no_grad():  # B starts at zero; make the adapter change the output
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    adapter = save_adapter(model, image_folder.parent / "a.safetensors")
    out = image_folder.parent / "out"
    code, _, err = run_cli(
        "upscale",
        image_folder / "rgb8.png",
        "--out",
        out,
        "--model",
        edsr_artifacts["ckpt"],
        "--adapter",
        adapter,
        "--device",
        "cpu",
    )
    assert code == 0, err
    src = read_image(image_folder / "rgb8.png")
    want = upscale_image(TorchBackend(model, "cpu"), src)
    base = upscale_image(TorchBackend(edsr_artifacts["model"], "cpu"), src)
    got = read_image(out / "rgb8.png")
    assert np.abs(got.rgb - want.rgb).max() <= 1 / 255 + 1e-6
    assert np.abs(got.rgb - base.rgb).max() > 2 / 255  # the adapter was applied
    # the same artifact as a bench spec
    backend = open_model(f"{edsr_artifacts['ckpt']}+{adapter}", device="cpu")
    x = src.rgb.transpose(2, 0, 1)[None].copy()
    np.testing.assert_allclose(backend.run(x), TorchBackend(model, "cpu").run(x), atol=1e-5)


def test_gray_with_alpha_round_trips(edsr_artifacts, tmp_path):
    from adaptsr.core.images import write_image

    rng = np.random.default_rng(3)
    g = rng.random((20, 24, 1), dtype=np.float32)
    img = Image(
        rgb=np.repeat(g, 3, axis=2),
        alpha=rng.random((20, 24), dtype=np.float32),
        bit_depth=16,
        gray=True,
    )
    up = upscale_image(OnnxBackend(edsr_artifacts["onnx"], provider="cpu"), img)
    assert up.rgb.shape == (40, 48, 3) and up.alpha.shape == (40, 48) and up.bit_depth == 16
    write_image(up, tmp_path / "ga.png")
    back = read_image(tmp_path / "ga.png")
    # PNG has no gray+alpha in OpenCV: it is stored as RGBA with equal colour planes
    assert back.bit_depth == 16 and back.alpha is not None and back.size == (40, 48)
    np.testing.assert_allclose(back.rgb[:, :, 0], back.rgb[:, :, 2], atol=1e-6)
    np.testing.assert_allclose(back.alpha, up.alpha, atol=1 / 65535)


def test_upscale_without_a_model_uses_the_bundled_backbone_and_its_adapters(tmp_path, run_cli):
    """`adapt upscale photo.png --out up/` runs adaptsr-safmn-x4; `--adapter A` alone is an
    adapter for it. Both compared with the library's own upscale of the same model."""
    import torch

    import adaptsr
    from adaptsr.core.images import Image, read_image, write_image
    from adaptsr.serve.upscale import upscale_image

    rgb = np.random.default_rng(3).random((20, 28, 3), dtype=np.float32)
    photo = tmp_path / "photo.png"
    write_image(Image(rgb=rgb, alpha=None, bit_depth=8, gray=False), photo)
    model = adaptsr.load_model("adaptsr-safmn-x4")
    adaptsr.inject_lora(model, 2)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(0))
    adapter = adaptsr.save_adapter(model, tmp_path / "adapter.safetensors")
    for args, name in (((), "base"), (("--adapter", adapter), "adapted")):
        code, out, err = run_cli(
            "upscale", photo, "--out", tmp_path / name, "--device", "cpu", *args
        )
        assert code == 0 and "x4, pytorch" in out, err
        got = read_image(tmp_path / name / "photo.png")
        backend = open_model("adaptsr-safmn-x4", adapter=args[1] if args else None, device="cpu")
        want = upscale_image(backend, read_image(photo))
        assert got.size == (80, 112)
        np.testing.assert_allclose(got.rgb, np.round(want.rgb * 255) / 255, atol=1 / 255 + 1e-6)
    base = read_image(tmp_path / "base" / "photo.png").rgb
    assert np.abs(read_image(tmp_path / "adapted" / "photo.png").rgb - base).max() > 2 / 255


@pytest.mark.usefixtures("default_pixel_limit")
def test_declared_huge_image_is_one_failed_file_not_an_abort(edsr_files, tmp_path, run_cli):
    """upscale of a folder: the bomb is reported and skipped, the others are written; the limit
    is a flag."""
    folder = tmp_path / "in"
    folder.mkdir()
    for p in edsr_files["images"].iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "bomb.png").write_bytes(png_declaring(100_000, 100_000))
    out = tmp_path / "out"
    code, _, err = run_cli("upscale", folder, "--out", out, "--model", edsr_files["ckpt"])
    line = one_line(code, err, "1 of 4 image(s) failed")
    assert "failed:" in err and "megapixels" in err and "--max-pixels" in err, (err, line)
    assert sorted(p.name for p in out.iterdir()) == ["0.png", "1.png", "2.png"]
    # a lower limit refuses the small ones too, one by one
    out2 = tmp_path / "out2"
    code, _, err = run_cli(
        "upscale",
        edsr_files["images"],
        "--out",
        out2,
        "--model",
        edsr_files["ckpt"],
        "--max-pixels",
        "100",
    )
    one_line(code, err, "3 of 3 image(s) failed")


@pytest.mark.usefixtures("default_pixel_limit")
def test_banded_upscale_equals_whole_image_and_holds_one_row_of_tiles(edsr_files, tmp_path):
    """upscale_file writes the pixels upscale_image computes (alpha included), while the
    float32 tile accumulator never exceeds one row of tiles."""
    from adaptsr.adapt.backend import TorchBackend
    from adaptsr.core import tiling
    from adaptsr.core.images import Image, encode_image, read_image
    from adaptsr.serve.upscale import upscale_file, upscale_image

    backend = TorchBackend(one_block_edsr(), device="cpu")
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
