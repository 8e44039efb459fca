"""DiffFit (--mode difffit): per-channel scales and shifts that fold exactly into the weights,
saved as their own adapter kind, merged and exported as the base graph."""

import numpy as np
import pytest
import torch
from fakes.images import write_textured_pngs
from fakes.models import save_tiny_safmn
from fakes.training import tiny_train_config

from adaptsr.adapt import train as training
from adaptsr.adapt.adapter_file import AdapterFile, save_adapter
from adaptsr.adapt.archs import build_small
from adaptsr.adapt.difffit import difffit_layers, difffit_parameters, inject_difffit
from adaptsr.adapt.lora import base_fingerprint, merge_lora
from adaptsr.adapt.merge_adapter import merge_adapter_file, merge_adapter_files
from adaptsr.adapt.models import load_model, model_from_state_dict, save_model
from adaptsr.adapt.sites import target_sites
from adaptsr.core.errors import UserError
from adaptsr.export.onnx import export_onnx, load_merged

pytestmark = pytest.mark.usefixtures("one_thread")


def small(arch: str, seed: int = 0, **kw) -> torch.nn.Module:
    torch.manual_seed(seed)
    return model_from_state_dict(build_small(arch, **kw).state_dict(), name=f"small-{arch}")


def _randomise(model, seed=1):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in difffit_parameters(model):
            p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.2)


def _modules(model, targets="all"):
    return list(dict.fromkeys(s.module for s in target_sites(model, targets)))


def test_trainable_parameters_are_channels_plus_biases():
    model = small("SwinIR")
    expected = 0
    for path in _modules(model):
        layer = model.get_submodule(path)
        expected += layer.weight.shape[0] * (2 if layer.bias is not None else 1)
    fingerprint = base_fingerprint(model)
    inject_difffit(model)
    assert sum(p.numel() for p in difffit_parameters(model)) == expected
    assert [p for p in model.parameters() if p.requires_grad] == difffit_parameters(model)
    assert base_fingerprint(model) == fingerprint  # the scales are not base weights
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():  # gamma 1, beta 0: the base function
        assert torch.equal(model(x), small("SwinIR")(x))


@pytest.mark.parametrize("arch", ["SwinIR", "SAFMN"])
def test_folding_is_exact_against_an_fp64_reference(arch):
    reference = small(arch).double()
    inject_difffit(reference)
    _randomise(reference)
    model = small(arch)  # fp32, the same scales
    inject_difffit(model)
    with torch.no_grad():
        for p, q in zip(difffit_parameters(model), difffit_parameters(reference), strict=True):
            p.copy_(q.float())
    x = torch.rand(1, 3, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        want = reference(x)
        unmerged = model(x.float()).double()
        merge_lora(model)
        merged = model(x.float()).double()
    assert not difffit_layers(model) and not hasattr(model, "adaptsr_difffit")
    scale = want.abs().max()
    assert (unmerged - want).abs().max() / scale < 1e-5
    assert (merged - want).abs().max() / scale < 1e-5
    assert (want - small(arch).double()(x)).abs().max() > 1e-3  # it did change the function
    names = {n for n, _ in small(arch).named_parameters()}
    assert {n for n, _ in model.named_parameters()} == names  # the base architecture


def test_file_round_trip_targets_and_merge(tmp_path):
    base_path = tmp_path / "base.safetensors"
    save_model(small("SwinIR"), base_path)
    model = load_model(base_path)
    inject_difffit(model, "attn,mlp")
    _randomise(model)
    adapter = save_adapter(model, tmp_path / "d.safetensors")
    meta = AdapterFile.read(adapter).meta
    assert (meta.mode, meta.targets, meta.ranks) == ("difffit", "attn,mlp", {})
    assert list(meta.layers) == _modules(model, "attn,mlp")
    out = tmp_path / "merged.safetensors"
    summary = merge_adapter_file(str(base_path), str(adapter), str(out))
    assert summary.sites == len(meta.layers)
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(load_model(out)(x), model(x), atol=1e-5)
    with pytest.raises(UserError, match="merges alone at strength 1"):
        merge_adapter_files(str(base_path), [(str(adapter), 0.5)], str(tmp_path / "h.pt"))


def test_merged_export_is_node_for_node_the_base_graph(tmp_path):
    base_path = tmp_path / "base.safetensors"
    torch.manual_seed(0)
    net = build_small("SwinIR", img_size=32, window_size=8, embed_dim=16, depths=[2])
    save_model(model_from_state_dict(net.state_dict(), name="small-SwinIR"), base_path)
    model = load_model(base_path)
    inject_difffit(model)
    _randomise(model)
    adapter_path = save_adapter(model.eval(), tmp_path / "d.safetensors")
    merged, info = load_merged(str(base_path), adapter_path)
    report = export_onnx(
        merged, tmp_path / "m.onnx", tile=(16, 24), adapter=info, base=load_model(base_path),
        latency_rounds=6, latency_max_rounds=6,
    )  # fmt: skip
    structure = report.zero_overhead.structure
    assert structure.identical and structure.verdict == "PASS", structure.differences
    assert structure.params[0] == structure.params[1] > 0


def test_training_reduces_the_loss_towards_a_scaled_teacher():
    teacher = small("SAFMN")
    inject_difffit(teacher)
    _randomise(teacher, seed=3)
    merge_lora(teacher)
    student = small("SAFMN")
    params = inject_difffit(student) and difffit_parameters(student)
    opt = torch.optim.Adam(params, lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(60):
        x = torch.rand(4, 3, 12, 12, generator=gen)
        with torch.no_grad():
            y = teacher(x)
        loss = torch.nn.functional.l1_loss(student(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.3 * np.mean(losses[:5])


def test_difffit_run_writes_a_difffit_adapter(tmp_path):
    model = save_tiny_safmn(tmp_path / "tiny.safetensors")
    hr = write_textured_pngs(tmp_path / "hr", 4, np.random.default_rng(0))
    cfg = tiny_train_config(model, data=[str(hr)], mode="difffit", iters=2, patch=32)
    result = training.train(cfg, tmp_path / "run", progress=False)
    assert result.status == "finished", result.message
    meta = AdapterFile.read(tmp_path / "run" / "adapter.safetensors").meta
    assert meta.mode == "difffit" and meta.layers
    with pytest.raises(UserError, match="--targets mlp: this model has no site there"):
        bad = tiny_train_config(model, data=[str(hr)], mode="difffit", targets="mlp")
        training.train(bad, tmp_path / "run2", progress=False)
