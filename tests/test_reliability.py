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

from adaptsr.core.errors import UserError

MAX_PIXELS_ENV = "ADAPTSR_MAX_PIXELS"  # adaptsr.core.images.MAX_PIXELS_ENV


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
    from adaptsr.core.images import image_header

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
    from adaptsr.adapt.backend import TorchBackend
    from adaptsr.core import tiling
    from adaptsr.core.images import Image, encode_image, read_image
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

    from adaptsr.core.fileio import atomic_output

    target = tmp_path / "out.png"
    code = (
        "import os, sys\n"
        "from adaptsr.core.fileio import atomic_output\n"
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


# ---------------------------------------------------------------------------------------------
# non-finite adapters and merged weights


def _rewrite_adapter(src, dst, change_tensor=None, alpha=None):
    from safetensors.torch import load_file, save_file

    from adaptsr.adapt.lora import read_adapter

    _, meta = read_adapter(src)
    meta = {k: v for k, v in meta.items() if k != "ranks_parsed"}
    tensors = load_file(src)
    if change_tensor:
        tensors = {k: change_tensor(k, v) for k, v in tensors.items()}
    if alpha is not None:
        meta["alpha"] = alpha
    save_file(tensors, str(dst), metadata=meta)
    return dst


def test_non_finite_adapters_and_merges_are_refused(files, tmp_path, run_cli):
    from adaptsr.adapt.lora import inject_lora, merge_lora

    first = [True]

    def one_nan(key, t):
        if first[0] and "lora_A" in key:
            first[0] = False
            t = t.clone()
            t.view(-1)[0] = float("nan")
        return t

    nan = _rewrite_adapter(files["adapter"], tmp_path / "nan.safetensors", one_nan)
    inf = _rewrite_adapter(files["adapter"], tmp_path / "inf.safetensors", alpha="inf")
    huge = _rewrite_adapter(  # finite tensors whose product overflows fp32
        files["adapter"], tmp_path / "huge.safetensors", lambda k, t: torch.full_like(t, 3e30)
    )
    for adapter, words in ((nan, "NaN"), (inf, "alpha"), (huge, "NaN or infinite")):
        out = tmp_path / "merged.safetensors"
        code, _, err = run_cli(
            "merge", "--model", files["ckpt"], "--adapter", adapter, "--out", out
        )
        _one_line(code, err, words)
        assert not out.exists()
        if adapter is not huge:
            code, _, err = run_cli(
                "upscale", files["images"], "--out", tmp_path / "up", "--model", files["ckpt"],
                "--adapter", adapter,
            )  # fmt: skip
            _one_line(code, err)
            assert not (tmp_path / "up").exists()
            code, _, err = run_cli(
                "eval", "--model", files["ckpt"], "--adapter", adapter, "--hr", files["images"],
                "--degradation", "bicubic", "--no-perceptual", "--quiet",
            )  # fmt: skip
            _one_line(code, err)
    with pytest.raises(UserError, match="positive finite"):
        inject_lora(tiny_edsr(), 2, alpha=float("inf"))
    model = inject_lora(tiny_edsr(), 2)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora" in name:
                p.fill_(3e30)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(UserError, match="NaN or infinite"):
        merge_lora(model)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # nothing merged


# ---------------------------------------------------------------------------------------------
# checkpoints that are not what they claim


def test_random_bytes_in_a_pth_are_described_and_no_unsafe_advice_given(tmp_path, run_cli):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    cases = {
        "random.pth": (np.random.default_rng(5).bytes(4000), "unrecognised data"),
        "empty.pth": (b"", "empty file"),
        "evil.pth": (pickle.dumps({"x": Evil()}), "builtins.print"),
        "half.pth": (b"\x80\x02" + np.random.default_rng(6).bytes(100), "pickle"),
    }
    for name, (data, words) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        code, _, err = run_cli(
            "merge", "--model", path, "--adapter", path, "--out", tmp_path / "m.pth"
        )
        line = _one_line(code, err, words)
        assert "weights_only" not in line and "will likely succeed" not in line


# ---------------------------------------------------------------------------------------------
# training runs: identity, one at a time, failed starts, SIGTERM


@pytest.fixture(scope="module")
def train_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    hr = root / "hr"
    hr.mkdir()
    rng = np.random.default_rng(7)
    for i in range(4):
        small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        cv2.imwrite(str(hr / f"{i}.png"), cv2.resize(small, (32, 32)))
    return root, hr


def _train_args(files, hr, out, *more):
    return (
        "train", "--model", files["ckpt"], "--data", hr, "--out", out, "--iters", "2",
        "--patch", "16", "--batch", "1", "--device", "cpu", "--workers", "0",
        "--degradation", "bicubic", "--save-every", "1", "--quiet", *more,
    )  # fmt: skip


def test_resume_refuses_a_checkpoint_of_another_run_or_shape(files, train_setup, tmp_path, run_cli):
    _, hr = train_setup
    a, b = tmp_path / "a", tmp_path / "b"
    for run in (a, b):
        code, _, err = run_cli(*_train_args(files, hr, run, "--iters", "1"))
        assert code == 0, err
        cfg = json.loads((run / "config.json").read_text())
        cfg["iters"] = 3
        (run / "config.json").write_text(json.dumps(cfg))
    assert (
        json.loads((a / "config.json").read_text())["run_id"]
        != json.loads((b / "config.json").read_text())["run_id"]
    )
    original = (b / "checkpoint.pt").read_bytes()
    (b / "checkpoint.pt").write_bytes((a / "checkpoint.pt").read_bytes())  # same shapes
    code, _, err = run_cli("train", "--out", b, "--resume", "--quiet")
    _one_line(code, err, "another run")
    # a 1-element optimizer moment that Adam would broadcast over a LoRA matrix
    state = torch.load(b / "checkpoint.pt", weights_only=True)
    state = torch.load(a / "checkpoint.pt", weights_only=True)
    first = next(iter(state["optimizer"]["state"]))
    state["optimizer"]["state"][first]["exp_avg"] = torch.zeros(1)
    torch.save(state, a / "checkpoint.pt")
    code, _, err = run_cli("train", "--out", a, "--resume", "--quiet")
    _one_line(code, err, "exp_avg")
    (b / "checkpoint.pt").write_bytes(original)
    code, _, err = run_cli("train", "--out", b, "--resume", "--quiet")
    assert code == 0, err


def test_a_second_run_into_one_folder_is_refused_while_the_first_lives(
    files, train_setup, tmp_path, run_cli
):
    import subprocess
    import sys

    from adaptsr.core.fileio import lock_folder

    _, hr = train_setup
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\nfrom adaptsr.core.fileio import lock_folder\n"
         "with lock_folder(sys.argv[1]):\n    print('locked', flush=True)\n    time.sleep(60)\n",
         str(run)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = _tree(tmp_path)
        code, _, err = run_cli(*_train_args(files, hr, run))
        _one_line(code, err, "in use by another", str(holder.pid))
        assert _tree(tmp_path) == before
    finally:
        holder.kill()  # kill -9 releases the lock: the OS does it
        holder.wait()
    with lock_folder(run):
        pass


def test_a_failed_start_leaves_the_folder_as_found(files, train_setup, tmp_path, run_cli):
    _, hr = train_setup
    bad_map = tmp_path / "ranks.json"
    bad_map.write_text(json.dumps({"ranks": {"no.such.site": 4}}))
    fresh = tmp_path / "fresh"  # did not exist: must not exist after
    code, _, err = run_cli(*_train_args(files, hr, fresh, "--rank-map", bad_map))
    _one_line(code, err)
    assert not fresh.exists()
    kept = tmp_path / "kept"  # existed with a file of the user's
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    code, _, err = run_cli(*_train_args(files, hr, kept, "--rank-map", bad_map))
    _one_line(code, err)
    assert sorted(p.name for p in kept.iterdir()) == ["notes.txt"]
    # the corrected rerun starts normally (not "already holds a run")
    code, _, err = run_cli(*_train_args(files, hr, kept))
    assert code == 0, err


def test_sigterm_checkpoints_a_training_run(files, train_setup, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    _, hr = train_setup
    run = tmp_path / "run"
    args = [str(a) for a in _train_args(files, hr, run, "--iters", "100000", "--log-every", "1")]
    args = [a for a in args if a != "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "adaptsr.cli.app", *args[:], "--save-every", "100000"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    log = run / "log.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (log.exists() and '"loss"' in log.read_text()):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    err, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "checkpoint saved" in err, err
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert state["iteration"] >= 1 and state["run_id"]
    assert not [p for p in run.iterdir() if ".partial-" in p.name]


def test_sigterm_during_a_write_removes_the_partial_file(files, tmp_path, run_cli, monkeypatch):
    import pathlib
    import signal
    import time

    write = pathlib.Path.write_bytes

    def killed_halfway(self, data):
        write(self, data[: len(data) // 2])
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler interrupts this
        raise AssertionError("SIGTERM was not handled")

    monkeypatch.setattr(pathlib.Path, "write_bytes", killed_halfway)
    out = tmp_path / "out"
    code, _, err = run_cli("upscale", files["images"] / "0.png", "--out", out, "--model",
                           files["ckpt"])  # fmt: skip
    assert code == 143 and err.strip().splitlines()[-1] == "error: terminated (SIGTERM)", err
    assert list(out.iterdir()) == []


def test_files_that_belong_together_are_published_together(tmp_path, monkeypatch):
    """A model and its report: a failed second rename takes the first back, and a replaced
    (--force) pair comes back whole."""
    from adaptsr.core.fileio import atomic_outputs

    model, report = tmp_path / "m.onnx", tmp_path / "m.report.json"
    real = os.replace
    calls = []

    def fail_second(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", fail_second)
    with pytest.raises(UserError, match="disk is full"), atomic_outputs([model, report]) as (a, b):
        a.write_bytes(b"model")
        b.write_bytes(b"report")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(os, "replace", real)
    with atomic_outputs([model, report]) as (a, b):
        a.write_bytes(b"old model")
        b.write_bytes(b"old report")
    calls.clear()
    monkeypatch.setattr(os, "replace", fail_second)
    with pytest.raises(UserError), atomic_outputs([model, report], force=True) as (a, b):
        a.write_bytes(b"new model")
        b.write_bytes(b"new report")
    monkeypatch.setattr(os, "replace", real)
    assert (model.read_bytes(), report.read_bytes()) == (b"old model", b"old report")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.report.json"]


def test_export_onnx_without_its_report_publishes_nothing(files, tmp_path, monkeypatch, run_cli):
    from adaptsr.export import onnx as export_onnx

    def full(report):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export_onnx.ExportReport, "to_json", full)  # the report cannot be written
    out = tmp_path / "tiny.onnx"
    code, _, err = run_cli(
        "export", "onnx", "--model", files["ckpt"], "--out", out, "--tile", "16", "16"
    )
    _one_line(code, err, "disk is full")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# never "internal error" for the user's or the machine's fault; errors on their own line


def test_damaged_settings_and_absurd_sizes_are_user_errors(files, train_setup, tmp_path, run_cli):
    from adaptsr.adapt.train.callbacks import JsonlLog

    _, hr = train_setup
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    hostile = tmp_path / "hostile.toml"
    hostile.write_text("a = " + "[" * 100_000)
    for config in (deep, hostile):
        code, _, err = run_cli(*_train_args(files, hr, tmp_path / "r", "--config", config))
        _one_line(code, err, "nested too deeply")
    code, _, err = run_cli(*_train_args(files, hr, tmp_path / "r", "--rank-map", deep))
    _one_line(code, err, "rank map")
    for flag, value in (
        ("--batch", "999999999999"),
        ("--patch", "99999999"),
        ("--rank", "1000000000"),
    ):
        code, _, err = run_cli(*_train_args(files, hr, tmp_path / "r", flag, value))
        _one_line(code, err)
    # a damaged run log: lines that are not records, cut short, or with a foreign iteration
    log = tmp_path / "log.jsonl"
    log.write_text('{"iter": 1, "loss": 0.5}\n[1, 2]\n7\n{"iter": "x"}\n{"iter": 2}\n{"it')
    JsonlLog(log).trim(1)
    assert log.read_text() == '{"iter": 1, "loss": 0.5}\n'


def test_an_error_never_continues_a_progress_line(files, tmp_path, run_cli, monkeypatch):
    """A progress bar on a non-terminal stderr ends with a carriage return; the error line
    that follows starts a line of its own."""
    import sys

    import click

    import adaptsr.cli.app

    @click.command()
    def fails():
        sys.stderr.write("\r 50%|#####     | 1/2")
        raise UserError("it broke")

    monkeypatch.setitem(adaptsr.cli.app.COMMANDS, "fails", "test_reliability:fails")
    monkeypatch.setattr(sys.modules[__name__], "fails", fails, raising=False)
    code, _, err = run_cli("fails")
    assert code == 1
    assert err.endswith("1/2\nerror: it broke\n"), repr(err)


# ---------------------------------------------------------------------------------------------
# a second hostile-input pass: devices, stubs, seeds, budgets, disks, colliding outputs, names


def test_device_names_are_checked_before_any_work(files, tmp_path, run_cli):
    from adaptsr.adapt.devices import pick_device

    assert pick_device("cpu") == "cpu" and pick_device(None) == pick_device("auto")
    for bad, why in (("nonsense", "unknown device"), ("meta", "unsupported"), ("mps", "unsup")):
        with pytest.raises(UserError, match=why):
            pick_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA GPU"):
            pick_device("cuda:0")
    images = files["images"]
    common = ("--model", files["ckpt"], "--hr", images, "--degradation", "bicubic", "--quiet")
    _one_line(*run_cli("eval", *common, "--device", "meta")[::2], "unsupported device")
    alloc = tmp_path / "ranks.json"
    code, _, err = run_cli(
        "allocate", "--model", files["ckpt"], "--budget", "r1", "--score", "random",
        "--out", alloc, "--device", "nonsense",
    )  # fmt: skip
    _one_line(code, err, "unknown device")
    assert not alloc.exists()


def test_tensorrt_type_stubs_alone_are_not_tensorrt(monkeypatch):
    """tensorrt-stubs leaves an importable `tensorrt` with no library behind it."""
    import sys
    import types

    from adaptsr.serve.backends import import_tensorrt

    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))
    with pytest.raises(UserError, match="only its type stubs"):
        import_tensorrt()


def test_seeds_and_budgets_out_of_range_are_refused(files, train_setup, tmp_path, run_cli):
    from adaptsr.adapt.allocate import parse_budget

    _, hr = train_setup
    for seed in ("-1", str(2**64)):
        code, _, err = run_cli(*_train_args(files, hr, tmp_path / f"run{seed}", "--seed", seed))
        assert code == 2 and "--seed" in err and "Traceback" not in err
        assert not (tmp_path / f"run{seed}").exists()
    config = tmp_path / "seed.json"
    config.write_text(json.dumps({"seed": -1}))
    code, _, err = run_cli(*_train_args(files, hr, tmp_path / "cfg", "--config", config))
    _one_line(code, err, "--seed must be in 0..")
    model = tiny_edsr()
    for budget in ("r" + "9" * 5000, "1" + "0" * 400, "1" + "0" * 20 + "k"):
        with pytest.raises(UserError, match="not understood"):
            parse_budget(budget, model)
    assert parse_budget("r999999", model)[0] == parse_budget("r1000", model)[0]  # capped ranks


def test_a_full_disk_during_a_checkpoint_is_a_user_error(tmp_path, monkeypatch):
    """torch.save reports a full disk as a RuntimeError of its zip writer (no errno)."""
    from adaptsr.adapt.train import state

    def full(obj, f):
        f.write(b"\0" * 1000)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64")

    monkeypatch.setattr(state.torch, "save", full)
    monkeypatch.setattr(state, "_disk_full", lambda folder: True)
    with pytest.raises(UserError, match="disk is full; no checkpoint kept"):
        state.write_checkpoint({"a": 1}, tmp_path / "checkpoint.pt")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(state, "_disk_full", lambda folder: False)
    with pytest.raises(RuntimeError, match="unexpected pos"):  # not the disk: a real bug
        state.write_checkpoint({"a": 1}, tmp_path / "checkpoint.pt")
    assert list(tmp_path.iterdir()) == []


def test_eval_outputs_that_collide_and_images_too_small_to_score(files, tmp_path, run_cli):
    images = files["images"]
    common = ("eval", "--model", files["ckpt"], "--hr", images, "--degradation", "bicubic",
              "--quiet", "--no-perceptual", "--device", "cpu")  # fmt: skip
    report = tmp_path / "r.json"
    code, _, err = run_cli(*common, "--report", report, "--csv", report, "--force")
    _one_line(code, err, "would write the same place")
    saved = tmp_path / "saved"
    code, _, err = run_cli(*common, "--save", saved, "--compare", saved / "0.png", "--force")
    _one_line(code, err, "--save", "--compare")
    assert not report.exists() and not saved.exists()

    tiny = tmp_path / "tiny"
    tiny.mkdir()
    cv2.imwrite(str(tiny / "a.png"), np.zeros((1, 32, 3), np.uint8))  # 32x1: no LR row at x2
    cv2.imwrite(str(tiny / "b.png"), np.zeros((24, 24, 3), np.uint8))
    small = (*common[:3], "--hr", tiny, *common[5:])
    code, out, err = run_cli(*small)
    assert code == 0 and "1 image(s)" in out and "a.png: 32x1 is too small" in err
    _one_line(*run_cli(*small, "--strict")[::2], "too small to score at x2")


def test_a_longest_valid_file_name_can_be_written(tmp_path):
    """The temporary name beside a 255-byte NAME is shortened, not NAME itself."""
    from adaptsr.core.fileio import atomic_output

    for name in ("a" * 251 + ".png", "é" * 125 + ".png", "b" * 255):
        with atomic_output(tmp_path / name) as tmp:
            tmp.write_bytes(b"x")
        assert (tmp_path / name).read_bytes() == b"x"
    assert len(list(tmp_path.iterdir())) == 3


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_named_pipe_is_refused_instead_of_read_forever(files, tmp_path, run_cli):
    from adaptsr.adapt.train.config import read_config_file
    from adaptsr.core.images import read_image

    for name in ("in.png", "adapter.safetensors", "config.json"):
        os.mkfifo(tmp_path / name)
    with pytest.raises(UserError, match="not a regular file"):
        read_image(tmp_path / "in.png")
    with pytest.raises(UserError, match="not a regular file"):
        read_config_file(tmp_path / "config.json")
    code, _, err = run_cli(
        "merge", "--model", files["ckpt"], "--adapter", tmp_path / "adapter.safetensors",
        "--out", tmp_path / "merged.safetensors",
    )  # fmt: skip
    _one_line(code, err, "not a regular file")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_model_path_that_is_a_pipe_is_refused(tmp_path):
    from adaptsr.adapt.models import load_model

    for name in ("model.pth", "model.safetensors"):
        os.mkfifo(tmp_path / name)
        with pytest.raises(UserError, match="not a regular file"):
            load_model(tmp_path / name)


def test_onnx_runtime_failures_are_one_line(tmp_path):
    """A graph that loads but fails at run time: ONNX Runtime's own log (written by C++ to the
    process's stderr, hence a subprocess) stays silent."""
    import subprocess
    import sys

    import onnx
    from onnx import TensorProto, helper

    shape = helper.make_tensor("shape", TensorProto.INT64, [1], [7])
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])],
        "bad",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, "H", "W"])],
        [shape],
    )
    path = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    cmd = [sys.executable, "-m", "adaptsr.cli.app", "bench", str(path), "--size", "16", "16",
           "--runs", "1", "--provider", "cpu"]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    code, err = r.returncode, r.stderr
    line = _one_line(code, err, "ONNX Runtime failed")
    assert [x for x in err.splitlines() if x.strip()] == [line], err
