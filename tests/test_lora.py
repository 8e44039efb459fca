import json

import pytest
import torch
from fakes.cli import one_line
from fakes.models import one_block_edsr
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import adaptsr
from adaptsr.adapt.archs import build_small
from adaptsr.adapt.lora import (
    LoRAConv2d,
    LoRAQKV,
    adapter_parameters,
    lora_layers,
    resolve_ranks,
    skipped_layers,
)
from adaptsr.adapt.models import model_from_state_dict
from adaptsr.core.errors import UserError


def small_models():
    """Small configurations of the four architectures the paper adapts (and SPAN), a little
    wider or deeper than their profiles' (two blocks: a shifted window, more sites)."""
    torch.manual_seed(0)
    nets = {
        "EDSR": build_small("EDSR"),
        "SAFMN": build_small("SAFMN", dim=16, n_blocks=2),
        "SwinIR": build_small("SwinIR", embed_dim=24, depths=[2, 2], num_heads=[2, 2]),
        "DRCT": build_small("DRCT", embed_dim=24, depths=(2,), gc=8),
        # reparameterised: folds its training-time convs into `eval_conv` at inference
        "SPAN": build_small("SPAN", feature_channels=16),
    }
    return {k: model_from_state_dict(v.state_dict(), name=k) for k, v in nets.items()}


def randomise_adapters(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter_parameters(model):
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)


MODELS = small_models()


@pytest.mark.parametrize("arch", list(MODELS))
def test_merge_equals_adapted_output(arch):
    base = MODELS[arch]
    model = model_from_state_dict(base.state_dict(), name=arch)
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y_base = model(x)
    adaptsr.inject_lora(model, 4)
    with torch.no_grad():
        assert torch.equal(model(x), y_base)  # B = 0: starts exactly at the base
    randomise_adapters(model)
    with torch.no_grad():
        y_adapted = model(x)
    assert (y_adapted - y_base).abs().max() > 1e-3  # the adapters really act
    merged = adaptsr.merge_lora(model)
    with torch.no_grad():
        y_merged = merged(x)
    span = (y_adapted.max() - y_adapted.min()).item()
    assert (y_merged - y_adapted).abs().max().item() <= 1e-5 * span
    # Exactly the base architecture: same names, shapes, plain layers; its own code loads it.
    assert not lora_layers(merged)
    a, b = base.state_dict(), merged.state_dict()
    assert a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)
    again = model_from_state_dict(merged.state_dict(), name="merged")
    with torch.no_grad():
        assert torch.equal(again(x), y_merged)
    fresh = type(base)(**base.hyperparameters) if hasattr(base, "hyperparameters") else None
    if fresh is not None and base.hyperparameters:
        fresh.load_state_dict(merged.state_dict(), strict=True)


def _conv_case(draw):
    k = draw(st.sampled_from([1, 2, 3, 5]))
    return dict(
        c_in=draw(st.integers(1, 6)),
        c_out=draw(st.integers(1, 6)),
        k=k,
        stride=draw(st.integers(1, 3)),
        padding=draw(st.integers(0, 2)),
        dilation=draw(st.integers(1, 2)),
        padding_mode=draw(st.sampled_from(["zeros", "reflect", "replicate", "circular"])),
        rank=draw(st.integers(1, 4)),
        bias=draw(st.booleans()),
    )


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_conv_merge_property(data):
    c = _conv_case(data.draw)
    size = max(8, (c["k"] - 1) * c["dilation"] + 1 + 2)
    conv = nn.Conv2d(
        c["c_in"],
        c["c_out"],
        c["k"],
        stride=c["stride"],
        padding=c["padding"],
        dilation=c["dilation"],
        padding_mode=c["padding_mode"],
        bias=c["bias"],
    ).double()
    layer = LoRAConv2d(conv, rank=c["rank"], alpha=2.0).double()
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(2, c["c_in"], size, size + 1, dtype=torch.float64)
    with torch.no_grad():
        y = layer(x)
        layer.merge()
        y_merged = conv(x)
    assert y.shape == y_merged.shape
    torch.testing.assert_close(y_merged, y, rtol=1e-10, atol=1e-10)


def test_unmerge_restores_base_weights():
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 32, 3, padding=1)
    w0 = conv.weight.detach().clone()
    layer = LoRAConv2d(conv, rank=8, alpha=1.0)
    with torch.no_grad():
        layer.lora_B.normal_()
    layer.merge()
    assert (conv.weight - w0).abs().max() > 1e-3
    layer.unmerge()
    torch.testing.assert_close(conv.weight, w0, rtol=0, atol=4 * torch.finfo(torch.float32).eps)


def test_half_model_merges_in_fp32():
    torch.manual_seed(0)
    lin = nn.Linear(32, 48).half()
    w0 = lin.weight.detach().clone()
    from adaptsr.adapt.lora import LoRALinear

    layer = LoRALinear(lin, rank=4, alpha=1.0)
    with torch.no_grad():
        layer.lora_B.normal_()
    expected = (w0.float() + layer.delta_weight()).half()
    layer.merge()
    assert torch.equal(lin.weight, expected)


def test_qkv_split_with_separate_ranks():
    model = model_from_state_dict(MODELS["SwinIR"].state_dict(), name="s")
    sites = {s.name: s for s in adaptsr.lora_sites(model)}
    qkv = "layers.0.residual_group.blocks.0.attn.qkv"
    assert {f"{qkv}.q", f"{qkv}.k", f"{qkv}.v"} <= sites.keys()
    assert sites[f"{qkv}.k"].kind == "attn-k"
    assert sites["layers.0.residual_group.blocks.0.attn.proj"].kind == "attn-o"
    assert sites["layers.0.residual_group.blocks.0.mlp.fc1"].kind == "mlp"
    adaptsr.inject_lora(model, {f"{qkv}.q": 2, f"{qkv}.v": 5, f"{qkv}.k": 0})
    layer = model.get_submodule(qkv)
    assert isinstance(layer, LoRAQKV) and layer.ranks == {"q": 2, "k": 0, "v": 5}
    randomise_adapters(model)
    # dW has zero K rows and the right rank in Q and V blocks.
    dw = layer.delta_weight()
    d = dw.shape[0] // 3
    assert dw[d : 2 * d].abs().max() == 0
    assert torch.linalg.matrix_rank(dw[:d], rtol=1e-4) == 2
    assert torch.linalg.matrix_rank(dw[2 * d :], rtol=1e-4) == 5
    # the separate per-part reference: y = W x + sum_p s_p B_p A_p x on its rows
    x = torch.randn(5, dw.shape[1])
    base = layer.base_layer
    expected = base(x).detach().clone()
    for i, p in enumerate("qkv"):
        if p in layer.lora_A:
            a, b = layer.lora_A[p], layer.lora_B[p]
            expected[:, i * d : (i + 1) * d] += (x @ a.T @ b.T) * (1.0 / layer.ranks[p])
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-6)


def test_only_adapters_trainable_and_skips_reported():
    model = adaptsr.load_model("safmn-x4")
    adaptsr.inject_lora(model, 2)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n for n in trainable)
    assert len(trainable) == 2 * len(lora_layers(model))
    skips = skipped_layers(model)
    assert skips and all("depthwise" in r for r in skips.values())
    report = adaptsr.lora_report(model)
    assert report["skipped"] == skips
    assert report["total"] == sum(p.numel() for p in adapter_parameters(model))


def test_reparameterised_eval_conv_is_not_a_site():
    model = model_from_state_dict(MODELS["SPAN"].state_dict(), name="span")
    skipped = skipped_layers(model)
    assert any(k.endswith("eval_conv") and "reparameterised" in r for k, r in skipped.items())
    assert not any(s.name.endswith("eval_conv") for s in adaptsr.lora_sites(model))


def test_edsr_mean_shift_is_not_a_site():
    model = adaptsr.load_model("edsr-baseline-x4")
    names = {s.name for s in adaptsr.lora_sites(model)}
    assert "sub_mean" not in names and "head.0" in names
    assert "fixed mean shift" in skipped_layers(model)["sub_mean"]


def test_swinir_m_uniform_r8_matches_paper_count():
    """The paper trains about 886k parameters with uniform r=8 on SwinIR-M x4."""
    model = adaptsr.load_model("swinir-m-x4")
    adaptsr.inject_lora(model, 8)
    total = sum(p.numel() for p in adapter_parameters(model))
    assert abs(total - 886_000) / 886_000 < 0.02, total
    report = adaptsr.lora_report(model)
    assert report["capped"] == {"conv_first": [8, 3]}  # 3 input channels: rank <= 3


def test_uniform_rank_capped_and_map_errors():
    model = adaptsr.load_model("edsr-baseline-x4")
    ranks, capped = resolve_ranks(model, 4)
    assert capped == {"head.0": (4, 3)} and ranks["head.0"] == 3
    with pytest.raises(adaptsr.UserError, match="does not have"):
        adaptsr.inject_lora(model, {"nope.conv": 2})
    with pytest.raises(adaptsr.UserError, match=">= 0"):
        adaptsr.inject_lora(model, {"head.0": -1})
    with pytest.raises(adaptsr.UserError, match="useful rank 3"):
        adaptsr.inject_lora(model, {"head.0": 4})
    with pytest.raises(adaptsr.UserError, match="whole number"):
        adaptsr.inject_lora(model, {"head.0": 1.5})
    with pytest.raises(adaptsr.UserError, match="nothing to adapt"):
        adaptsr.inject_lora(model, {"head.0": 0})
    with pytest.raises(adaptsr.UserError, match="at least 1"):
        adaptsr.inject_lora(model, 0)
    assert not lora_layers(model)  # failed calls changed nothing


def test_adapter_file_roundtrip_and_refusals(tmp_path):
    model = adaptsr.load_model("safmn-x4")
    adaptsr.inject_lora(model, {"to_feat": 3, "feats.0.ccm.ccm.0": 4})
    randomise_adapters(model)
    path = adaptsr.save_adapter(model, tmp_path / "a.safetensors")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        keys = set(f.keys())
    assert json.loads(meta["ranks"]) == {"to_feat": 3, "feats.0.ccm.ccm.0": 4}
    assert meta["arch"] == "SAFMN" and meta["scale"] == "4" and meta["scaling"] == "alpha/r"
    assert keys == {f"{s}.lora_{m}" for s in ("to_feat", "feats.0.ccm.ccm.0") for m in "AB"}

    fresh = adaptsr.load_model("safmn-x4")
    adaptsr.load_adapter(fresh, path)
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), model(x), rtol=0, atol=0)

    other = adaptsr.build_model("safmn-x4", seed=1)  # same architecture, other weights
    with pytest.raises(adaptsr.UserError, match="another base model") as e:
        adaptsr.load_adapter(other, path)
    assert meta["base_fingerprint"] in str(e.value)
    assert adaptsr.base_fingerprint(other) in str(e.value)

    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(path.read_bytes()[:100])
    with pytest.raises(adaptsr.UserError, match="cannot read adapter"):
        adaptsr.load_adapter(adaptsr.load_model("safmn-x4"), corrupt)
    with pytest.raises(adaptsr.UserError, match="already exists"):
        adaptsr.save_adapter(model, path)


def test_merge_cli_writes_loadable_checkpoint(tmp_path, run_cli):
    model = adaptsr.load_model("safmn-x4")
    adaptsr.inject_lora(model, 2)
    randomise_adapters(model)
    adapter = adaptsr.save_adapter(model, tmp_path / "a.safetensors")
    out = tmp_path / "merged.safetensors"
    random_ok = "--allow-random-base"  # safmn-x4: a configuration with random weights
    args = ["--adapter", adapter, "--out", out, random_ok]
    code, stdout, err = run_cli("merge", "--model", "safmn-x4", *args)
    assert code == 0, err
    merged = adaptsr.load_model(out)
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(merged(x), model(x), rtol=1e-5, atol=1e-5)
    code, _, err = run_cli("merge", "--model", "safmn-x4", "--adapter", adapter, "--out", out)
    assert code != 0 and "already exists" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(
        "merge",
        "--model",
        "edsr-baseline-x4",
        "--adapter",
        adapter,
        "--out",
        tmp_path / "x.safetensors",
        random_ok,
    )
    assert code != 0 and "another base model" in err
    assert not (tmp_path / "x.safetensors").exists()


def test_report_counts_parameters_not_buffers():
    # SwinIR stores attention masks as buffers: they are not part of the base's size
    model = adaptsr.load_model("swinir-light-x4")
    base = sum(p.numel() for p in model.parameters())
    adaptsr.inject_lora(model, 2)
    assert adaptsr.lora_report(model)["base_params"] == base == 929_628


def test_damaged_rank_metadata_is_one_clear_error(tmp_path):
    from safetensors.torch import save_file

    from adaptsr.adapt.lora import ADAPTER_FORMAT

    path = tmp_path / "bad.safetensors"
    meta = {"format": ADAPTER_FORMAT, "ranks": "[1, 2]", "alpha": "1.0"}
    save_file({"x.lora_A": torch.zeros(1, 1)}, str(path), metadata=meta)
    with pytest.raises(adaptsr.UserError, match="damaged metadata"):
        adaptsr.load_adapter(adaptsr.load_model("safmn-x4"), path)


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


@pytest.mark.usefixtures("one_thread")
def test_non_finite_adapters_and_merges_are_refused(edsr_files, tmp_path, run_cli):
    from adaptsr.adapt.lora import inject_lora, merge_lora

    first = [True]

    def one_nan(key, t):
        if first[0] and "lora_A" in key:
            first[0] = False
            t = t.clone()
            t.view(-1)[0] = float("nan")
        return t

    nan = _rewrite_adapter(edsr_files["adapter"], tmp_path / "nan.safetensors", one_nan)
    inf = _rewrite_adapter(edsr_files["adapter"], tmp_path / "inf.safetensors", alpha="inf")
    huge = _rewrite_adapter(  # finite tensors whose product overflows fp32
        edsr_files["adapter"], tmp_path / "huge.safetensors", lambda k, t: torch.full_like(t, 3e30)
    )
    for adapter, words in ((nan, "NaN"), (inf, "alpha"), (huge, "NaN or infinite")):
        out = tmp_path / "merged.safetensors"
        code, _, err = run_cli(
            "merge", "--model", edsr_files["ckpt"], "--adapter", adapter, "--out", out
        )
        one_line(code, err, words)
        assert not out.exists()
        if adapter is not huge:
            code, _, err = run_cli(
                "upscale", edsr_files["images"], "--out", tmp_path / "up",
                "--model", edsr_files["ckpt"], "--adapter", adapter,
            )  # fmt: skip
            one_line(code, err)
            assert not (tmp_path / "up").exists()
            code, _, err = run_cli(
                "eval", "--model", edsr_files["ckpt"], "--adapter", adapter,
                "--hr", edsr_files["images"], "--degradation", "bicubic", "--no-perceptual",
                "--quiet",
            )  # fmt: skip
            one_line(code, err)
    with pytest.raises(UserError, match="positive finite"):
        inject_lora(one_block_edsr(), 2, alpha=float("inf"))
    model = inject_lora(one_block_edsr(), 2)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora" in name:
                p.fill_(3e30)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(UserError, match="NaN or infinite"):
        merge_lora(model)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # nothing merged
