"""`make demo` twice into one folder, and Ctrl-C during the demo's training."""

import dataclasses
import json
import os
import signal

import pytest

import adaptsr.adapt.train as training
from adaptsr.adapt.train.callbacks import Callback
from adaptsr.cli.demo_pipeline import DEMO_ENTRIES, DemoSettings, run_demo
from adaptsr.export.plan import report_path

# the shortened demo of tests/test_demo.py, fewer iterations still: only the files matter here
SHORT = DemoSettings(
    model="adaptsr-safmn-x4",
    iters=4,
    score_batches=2,
    latency_rounds=6,
    device="cpu",
    score_warmup=1,
)


def test_the_demo_expects_the_report_the_export_writes():
    assert report_path("merged.onnx").name in DEMO_ENTRIES
    assert "merged.onnx.report.json" not in DEMO_ENTRIES  # no second spelling


@pytest.mark.slow
def test_the_demo_runs_twice_into_one_folder(tmp_path):
    """`make demo` is `adapt demo --out demo-out --force`: the second run replaces the first."""
    out = tmp_path / "demo-out"
    run_demo(out, settings=SHORT, force=True, say=lambda line: None, progress=False)
    first = sorted(p.name for p in out.iterdir())
    assert report_path(out / "merged.onnx").is_file()
    report = run_demo(out, settings=SHORT, force=True, say=lambda line: None, progress=False)
    assert sorted(p.name for p in out.iterdir()) == first
    assert set(first) <= DEMO_ENTRIES | {".adaptsr.lock"}
    assert report["iterations"] == SHORT.iters
    assert json.loads((out / "report.json").read_text())["iterations"] == SHORT.iters


class _CtrlCAt(Callback):
    """Ctrl-C delivered to this process once the given training iteration has run."""

    def __init__(self, iteration: int):
        self.iteration = iteration

    def on_step(self, iteration: int) -> None:
        if iteration == self.iteration:
            os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.slow
def test_ctrl_c_during_training_stops_the_demo(tmp_path, monkeypatch, run_cli):
    """The interrupted demo exits 130 with the usual line and writes no report: a report never
    claims iterations that did not run (an earlier demo's report is not left to claim them
    either)."""
    settings = dataclasses.replace(SHORT, iters=30)
    monkeypatch.setattr(DemoSettings, "for_device", staticmethod(lambda *a: settings))
    train = training.train
    steps = []

    class Count(Callback):
        def on_step(self, iteration: int) -> None:
            steps.append(iteration)

    def interrupted_train(*args, **kwargs):
        return train(*args, **kwargs, callbacks=[Count(), _CtrlCAt(3)])

    monkeypatch.setattr(training, "train", interrupted_train)
    out = tmp_path / "demo-out"
    out.mkdir()
    (out / "report.json").write_text(json.dumps({"iterations": 30}))  # an earlier demo's
    code, stdout, err = run_cli("demo", "--out", out, "--force", "--device", "cpu")
    assert code == 130, (stdout, err)
    assert err.strip().splitlines()[-1] == "error: interrupted"
    assert steps[-1] < settings.iters  # training stopped early...
    assert "[4/7]" not in stdout  # ...and nothing after it ran
    assert not (out / "report.json").exists() and not (out / "report.md").exists()
    assert not (out / "merged.onnx").exists()
