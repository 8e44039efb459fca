"""core.fileio as every command uses it: no output replaces an input, whatever --force says;
writes are whole or absent (full disks, kills, SIGTERM); file modes, long names, pipes."""

import json
import os
from pathlib import Path

import pytest
from fakes.cli import one_line, tree
from fakes.images import write_noise_pngs
from fakes.models import one_block_edsr
from fakes.training import train_cli_args

from adaptsr.core.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")


def test_an_output_that_is_an_input_is_refused_even_with_force(edsr_files, tmp_path, run_cli):
    hr = write_noise_pngs(tmp_path / "hr", 2, 32, 32, seed=4)
    before = tree(tmp_path)
    ev = ("eval", "--model", edsr_files["ckpt"], "--hr", hr, "--degradation", "bicubic",
          "--no-perceptual", "--quiet", "--force")  # fmt: skip
    for extra in (
        ("--save", hr),
        ("--report", hr / "0.png"),
        ("--csv", hr / "1.png"),
        ("--compare", hr / "0.png"),
    ):
        code, _, err = run_cli(*ev, *extra)
        one_line(code, err, extra[0], "input")
    ckpt, adapter = edsr_files["ckpt"], edsr_files["adapter"]
    for args in (
        ("merge", "--model", ckpt, "--adapter", adapter, "--out", ckpt, "--force"),
        ("merge", "--model", ckpt, "--adapter", adapter, "--out", adapter, "--force"),
        ("export", "onnx", "--model", ckpt, "--out", ckpt, "--force"),
        ("allocate", "--model", ckpt, "--data", hr, "--budget", "r2", "--out", hr / "0.json",
         "--force"),
        ("upscale", hr / "0.png", "--out", hr, "--model", ckpt, "--force"),
    ):  # fmt: skip
        code, _, err = run_cli(*args)
        one_line(code, err, "input")
    assert tree(tmp_path) == before


def test_a_run_folder_holding_the_input_model_is_refused(edsr_files, tmp_path, run_cli):
    run = tmp_path / "run"
    run.mkdir()
    model = run / "model.safetensors"
    model.write_bytes(Path(edsr_files["ckpt"]).read_bytes())
    before = tree(tmp_path)
    code, _, err = run_cli(
        "train", "--model", model, "--data", edsr_files["images"], "--out", run, "--force",
        "--iters", "1", "--patch", "16", "--batch", "1", "--device", "cpu", "--workers", "0",
    )  # fmt: skip
    one_line(code, err, "input")
    assert tree(tmp_path) == before


def test_a_failed_start_leaves_the_folder_as_found(edsr_files, train_hr, tmp_path, run_cli):
    hr = train_hr
    bad_map = tmp_path / "ranks.json"
    bad_map.write_text(json.dumps({"ranks": {"no.such.site": 4}}))
    fresh = tmp_path / "fresh"  # did not exist: must not exist after
    code, _, err = run_cli(*train_cli_args(edsr_files["ckpt"], hr, fresh, "--rank-map", bad_map))
    one_line(code, err)
    assert not fresh.exists()
    kept = tmp_path / "kept"  # existed with a file of the user's
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    code, _, err = run_cli(*train_cli_args(edsr_files["ckpt"], hr, kept, "--rank-map", bad_map))
    one_line(code, err)
    assert sorted(p.name for p in kept.iterdir()) == ["notes.txt"]
    # the corrected rerun starts normally (not "already holds a run")
    code, _, err = run_cli(*train_cli_args(edsr_files["ckpt"], hr, kept))
    assert code == 0, err


def test_outputs_follow_the_umask_safetensors_included(edsr_files, tmp_path, run_cli):
    old = os.umask(0o022)
    try:
        out = tmp_path / "merged.safetensors"
        code, _, err = run_cli(
            "merge", "--model", edsr_files["ckpt"], "--adapter", edsr_files["adapter"], "--out", out
        )
        assert code == 0, err
        assert (out.stat().st_mode & 0o777) == 0o644
        from adaptsr.adapt.lora import inject_lora, save_adapter

        path = save_adapter(inject_lora(one_block_edsr(), 1), tmp_path / "a.safetensors")
        assert (path.stat().st_mode & 0o777) == 0o644
    finally:
        os.umask(old)


def test_a_full_disk_is_a_user_error_and_leaves_nothing(edsr_files, tmp_path, run_cli, monkeypatch):
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
        "merge", "--model", edsr_files["ckpt"], "--adapter", edsr_files["adapter"], "--out", out
    )
    one_line(code, err, "disk is full")
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


def test_sigterm_during_a_write_removes_the_partial_file(
    edsr_files, tmp_path, run_cli, monkeypatch
):
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
    code, _, err = run_cli("upscale", edsr_files["images"] / "0.png", "--out", out, "--model",
                           edsr_files["ckpt"])  # fmt: skip
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


def test_a_longest_valid_file_name_can_be_written(tmp_path):
    """The temporary name beside a 255-byte NAME is shortened, not NAME itself."""
    from adaptsr.core.fileio import atomic_output

    for name in ("a" * 251 + ".png", "é" * 125 + ".png", "b" * 255):
        with atomic_output(tmp_path / name) as tmp:
            tmp.write_bytes(b"x")
        assert (tmp_path / name).read_bytes() == b"x"
    assert len(list(tmp_path.iterdir())) == 3


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_named_pipe_is_refused_instead_of_read_forever(edsr_files, tmp_path, run_cli):
    from adaptsr.adapt.train.config import read_config_file
    from adaptsr.core.images import read_image

    for name in ("in.png", "adapter.safetensors", "config.json"):
        os.mkfifo(tmp_path / name)
    with pytest.raises(UserError, match="not a regular file"):
        read_image(tmp_path / "in.png")
    with pytest.raises(UserError, match="not a regular file"):
        read_config_file(tmp_path / "config.json")
    code, _, err = run_cli(
        "merge", "--model", edsr_files["ckpt"], "--adapter", tmp_path / "adapter.safetensors",
        "--out", tmp_path / "merged.safetensors",
    )  # fmt: skip
    one_line(code, err, "not a regular file")
