"""The export's and the engine build's plan: every check once, before any work; and what a killed
export leaves is swept by the next one."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fakes.exports import write_onnx
from fakes.models import save_tiny_safmn

from adaptsr.core.artifacts import model_card_path
from adaptsr.core.errors import UserError
from adaptsr.core.fileio import partial_folder
from adaptsr.export import plan as export_plan
from adaptsr.export import trt_plan
from adaptsr.export.plan import ExportPlan, plan_export, report_path, scratch_folder
from adaptsr.export.trt_plan import EnginePlan, plan_engine


def test_an_export_plan_is_checked_without_opening_a_model(tmp_path):
    """A model spec that cannot be opened: every refusal comes from the plan alone."""
    out = tmp_path / "m.onnx"
    plan = plan_export(out, model="no-such-model", tile=(16, 16))
    assert isinstance(plan, ExportPlan) and plan.report == tmp_path / "m.report.json"
    assert plan.tile == (16, 16) and not plan.dynamic and plan.model == "no-such-model"
    cases = [
        (dict(tile=(16, 16), opset=17), "opset 17 is too old"),
        (dict(tile=(16, 16), opset=999), "newer than the installed onnx"),
        (dict(dynamic=True, tile=(16, 16)), "either --dynamic or --tile"),
        ({}, "choose the input shape"),
    ]
    for kwargs, message in cases:
        with pytest.raises(UserError, match=message):
            plan_export(out, model="no-such-model", **kwargs)
    with pytest.raises(UserError, match="choose a .onnx file name"):
        plan_export(tmp_path / "m.bin", model="no-such-model", tile=(16, 16))
    out.write_bytes(b"old")
    with pytest.raises(UserError, match="already exists"):
        plan_export(out, model="no-such-model", tile=(16, 16))
    assert plan_export(out, model="no-such-model", tile=(16, 16), force=True).force
    with pytest.raises(UserError, match="is the input file"):
        plan_export(out, model=str(out), tile=(16, 16), force=True)  # --force never overwrites


def test_the_export_command_checks_its_outputs_once(tmp_path, monkeypatch, run_cli):
    """The face plans (outputs writable, --force) and the library trusts the plan."""
    seen = []
    check = export_plan.check_writable
    monkeypatch.setattr(
        export_plan,
        "check_writable",
        lambda p, force=False: seen.append(Path(p)) or check(p, force),
    )
    model = save_tiny_safmn(tmp_path / "base.safetensors")
    out = tmp_path / "m.onnx"
    code, stdout, err = run_cli("export", "onnx", "--model", model, "--out", out, "--tile", 16, 16)
    assert code == 0, err
    assert seen == [out, report_path(out), model_card_path(out)]
    assert f"report: {report_path(out)}" in stdout
    assert f"model card: {model_card_path(out)}" in stdout


def test_an_engine_plan_holds_every_check(tmp_path):
    onnx_path = write_onnx(tmp_path / "m.onnx", req=(16, 8))
    out = tmp_path / "m.engine"
    plan = plan_engine(onnx_path, out, min_shape="16x16", opt_shape="64x64", max_shape="128x96")
    assert isinstance(plan, EnginePlan) and plan.refit_from is None
    assert plan.profile.max == (1, 3, 128, 96) and plan.reference == onnx_path
    assert plan.info == tmp_path / "m.engine.json" and plan.precision == "fp32"
    assert "--max-shape 128x96" in plan.command
    with pytest.raises(UserError, match="a multiple of 8"):
        plan_engine(onnx_path, out, min_shape="16x20", opt_shape="64x64", max_shape="128x96")
    with pytest.raises(UserError, match="--refit-from keeps the engine's build settings"):
        plan_engine(onnx_path, out, refit_from=tmp_path / "a.engine", fp16=True)
    with pytest.raises(UserError, match="is the input file"):
        plan_engine(onnx_path, onnx_path)


def test_the_engine_command_reads_its_onnx_once(tmp_path, monkeypatch, run_cli, fake_trt):
    fake_trt()
    reads = []
    read = trt_plan.read_onnx_input
    monkeypatch.setattr(trt_plan, "read_onnx_input", lambda p: reads.append(p) or read(p))
    onnx_path = write_onnx(tmp_path / "m.onnx", h=32, w=32)
    out = tmp_path / "m.engine"
    code, stdout, err = run_cli("export", "trt", "--onnx", onnx_path, "--out", out, "--no-verify")
    assert code == 0, err
    assert len(reads) == 1 and out.is_file()
    assert stdout.strip().splitlines()[-1] == f"info: {out}.json"


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_scratch_folders_of_dead_exports_are_swept_and_live_ones_kept(tmp_path):
    out = tmp_path / "m.onnx"
    live = partial_folder(out)  # this process's: alive
    dead = tmp_path / f".m.onnx.partial-{_dead_pid()}-abcdefgh"
    dead.mkdir()
    (dead / "model.fp32.onnx").write_bytes(b"x" * 1000)
    with scratch_folder(out) as scratch:
        assert scratch.parent == tmp_path and scratch.name.startswith(".m.onnx.partial-")
        assert not dead.exists() and live.is_dir()
    assert not scratch.exists() and live.is_dir()


# The export, stopped for good once its fp32 graph is written (parity checking "hangs").
KILLED_EXPORT = """
import sys, time
import adaptsr.export.onnx as export
def hang(*args, **kwargs):
    print("fp32 graph written", flush=True)
    time.sleep(600)
export.check_parity = hang
from adaptsr.cli.app import main
main(["export", "onnx", "--model", sys.argv[1], "--out", sys.argv[2], "--tile", "16", "16"])
"""


@pytest.mark.slow
def test_a_killed_export_leaves_nothing_that_the_next_export_keeps(tmp_path, run_cli):
    """kill -9 mid-export: its scratch (up to the fp32 ONNX) is beside the output, not in the
    system's temporary folder, and the next export to that output removes it."""
    model = save_tiny_safmn(tmp_path / "base.safetensors")
    folder, tmp = tmp_path / "out", tmp_path / "tmp"
    folder.mkdir()
    tmp.mkdir()
    out = folder / "m.onnx"
    env = {**os.environ, "TMPDIR": str(tmp)}
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_EXPORT, str(model), str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = child.stdout.readline()
        assert line.strip() == "fp32 graph written", child.stderr.read()[-2000:]
    finally:
        child.kill()  # SIGKILL: no cleanup runs
        child.wait()
    left = [
        p for p in (*folder.iterdir(), *tmp.iterdir()) if "adaptsr" in p.name or "m.onnx" in p.name
    ]
    assert left, "the killed export left nothing to sweep: the test did not stop it mid-way"
    time.sleep(0.1)
    code, _, err = run_cli("export", "onnx", "--model", model, "--out", out, "--tile", 16, 16)
    assert code == 0, err
    assert sorted(p.name for p in folder.iterdir()) == [
        "m.onnx",
        "m.onnx.modelcard.json",
        "m.report.json",
    ]
    assert not [p.name for p in tmp.iterdir() if p.name.startswith("adaptsr")]
