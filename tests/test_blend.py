"""Blends of adapters of one base (adapt merge --adapter A:0.7 --adapter B:0.3, --strength):
base + sum_i s_i * dW_i folded into the weights, exact against an fp64 reference."""

import pytest
import torch
from fakes.models import write_random_adapter

import adaptsr
from adaptsr.adapt.adapter_file import AdapterFile
from adaptsr.adapt.lora import lora_layers
from adaptsr.adapt.merge_adapter import blend_adapters, parse_weighted
from adaptsr.adapt.open import ModelSpec, open_model

MODEL = "safmn-x4"
MERGE = ("merge", "--allow-random-base", "--model", MODEL)  # MODEL's weights are random
RANKS = {"to_feat": 3, "feats.0.ccm.ccm.0": 4, "feats.0.ccm.ccm.2": 2}


def fp64_deltas(path):
    """module path -> dW in fp64, from the file's tensors (independent of the merge code)."""
    adapter = AdapterFile.read(path)
    out = {}
    for site, r in adapter.meta.ranks.items():
        a = adapter.tensors[f"{site}.lora_A"].double()
        b = adapter.tensors[f"{site}.lora_B"].double()
        scale = adapter.meta.alpha / r
        out[site] = scale * torch.einsum("orhw,ri->oihw", b, a[:, :, 0, 0])
    return out


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    folder = tmp_path_factory.mktemp("adapters")
    return [
        write_random_adapter(folder / f"{n}.safetensors", seed, RANKS)
        for n, seed in (("a", 1), ("b", 2))
    ]


def test_blend_matches_the_fp64_sum(adapters):
    a, b = adapters
    weights = [(a, 0.7), (b, 0.3)]
    base = adaptsr.load_model(MODEL)
    net = blend_adapters(adaptsr.load_model(MODEL), [(AdapterFile.read(p), s) for p, s in weights])
    assert not lora_layers(net) and not hasattr(net, "adaptsr_lora")  # the base architecture
    deltas = [(fp64_deltas(p), s) for p, s in weights]
    base_state, state = base.state_dict(), net.state_dict()
    assert base_state.keys() == state.keys()
    for name, w in base_state.items():
        site = name.removesuffix(".weight")
        if site not in RANKS or not name.endswith(".weight"):
            assert torch.equal(state[name], w), name  # untouched: bit for bit
            continue
        want = w.double() + sum(s * d[site] for d, s in deltas)
        err = (state[name].double() - want).abs().max() / want.abs().max()
        assert err <= 1e-6, (name, err)
        assert (state[name] - w).abs().max() > 1e-4  # the blend acts


def test_strength_zero_is_the_base_and_one_is_todays_merge(adapters, tmp_path):
    a, _ = adapters
    base = adaptsr.load_model(MODEL)
    zero = blend_adapters(adaptsr.load_model(MODEL), [(AdapterFile.read(a), 0.0)])
    for (name, w), (_, z) in zip(base.state_dict().items(), zero.state_dict().items(), strict=True):
        assert w.numpy().tobytes() == z.numpy().tobytes(), name
    merged = adaptsr.load_adapter(adaptsr.load_model(MODEL), a)
    merged = adaptsr.merge_lora(merged)
    one = blend_adapters(adaptsr.load_model(MODEL), [(AdapterFile.read(a), 1.0)])
    for (name, w), (_, o) in zip(
        merged.state_dict().items(), one.state_dict().items(), strict=True
    ):
        assert w.numpy().tobytes() == o.numpy().tobytes(), name
    # half of a is the blend of a and "nothing": the update scales linearly
    half = blend_adapters(adaptsr.load_model(MODEL), [(AdapterFile.read(a), 0.5)])
    w0 = base.state_dict()["to_feat.weight"]
    torch.testing.assert_close(
        half.state_dict()["to_feat.weight"] - w0,
        0.5 * (one.state_dict()["to_feat.weight"] - w0),
        rtol=1e-5,
        atol=1e-7,
    )


def test_blends_of_another_base_or_layout_are_refused(adapters, tmp_path, run_cli):
    a, _ = adapters
    other_base = write_random_adapter(
        tmp_path / "o.safetensors", 3, RANKS, model=adaptsr.build_model(MODEL, seed=1)
    )
    other_sites = write_random_adapter(tmp_path / "s.safetensors", 4, {"to_feat": 3})
    out = tmp_path / "m.safetensors"
    for other, words in ((other_base, "different base models"), (other_sites, "different sites")):
        code, _, err = run_cli(
            *MERGE, "--adapter", f"{a}:0.5", "--adapter", f"{other}:0.5",
            "--out", out,
        )  # fmt: skip
        assert code == 1 and words in err and len(err.strip().splitlines()) == 1, err
        assert not out.exists()
    # one adapter on another base: the adapter file's own refusal, one line
    code, _, err = run_cli(*MERGE, "--adapter", other_base, "--out", out)
    assert code == 1 and "another base model" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(*MERGE, "--adapter", f"{a}:0.5", "--strength", "0.3", "--out", out)
    assert code == 1 and "--strength" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(*MERGE, "--adapter", a, "--adapter", a, "--strength", "1", "--out", out)
    assert code == 1 and "--strength goes with one --adapter" in err


def test_merge_cli_blend_and_strength(adapters, tmp_path, run_cli):
    a, b = adapters
    out = tmp_path / "blend.safetensors"
    code, stdout, err = run_cli(
        *MERGE, "--adapter", f"{a}:0.7", "--adapter", f"{b}:0.3", "--out", out
    )
    assert code == 0, err
    assert "from 2 adapter files" in stdout
    want = blend_adapters(
        adaptsr.load_model(MODEL), [(AdapterFile.read(a), 0.7), (AdapterFile.read(b), 0.3)]
    )
    got = adaptsr.load_model(out)
    for (name, w), (_, g) in zip(want.state_dict().items(), got.state_dict().items(), strict=True):
        assert torch.equal(w, g), name
    out2 = tmp_path / "strength.safetensors"
    code, _, err = run_cli(*MERGE, "--adapter", a, "--strength", "0", "--out", out2)
    assert code == 0, err
    base = adaptsr.load_model(MODEL)
    for (name, w), (_, g) in zip(
        base.state_dict().items(), adaptsr.load_model(out2).state_dict().items(), strict=True
    ):
        assert torch.equal(w, g), name


def test_parse_weighted():
    assert parse_weighted("a.safetensors:0.7") == ("a.safetensors", 0.7)
    assert parse_weighted("a.safetensors") == ("a.safetensors", None)
    assert parse_weighted("C:/x/a.safetensors") == ("C:/x/a.safetensors", None)
    with pytest.raises(adaptsr.UserError, match="finite"):
        parse_weighted("a.safetensors:nan")


def test_upscale_strength_runs_the_blended_weights(adapters):
    a, _ = adapters
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    want = blend_adapters(adaptsr.load_model(MODEL), [(AdapterFile.read(a), 0.4)])
    backend = open_model(ModelSpec.from_options(MODEL, str(a), strength=0.4), device="cpu")
    with torch.no_grad():
        torch.testing.assert_close(backend.model(x), want.eval()(x), rtol=0, atol=0)
    assert backend.name.endswith("@0.4")
    with pytest.raises(adaptsr.UserError, match="--strength needs --adapter"):
        ModelSpec.from_options(MODEL, None, strength=0.5)


def test_export_plan_carries_the_strength(adapters, tmp_path):
    from adaptsr.export.onnx import load_merged
    from adaptsr.export.plan import plan_export

    a, _ = adapters
    out, ok = tmp_path / "m.onnx", {"allow_random_base": True}  # MODEL's weights are random
    plan = plan_export(out, model=MODEL, adapter=str(a), dynamic=True, strength=0.3, **ok)
    assert plan.strength == 0.3
    assert plan_export(out, model=MODEL, adapter=str(a), dynamic=True, **ok).strength == 1
    with pytest.raises(adaptsr.UserError, match="--strength needs --merged --adapter"):
        plan_export(out, model=MODEL, dynamic=True, strength=0.3, **ok)
    merged, _ = load_merged(MODEL, a, plan.strength)
    want = blend_adapters(adaptsr.load_model(MODEL), [(AdapterFile.read(a), 0.3)])
    for (name, w), (_, g) in zip(
        want.state_dict().items(), merged.state_dict().items(), strict=True
    ):
        assert torch.equal(w, g), name
