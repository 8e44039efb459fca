"""A blend written as one adapter file (adapt merge --blend-out): ranks concatenated (or the
summed update at full rank where the concatenated rank passes the useful one), exact against
the fp64 sum of the components, loadable and blendable again."""

import math

import pytest
import torch
from fakes.models import write_random_adapter

import adaptsr
from adaptsr.adapt.adapter_file import AdapterFile
from adaptsr.adapt.blend_file import _dense_pair, blend_components
from adaptsr.adapt.difffit import inject_difffit
from adaptsr.adapt.merge_adapter import blend_adapters
from adaptsr.adapt.open import ModelSpec, open_model

MODEL = "safmn-x4"
MERGE = ("merge", "--allow-random-base", "--model", MODEL)  # MODEL's weights are random
# to_feat: useful rank 3 (3 + 2 > 3: the summed update, A the identity); ccm.2 a 1x1 conv
# 72 -> 36, useful rank 36 (20 + 30 > 36: B the identity); ccm.0: concatenated (4 + 4)
RANKS_A = {"to_feat": 3, "feats.0.ccm.ccm.0": 4, "feats.0.ccm.ccm.2": 20}
RANKS_B = {"to_feat": 2, "feats.0.ccm.ccm.0": 4, "feats.0.ccm.ccm.2": 30}


def fp64_deltas(path):
    """site -> dW in fp64 from the file's tensors and metadata (written here, independently)."""
    adapter = AdapterFile.read(path)
    m = adapter.meta
    out = {}
    for site, r in m.ranks.items():
        a = adapter.tensors[f"{site}.lora_A"].double()[:, :, 0, 0]
        b = adapter.tensors[f"{site}.lora_B"].double()
        scale = m.alpha / (r if m.scaling == "alpha/r" else math.sqrt(r))
        out[site] = scale * torch.einsum("orhw,ri->oihw", b, a)
    return out


def assert_weights(net, blend):
    """net's weights == base + sum s_i dW_i (fp64) to 1e-6 relative; others bit for bit."""
    base = adaptsr.load_model(MODEL).state_dict()
    deltas = [(fp64_deltas(p), s) for p, s in blend]
    state = net.state_dict()
    assert state.keys() == base.keys()
    for name, w in base.items():
        site = name.removesuffix(".weight")
        if site not in RANKS_A or not name.endswith(".weight"):
            assert torch.equal(state[name], w), name
            continue
        want = w.double() + sum(s * d[site] for d, s in deltas)
        err = (state[name].double() - want).abs().max() / want.abs().max()
        assert err <= 1e-6, (name, err)
        assert (state[name] - w).abs().max() > 1e-4


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    folder = tmp_path_factory.mktemp("blend")
    a = write_random_adapter(folder / "a.safetensors", 1, RANKS_A)
    b = write_random_adapter(
        folder / "b.safetensors", 2, RANKS_B, alpha=2.0, scaling="alpha/sqrt(r)"
    )
    return a, b


def test_blend_file_is_exact_loads_and_blends_again(adapters, tmp_path, run_cli):
    a, b = adapters
    out = tmp_path / "blend.safetensors"
    code, stdout, err = run_cli(
        *MERGE, "--adapter", f"{a}:0.7", "--adapter", f"{b}:0.3",
        "--blend-out", out,
    )  # fmt: skip
    assert code == 0, err
    assert "2 at their full rank" in stdout
    meta = AdapterFile.read(out).meta
    assert meta.ranks == {"to_feat": 3, "feats.0.ccm.ccm.0": 8, "feats.0.ccm.ccm.2": 36}
    assert [(c["file"], c["weight"]) for c in blend_components(out)] == [
        ("a.safetensors", 0.7),
        ("b.safetensors", 0.3),
    ]
    assert blend_components(a) == []
    merged = adaptsr.merge_lora(adaptsr.load_adapter(adaptsr.load_model(MODEL), out))
    assert_weights(merged, [(a, 0.7), (b, 0.3)])
    # blended again: 0.5 * (0.7 a + 0.3 b) + 0.5 a
    again = blend_adapters(
        adaptsr.load_model(MODEL), [(AdapterFile.read(out), 0.5), (AdapterFile.read(a), 0.5)]
    )
    assert_weights(again, [(a, 0.85), (b, 0.15)])
    # adapt upscale --adapter takes it like any adapter
    backend = open_model(ModelSpec.from_options(MODEL, str(out)), device="cpu")
    x = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(backend.model(x), merged.eval()(x), rtol=1e-4, atol=1e-5)


def test_blend_file_with_the_merged_checkpoint(adapters, tmp_path, run_cli):
    a, _ = adapters
    out, blend = tmp_path / "m.safetensors", tmp_path / "s.safetensors"
    code, stdout, err = run_cli(
        *MERGE, "--adapter", a, "--strength", "0.4", "--out", out,
        "--blend-out", blend,
    )  # fmt: skip
    assert code == 0, err
    assert out.is_file() and blend.is_file()
    merged = adaptsr.merge_lora(adaptsr.load_adapter(adaptsr.load_model(MODEL), blend))
    assert_weights(merged, [(a, 0.4)])


def test_blend_file_refusals(adapters, tmp_path, run_cli):
    a, _ = adapters
    other_sites = write_random_adapter(tmp_path / "s.safetensors", 4, {"to_feat": 3})
    net = adaptsr.load_model(MODEL)
    inject_difffit(net)
    difffit = adaptsr.save_adapter(net, tmp_path / "d.safetensors")
    out = tmp_path / "blend.safetensors"
    cases = [
        (["--adapter", f"{a}:0.5", "--adapter", f"{other_sites}:0.5"], "different sites"),
        (["--adapter", difffit], "DiffFit adapter"),
        (["--adapter", f"{a}:0.5", "--adapter", f"{difffit}:0.5"], "DiffFit adapter"),
    ]
    for args, words in cases:
        code, _, err = run_cli(*MERGE, *args, "--blend-out", out)
        assert code == 1 and words in err and len(err.strip().splitlines()) == 1, err
        assert not out.exists()
    code, _, err = run_cli(*MERGE, "--adapter", a)
    assert code == 1 and "--blend-out" in err and len(err.strip().splitlines()) == 1
    bad = tmp_path / "blend.pth"
    code, _, err = run_cli(*MERGE, "--adapter", a, "--blend-out", bad)
    assert code == 1 and ".safetensors" in err and not bad.exists()
    code, _, err = run_cli(*MERGE, "--adapter", a, "--blend-out", out, "--out", out)
    assert code == 1 and "same place" in err


@pytest.mark.parametrize(
    "shape", [(5, 3), (3, 5), (4, 3, 3, 3), (2, 30, 3, 3), (6, 10, 1, 1), (10, 6, 1, 1)]
)
def test_dense_pair_factors_the_update_exactly(shape):
    delta = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a, b = _dense_pair(delta, 0.25)
    out, inp = shape[:2]
    k2 = math.prod(shape[2:])
    assert a.shape[0] == b.shape[1] == min(inp, out * k2)  # the site's useful rank
    if delta.ndim == 4:
        got = 0.25 * torch.einsum("orhw,ri->oihw", b, a[:, :, 0, 0])
    else:
        got = 0.25 * (b @ a)
    torch.testing.assert_close(got, delta, rtol=1e-15, atol=1e-15)
