"""Inference backends, `adapt upscale` and `adapt bench` (tiny EDSR, CPU)."""

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from adaptsr.adapt.backend import TorchBackend
from adaptsr.adapt.open import open_model
from adaptsr.core.images import Image, read_image
from adaptsr.core.tiling import tiled_upscale
from adaptsr.serve.backends import OnnxBackend
from adaptsr.serve.upscale import upscale_image

SERVE_MODULES = ["backends", "backend_bench", "bench_run", "engine_timing", "timing", "upscale"]


def tiny_edsr(seed=0):
    """EDSR x2 with 2 blocks of 16 features: receptive field ~8 input pixels."""
    from adaptsr.adapt.archs import build_small
    from adaptsr.adapt.models import model_from_state_dict

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_small("EDSR")
    return model_from_state_dict(model.state_dict(), name="tiny-edsr-x2")


def _export(model, path, static=None, metadata=None):
    import onnx

    shape = static or (20, 24)
    x = torch.rand(1, 3, *shape)
    dynamic = None if static else {"input": {0: "n", 2: "h", 3: "w"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (x,),
            str(path),
            input_names=["input"],
            output_names=["output"],
            dynamic_axes=dynamic,
            dynamo=False,
        )
    if metadata:
        proto = onnx.load(str(path))
        for key, value in metadata.items():
            proto.metadata_props.add(key=key, value=str(value))
        onnx.save(proto, str(path))
    return path


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """A tiny model as a checkpoint and as ONNX files (with/without metadata, static)."""
    from adaptsr.adapt.models import save_model

    root = tmp_path_factory.mktemp("artifacts")
    model = tiny_edsr()
    ckpt = save_model(model, root / "tiny.safetensors")
    return {
        "model": model,
        "ckpt": str(ckpt),
        "onnx": str(
            _export(
                model,
                root / "tiny.onnx",
                metadata={
                    "scale": 2,
                    "size_requirements": json.dumps({"min_size": 8, "multiple_of": 1}),
                },
            )
        ),
        "bare": str(_export(model, root / "bare.onnx")),
        "static": str(_export(model, root / "static.onnx", static=(32, 32))),
    }


def photo(h=96, w=128):
    """A crop of a real photograph (scikit-image's bundled astronaut), (3, H, W) in [0, 1]."""
    data = pytest.importorskip("skimage.data")
    return (
        data.astronaut()[100 : 100 + h, 150 : 150 + w].astype(np.float32).transpose(2, 0, 1) / 255
    )


def test_serve_imports_without_torch():
    """The deployment side (numpy, OpenCV, ONNX Runtime or TensorRT) must not need torch."""
    mods = [f"adaptsr.serve.{m}" for m in SERVE_MODULES]
    mods += ["adaptsr.core.images", "adaptsr.core.tiling", "adaptsr.core.artifacts"]
    mods += ["adaptsr.cli.commands.upscale", "adaptsr.cli.commands.bench"]
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in mods)
        + "heavy = ('torch', 'onnxruntime', 'tensorrt', 'spandrel')\n"
        + "heavy = [m for m in heavy if m in sys.modules]\n"
        + "assert not heavy, heavy\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# ---------------------------------------------------------------------------------------------
# tiled inference on a conv net


def test_tiled_matches_untiled_with_enough_overlap(artifacts):
    backend = TorchBackend(artifacts["model"], device="cpu")
    img = photo()
    untiled = tiled_upscale(backend.run, img, 2, backend.rule, tile=0)
    ref = artifacts["model"](torch.from_numpy(img)[None]).detach().numpy()[0]
    np.testing.assert_allclose(untiled, ref, atol=1e-5)
    # a quarter of the 32 px overlap is discarded per side: more than the receptive field
    tiled = tiled_upscale(backend.run, img, 2, backend.rule, tile=72, overlap=32, batch=4)
    assert np.abs(tiled - untiled).max() <= 1 / 255
    # the same check fails when the overlap is far below the receptive field
    short = tiled_upscale(backend.run, img, 2, backend.rule, tile=64, overlap=4, batch=4)
    assert np.abs(short - untiled).max() > 1 / 255


def _seam_excess(out, ref):
    """Largest extra mean jump between neighbouring rows/columns of `out` versus `ref`, in
    8-bit levels: a seam is a line where the output jumps more than the untiled output."""

    def jumps(a, axis):
        return np.abs(np.diff(a, axis=axis)).mean(axis=(0, 3 - axis))

    return 255 * max((jumps(out, ax) - jumps(ref, ax)).max() for ax in (1, 2))


def test_no_seams_on_a_real_photo_even_with_short_overlap(artifacts):
    """Overlap (8 px, 2 discarded) below the receptive field (~8 px): tiles do differ from the
    untiled result, but the cross-fade leaves no visible line; a hard cut (overlap 0) does."""
    backend = TorchBackend(artifacts["model"], device="cpu")
    img = photo(128, 128)
    untiled = tiled_upscale(backend.run, img, 2, backend.rule, tile=0)
    blended = tiled_upscale(backend.run, img, 2, backend.rule, tile=64, overlap=8, batch=4)
    cut = tiled_upscale(backend.run, img, 2, backend.rule, tile=64, overlap=0, batch=4)
    assert np.abs(blended - untiled).max() > 1 / 255  # the tiles really are inexact here
    assert _seam_excess(blended, untiled) < 0.5
    assert _seam_excess(cut, untiled) > 2.0


# ---------------------------------------------------------------------------------------------
# ONNX Runtime


def test_onnx_backend_reads_metadata_and_matches_pytorch(artifacts):
    onnx_backend = OnnxBackend(artifacts["onnx"], provider="cpu")
    assert onnx_backend.scale == 2 and onnx_backend.rule.min_size == 8
    assert onnx_backend.rule.static is None and onnx_backend.device == "cpu"
    img = photo(60, 70)
    ref = tiled_upscale(TorchBackend(artifacts["model"], "cpu").run, img, 2, onnx_backend.rule, 0)
    out = tiled_upscale(onnx_backend.run, img, 2, onnx_backend.rule, tile=48, overlap=20, batch=3)
    assert np.abs(out - ref).max() <= 1 / 255


def test_onnx_backend_infers_scale_and_static_shapes(artifacts):
    bare = OnnxBackend(artifacts["bare"], provider="cpu")
    assert bare.scale == 2 and bare.rule.min_size == 1  # from running a small input
    static = OnnxBackend(artifacts["static"], provider="cpu")
    assert static.rule.static == (32, 32) and static.fixed_batch == 1 and static.scale == 2
    img = photo(50, 70)
    out = tiled_upscale(static.run, img, 2, static.rule, tile=None, overlap=12, batch=4)
    ref = tiled_upscale(bare.run, img, 2, bare.rule, tile=0)
    assert out.shape == ref.shape == (3, 100, 140)
    assert np.abs(out - ref).mean() < 1 / 255


def test_open_model_types_by_suffix(artifacts, tmp_path):
    assert open_model(artifacts["onnx"], provider="cpu").kind == "onnx"
    assert open_model(artifacts["ckpt"], device="cpu").kind == "pytorch"
    from adaptsr.core.errors import UserError

    with pytest.raises(UserError, match="no such engine file"):
        open_model(str(tmp_path / "missing.engine"))


# ---------------------------------------------------------------------------------------------
# adapt upscale


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


def test_upscale_folder_keeps_formats_and_reports_a_bad_file(run_cli, artifacts, image_folder):
    import cv2

    (image_folder / "broken.png").write_bytes(b"not a png")
    out = image_folder.parent / "out"
    args = ["--model", artifacts["ckpt"], "--device", "cpu", "--tile", "32"]
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
    backend = TorchBackend(artifacts["model"], "cpu")
    src = read_image(image_folder / "rgba.png")
    want = upscale_image(backend, src, tile=32)
    got = read_image(out / "rgba.png")
    assert np.abs(got.rgb - want.rgb).max() <= 1 / 255 + 1e-6
    bicubic = cv2.resize(src.alpha, (96, 80), interpolation=cv2.INTER_CUBIC).clip(0, 1)
    assert np.abs(got.alpha - bicubic).max() <= 1 / 255 + 1e-6
    g16 = read_image(out / "gray16.png")
    want16 = upscale_image(backend, read_image(image_folder / "gray16.png"), tile=32)
    assert g16.gray and np.abs(g16.rgb - want16.rgb.mean(axis=2, keepdims=True)).max() < 1e-4


def test_existing_outputs_are_skipped_without_force(run_cli, artifacts, image_folder):
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
        artifacts["onnx"],
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


def _one_line_error(code, err, fragment):
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert fragment in lines[0], lines[0]


def test_upscale_bad_input_is_one_clear_line(run_cli, artifacts, image_folder, monkeypatch):
    out = image_folder.parent / "out"
    img = image_folder / "rgb8.png"
    onnx = ["--onnx", artifacts["onnx"], "--provider", "cpu"]
    code, _, err = run_cli("upscale", image_folder / "nope.png", "--out", out, *onnx)
    _one_line_error(code, err, "no such file or folder")
    code, _, err = run_cli("upscale", img, "--out", out, *onnx, "--tile", "4")
    _one_line_error(code, err, "smaller than the model's minimum input 8")
    code, _, err = run_cli("upscale", img, "--out", out, *onnx, "--model", artifacts["ckpt"])
    _one_line_error(code, err, "exactly one of --model, --onnx, --engine")
    code, _, err = run_cli("upscale", img, "--out", out, *onnx, "--adapter", "a.safetensors")
    _one_line_error(code, err, "--adapter needs --model")
    code, _, err = run_cli("upscale", img, "--out", image_folder, *onnx, "--force")
    _one_line_error(code, err, "is inside the input folder")
    code, _, err = run_cli("upscale", img, "--out", out, *onnx, "--overlap", "30", "--tile", "32")
    _one_line_error(code, err, "less than half the tile")
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # as on a machine without TensorRT
    engine = image_folder / "x.engine"
    engine.write_bytes(b"serialized engine")
    code, _, err = run_cli("upscale", img, "--out", out, "--engine", engine)
    _one_line_error(code, err, "TensorRT is not installed")
    assert not out.exists()


def test_upscale_with_adapter_matches_the_adapted_model(run_cli, artifacts, image_folder):
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
        artifacts["ckpt"],
        "--adapter",
        adapter,
        "--device",
        "cpu",
    )
    assert code == 0, err
    src = read_image(image_folder / "rgb8.png")
    want = upscale_image(TorchBackend(model, "cpu"), src)
    base = upscale_image(TorchBackend(artifacts["model"], "cpu"), src)
    got = read_image(out / "rgb8.png")
    assert np.abs(got.rgb - want.rgb).max() <= 1 / 255 + 1e-6
    assert np.abs(got.rgb - base.rgb).max() > 2 / 255  # the adapter was applied
    # the same artifact as a bench spec
    backend = open_model(f"{artifacts['ckpt']}+{adapter}", device="cpu")
    x = src.rgb.transpose(2, 0, 1)[None].copy()
    np.testing.assert_allclose(backend.run(x), TorchBackend(model, "cpu").run(x), atol=1e-5)


def test_gray_with_alpha_round_trips(artifacts, tmp_path):
    from adaptsr.core.images import write_image

    rng = np.random.default_rng(3)
    g = rng.random((20, 24, 1), dtype=np.float32)
    img = Image(
        rgb=np.repeat(g, 3, axis=2),
        alpha=rng.random((20, 24), dtype=np.float32),
        bit_depth=16,
        gray=True,
    )
    up = upscale_image(OnnxBackend(artifacts["onnx"], provider="cpu"), img)
    assert up.rgb.shape == (40, 48, 3) and up.alpha.shape == (40, 48) and up.bit_depth == 16
    write_image(up, tmp_path / "ga.png")
    back = read_image(tmp_path / "ga.png")
    # PNG has no gray+alpha in OpenCV: it is stored as RGBA with equal colour planes
    assert back.bit_depth == 16 and back.alpha is not None and back.size == (40, 48)
    np.testing.assert_allclose(back.rgb[:, :, 0], back.rgb[:, :, 2], atol=1e-6)
    np.testing.assert_allclose(back.alpha, up.alpha, atol=1 / 65535)


# ---------------------------------------------------------------------------------------------
# adapt bench


def test_bench_reports_latency_throughput_and_memory(run_cli, artifacts):
    code, out, err = run_cli(
        "bench",
        artifacts["ckpt"],
        artifacts["onnx"],
        "--size",
        "32",
        "48",
        "--runs",
        "3",
        "--warmup",
        "1",
        "--device",
        "cpu",
        "--provider",
        "cpu",
        "--json",
    )
    assert code == 0, err
    rows = json.loads(out)
    assert [r["kind"] for r in rows] == ["pytorch", "onnx"]
    for r in rows:
        lat = r["latency"]
        assert lat["runs"] == 3 and 0 < lat["median_ms"] <= lat["p90_ms"]
        assert r["out_mp_per_s"] == pytest.approx(32 * 48 * 4 / 1e6 / (lat["median_ms"] / 1e3))
        assert r["peak_rss_mb"] > 10 and r["peak_gpu_mb"] is None and r["tiles"] == 1
    code, out, err = run_cli(
        "bench",
        artifacts["onnx"],
        "--size",
        "64",
        "64",
        "--runs",
        "1",
        "--tile",
        "32",
        "--overlap",
        "4",
        "--provider",
        "cpu",
    )
    assert code == 0, err
    assert "median ms" in out and " 9 " in out  # 64 px in 32 px tiles with overlap: 3x3 tiles
    code, out, err = run_cli(
        "bench",
        artifacts["onnx"],
        "--size",
        "64",
        "64",
        "--runs",
        "6",
        "--tile",
        "32",
        "--vs-untiled",
        "--provider",
        "cpu",
        "--json",
    )
    assert code == 0, err
    eff = json.loads(out)[0]["tiling_efficiency"]
    assert eff["rounds"] == 6 and 0 < eff["ci_low"] <= eff["ratio"] <= eff["ci_high"]
    assert (
        "tiled/untiled throughput"
        in run_cli(
            "bench",
            artifacts["onnx"],
            "--size",
            "40",
            "40",
            "--runs",
            "6",
            "--tile",
            "32",
            "--vs-untiled",
            "--provider",
            "cpu",
        )[1]
    )


def test_bench_base_candidate_comparison(run_cli, artifacts, tmp_path):
    args = ("--size", "32", "32", "--rounds", "8", "--max-rounds", "8", "--warmup", "1")
    args += ("--provider", "cpu")
    code, out, err = run_cli(
        "bench", "--base", artifacts["onnx"], "--candidate", artifacts["bare"], *args, "--json"
    )
    d = json.loads(out)
    assert d["kind"] == "onnx" and d["rounds"] == 8 and d["tolerance"] == 0.02
    assert d["structure"]["identical"]  # the same graph; only the metadata differs
    assert d["ci_low"] <= d["ratio"] <= d["ci_high"]
    inside = d["ci_low"] >= 0.98 and d["ci_high"] <= 1.02
    outside = d["ci_high"] < 0.98 or d["ci_low"] > 1.02
    assert d["verdict"] == ("PASS" if inside else "FAIL" if outside else "INCONCLUSIVE")
    assert code == (0 if d["verdict"] == "PASS" else 1), err
    # a graph that differs (one residual block instead of two) fails whatever the timing says
    from adaptsr.adapt.edsr import EDSR
    from adaptsr.adapt.models import model_from_state_dict

    torch.manual_seed(0)
    one_block = EDSR(scale=2, n_resblocks=1, n_feats=16, res_scale=1.0)
    other = _export(model_from_state_dict(one_block.state_dict()), tmp_path / "other.onnx")
    code, out, _ = run_cli("bench", "--base", artifacts["bare"], "--candidate", other, *args)
    assert code == 1
    graph = next(line for line in out.splitlines() if line.startswith("graph, proven:"))
    assert graph.endswith(": FAIL") and "#" in graph, out
    assert any(line.startswith("latency, measured: ratio") for line in out.splitlines())


def test_bench_bad_input_is_one_clear_line(run_cli, artifacts):
    code, _, err = run_cli("bench", "--base", artifacts["ckpt"], "--candidate", artifacts["onnx"])
    _one_line_error(code, err, "same backend")
    code, _, err = run_cli("bench", "--base", artifacts["onnx"])
    _one_line_error(code, err, "--base and --candidate go together")
    code, _, err = run_cli("bench")
    _one_line_error(code, err, "nothing to benchmark")
    code, _, err = run_cli("bench", artifacts["onnx"], "--size", "4", "4", "--provider", "cpu")
    _one_line_error(code, err, "not accepted")
    code, _, err = run_cli("bench", "missing.onnx")
    _one_line_error(code, err, "no such ONNX file")
    code, _, err = run_cli("bench", "--base", artifacts["onnx"], "--candidate", artifacts["bare"],
                           "--rounds", "4", "--provider", "cpu")  # fmt: skip
    _one_line_error(code, err, "at least 6 rounds")


# ---------------------------------------------------------------------------------------------
# TensorRT (needs TensorRT and a CUDA GPU)


@pytest.mark.tensorrt
def test_tensorrt_engine_matches_onnx_runtime(artifacts, tmp_path):
    trt = pytest.importorskip("tensorrt")
    pytest.importorskip("cuda.bindings", reason="TensorRT engines run through cuda-python")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from adaptsr.serve.backends import TensorRTBackend

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    with open(artifacts["onnx"], "rb") as f:
        assert parser.parse(f.read())
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape("input", (1, 3, 16, 16), (2, 3, 32, 32), (4, 3, 64, 64))
    config.add_optimization_profile(profile)
    engine_path = tmp_path / "tiny.engine"
    engine_path.write_bytes(bytes(builder.build_serialized_network(network, config)))

    engine = TensorRTBackend(engine_path)
    assert engine.scale == 2 and engine.max_batch == 4 and engine.rule.max_size == (64, 64)
    onnx_backend = OnnxBackend(artifacts["onnx"], provider="cpu")
    img = photo(100, 90)
    ref = tiled_upscale(onnx_backend.run, img, 2, onnx_backend.rule, tile=0)
    out = tiled_upscale(engine.run, img, 2, engine.rule, tile=None, overlap=24, batch=6)
    assert np.abs(out - ref).max() <= 1 / 255
    assert engine.peak_memory_bytes() > 0


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
