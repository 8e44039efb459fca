"""torch.compile and CUDA graphs: the fused LoRA custom ops in one compiled graph, `adapt train
--compile` against eager training, its fallback, the CUDA-graph option without CUDA, and a
training step that never waits for the device."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from fakes.images import write_textured_pngs
from fakes.models import save_tiny_safmn
from fakes.training import tiny_train_config

os.environ.setdefault("TRITON_INTERPRET", "1")  # before the kernels first load (see test_kernels)

from adaptsr import kernels  # noqa: E402
from adaptsr.adapt import train as training  # noqa: E402
from adaptsr.adapt.lora import LoRAConv2d, LoRALinear  # noqa: E402
from adaptsr.adapt.losses import pixel  # noqa: E402
from adaptsr.adapt.train import graphs, loop  # noqa: E402

needs_interpreter = pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") != "1", reason="the Triton interpreter is off"
)


pytestmark = pytest.mark.usefixtures("one_thread")


class TinyAdapted(torch.nn.Module):
    """A 3x3 conv and a linear layer with adapters (dot dimensions >= 16 for the interpreter)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = LoRAConv2d(torch.nn.Conv2d(16, 16, 3, padding=1).requires_grad_(False), 4, 2)
        self.lin = LoRALinear(torch.nn.Linear(16, 16).requires_grad_(False), 4, 2.0)
        for layer in (self.conv, self.lin):
            torch.nn.init.normal_(layer.lora_B, std=0.1)  # B starts at zero: make it count

    def forward(self, x):
        y = torch.relu(self.conv(x))
        return self.lin(y.permute(0, 2, 3, 1)).permute(0, 3, 1, 2) + x


def step(net, model, x):
    """Output and adapter gradients of one forward and backward."""
    out = net(x)
    params = [p for p in model.parameters() if p.requires_grad]
    return (out, *torch.autograd.grad(out.square().sum(), params))


def compiled_against_eager(backend):
    model = TinyAdapted()
    x = torch.randn(2, 16, 5, 6)
    with kernels.use_backend("triton"):
        got = step(torch.compile(model, backend=backend, fullgraph=True), model, x)
        want = step(model, model, x)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)


@needs_interpreter
def test_fused_ops_compile_into_one_graph():
    # fullgraph=True fails on any graph break; the graph must hold the custom ops (not an
    # unrolled reference path), and forward and adapter gradients match the eager fused path
    seen = []

    def record(gm, example_inputs):
        seen.extend(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
        return gm.forward

    compiled_against_eager(record)
    assert "adaptsr.lora_conv2d.default" in seen and "adaptsr.lora_linear.default" in seen
    compiled_against_eager("aot_eager")  # forward and backward graphs through the fake impls


@needs_interpreter
@pytest.mark.slow
def test_fused_ops_compile_with_inductor():
    # inductor's CPU backend builds C++ (g++): ~40 s on 2 cores, so only this one test uses it
    compiled_against_eager("inductor")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A tiny SAFMN x4 checkpoint and 6 textured 48x48 images."""
    root = tmp_path_factory.mktemp("compile")
    model = save_tiny_safmn(root / "tiny.safetensors")
    hr = write_textured_pngs(root / "hr", 6, np.random.default_rng(0))
    return model, hr


def config(data, **kw):
    model, hr = data
    return tiny_train_config(model, [str(hr)], **{"iters": 4, "save_every": 0, **kw})


def losses(run_dir):
    lines = (run_dir / "log.jsonl").read_text().splitlines()
    return [r["loss"] for r in map(json.loads, lines) if "loss" in r]


def test_train_compile_matches_eager(data, tmp_path, monkeypatch, capsys):
    # aot_eager: the graph capture and autograd of torch.compile without inductor's C++ build
    monkeypatch.setattr(graphs, "BACKEND", "aot_eager")
    eager = tmp_path / "eager"
    training.train(config(data), eager, progress=False)
    compiled = tmp_path / "compiled"
    training.train(config(data, compile=True), compiled, progress=False)
    assert "note:" not in capsys.readouterr().err
    assert losses(compiled) == pytest.approx(losses(eager), rel=1e-5)
    assert json.loads((compiled / "config.json").read_text())["compile"] is True


def test_a_model_that_cannot_compile_trains_eagerly_with_one_note(data, tmp_path, monkeypatch):
    def broken(module, **kwargs):
        def fail(x):
            raise RuntimeError("backend exploded\nlong details")

        return fail

    monkeypatch.setattr(torch, "compile", broken)
    notes = []
    net = graphs.CompiledModel(torch.nn.Identity(), False, notes.append)
    x = torch.ones(2)
    assert net(x) is x and net(x) is x and net.eager
    assert notes == ["note: cannot compile the model (backend exploded); training without it"]

    eager = tmp_path / "eager"
    training.train(config(data), eager, progress=False)
    run = tmp_path / "run"
    training.train(config(data, compile=True), run, progress=False)
    assert losses(run) == losses(eager)  # the trial step left no trace


def test_cuda_graphs_without_cuda_is_one_line(data, tmp_path, run_cli):
    model, hr = data
    args = ["train", "--model", model, "--data", hr, "--out", tmp_path / "run", "--iters", "1"]
    code, _, err = run_cli(*args, "--device", "cpu", "--cuda-graphs", "--patch", "32")
    assert code == 1
    assert err == "error: --cuda-graphs needs a CUDA device; this run is on cpu\n"
    assert not (tmp_path / "run" / "config.json").exists()


def test_compile_options_may_change_on_resume(data, tmp_path):
    run = tmp_path / "run"
    training.train(config(data, iters=2, save_every=1), run, progress=False)
    resumed = training.resume_config(run, {"compile": True, "cuda_graphs": True, "iters": 2})
    assert resumed.compile and resumed.cuda_graphs


def test_training_steps_never_read_the_loss_on_the_host(data, tmp_path, monkeypatch):
    # Every loss tensor is watched: converting one to a Python number (float(), .item(),
    # math.isfinite, bool) would wait for the device. Only the stacked copy of a log interval
    # may be read, and it is read once per interval.
    watched = []
    real_l1 = pixel.F.l1_loss  # the l1 term of the training objective

    def l1_loss(*args, **kwargs):
        loss = real_l1(*args, **kwargs)
        watched.append(loss)  # kept alive, so no other tensor reuses its memory
        return loss

    def guard(name):
        real = getattr(torch.Tensor, name)

        def check(self, *args, **kwargs):
            if any(self.data_ptr() == w.data_ptr() for w in watched):
                raise AssertionError(f"Tensor.{name} of a training loss")
            return real(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, check)

    for name in ("item", "tolist", "__float__", "__bool__", "numpy"):
        guard(name)
    reads = []
    real_read = loop._Stats.read

    def read(stats, check):
        reads.append(len(stats.pending))
        real_read(stats, check)

    monkeypatch.setattr(pixel.F, "l1_loss", l1_loss)
    monkeypatch.setattr(loop._Stats, "read", read)
    run = tmp_path / "run"
    training.train(config(data, iters=6, log_every=3), run, progress=False)
    assert len(watched) == 6 and len(losses(run)) == 2
    assert reads == [3, 3, 0]  # two log intervals, then the final checkpoint


def test_non_finite_loss_names_its_iteration_between_log_lines(data, tmp_path):
    # read every 5 iterations, the error still names the first non-finite one: the iteration
    # a run that reads every loss at once (--log-every 1) stops at
    from adaptsr.core.errors import UserError

    def stop(log_every):
        cfg = config(data, mode="full", lr=1e30, iters=10, log_every=log_every)
        with pytest.raises(UserError, match=r"loss \(\w+\) is not finite at iteration") as e:
            training.train(cfg, tmp_path / f"run{log_every}", progress=False)
        return str(e.value)

    every_step = stop(1)
    assert stop(5) == every_step.replace("run1", "run5")


def test_a_resumed_run_names_the_same_non_finite_iteration(data, tmp_path):
    # iterations count from the checkpoint: resumed from the last good one, the deferred read
    # must name the iteration the first run stopped at
    from adaptsr.core.errors import UserError

    run = tmp_path / "run"
    cfg = config(data, mode="full", lr=1e30, iters=10, save_every=1)
    with pytest.raises(UserError, match="not finite") as first:
        training.train(cfg, run, progress=False)
    saved = torch.load(run / "checkpoint.pt", weights_only=True)["iteration"]
    with pytest.raises(UserError, match="not finite") as again:
        resumed = training.resume_config(run, {"log_every": 5, "save_every": 0})
        training.train(resumed, run, resume=True, progress=False)
    assert f"at iteration {saved + 1}:" in str(first.value)
    assert f"at iteration {saved + 1}:" in str(again.value)
