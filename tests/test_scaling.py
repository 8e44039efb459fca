"""rsLoRA: adapter updates scaled by alpha/sqrt(r), in layers, merge, files and training."""

import math

import pytest
import torch

from adaptsr.adapt.adapter_file import AdapterFile, save_adapter
from adaptsr.adapt.archs import build_small
from adaptsr.adapt.lora import (
    adapter_parameters,
    inject_lora,
    lora_layers,
    lora_sites,
    merge_lora,
)
from adaptsr.adapt.models import model_from_state_dict
from adaptsr.adapt.train.config import TrainConfig
from adaptsr.core.errors import UserError


def small_swinir(dtype=torch.float64):
    torch.manual_seed(0)
    m = build_small("SwinIR")
    return model_from_state_dict(m.state_dict(), name="small-SwinIR").to(dtype)


def _randomise(model, seed=1):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter_parameters(model):
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.1)


@pytest.mark.parametrize("ranks", [3, "map"])
def test_merged_weights_are_w_plus_alpha_over_sqrt_r_ba_in_fp64(ranks):
    base = small_swinir()
    before = {n: p.detach().clone() for n, p in base.named_parameters()}
    model = small_swinir()
    if ranks == "map":  # rank-aware runs: a rank per site, q/k/v of one qkv differing
        ranks = {s: 1 + i % 4 for i, s in enumerate(s.name for s in lora_sites(model))}
    inject_lora(model, ranks, alpha=2.0, scaling="alpha/sqrt(r)")
    _randomise(model)
    expected = {}
    for path, layer in lora_layers(model).items():
        w = before[f"{path}.weight"].clone()
        d = w.shape[0] // 3
        for part, (a, b, scale) in layer.adapters().items():
            r = a.shape[0]
            assert scale == pytest.approx(2.0 / math.sqrt(r), rel=1e-15)
            if a.dim() == 4:  # conv: B (o, r, k, k), A (r, i, 1, 1)
                dw = torch.einsum("orhw,ri->oihw", b.detach(), a.detach()[:, :, 0, 0])
            else:
                dw = b.detach() @ a.detach()
            rows = (
                slice(None)
                if not part
                else slice("qkv".index(part) * d, ("qkv".index(part) + 1) * d)
            )
            w[rows] += (2.0 / math.sqrt(r)) * dw
        expected[path] = w
    x = torch.rand(1, 3, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        unmerged = model(x)
    merge_lora(model)
    params = dict(model.named_parameters())
    for path, w in expected.items():
        assert torch.allclose(params[f"{path}.weight"], w, rtol=0, atol=1e-12), path
    with torch.no_grad():
        assert torch.allclose(model(x), unmerged, rtol=0, atol=1e-10)


def test_scaling_is_recorded_and_applied_from_the_file(tmp_path):
    model = small_swinir(torch.float32)
    inject_lora(model, 4, scaling="alpha/sqrt(r)")
    _randomise(model)
    path = save_adapter(model, tmp_path / "rs.safetensors")
    meta = AdapterFile.read(path).meta
    assert meta.scaling == "alpha/sqrt(r)" and meta.to_json()["scaling"] == "alpha/sqrt(r)"
    fresh = small_swinir(torch.float32)
    AdapterFile.read(path).apply(fresh)
    scales = [
        (a.shape[0], s) for x in lora_layers(fresh).values() for a, _, s in x.adapters().values()
    ]
    assert all(s == 1 / math.sqrt(r) for r, s in scales) and (4, 0.5) in scales
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(fresh(x), model(x), atol=1e-6)


def test_unknown_scaling_is_refused():
    with pytest.raises(UserError, match="unknown scaling"):
        inject_lora(small_swinir(), 2, scaling="alpha")
    with pytest.raises(UserError, match="unknown scaling"):
        TrainConfig(model="m", scaling="alpha").resolved()
    with pytest.raises(UserError, match="--scaling applies to --mode lora"):
        TrainConfig(model="m", mode="full", scaling="alpha/sqrt(r)").resolved()
