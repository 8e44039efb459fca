"""Site scores for rank allocation (adaptsr.adapt.site_scores): grad, Fisher and activation
scores against manual autograd, seeded random scores, Spearman against scipy."""

import math

import fakes.models
import pytest
import torch
import torch.nn.functional as F
from fakes.models import Tiny, tiny_batches
from hypothesis import given, settings
from hypothesis import strategies as st

from adaptsr.adapt.lora import lora_sites
from adaptsr.adapt.site_scores import score_sites, spearman
from adaptsr.core.errors import UserError


def tiny_edsr():
    return fakes.models.tiny_edsr(n_resblocks=1, n_feats=8)  # one block of 8 features


def manual_grad_norms(model, batches):
    """Per batch, ||dL/dW|| of every site, in fp64 with plain .backward() on all parameters."""
    ref = Tiny()
    ref.load_state_dict(model.state_dict())
    ref.double()
    rows = []
    for lr, hr in batches:
        ref.zero_grad()
        F.l1_loss(ref(lr.double()), hr.double()).backward()
        g_qkv = ref.attn.qkv.weight.grad
        c = ref.c
        rows.append(
            {
                "head": ref.head.weight.grad.norm().item(),
                "attn.qkv.q": g_qkv[:c].norm().item(),
                "attn.qkv.k": g_qkv[c : 2 * c].norm().item(),
                "attn.qkv.v": g_qkv[2 * c :].norm().item(),
                "attn.proj": ref.attn.proj.weight.grad.norm().item(),
                "mlp.fc1": ref.mlp.fc1.weight.grad.norm().item(),
                "mlp.fc2": ref.mlp.fc2.weight.grad.norm().item(),
                "tail": ref.tail.weight.grad.norm().item(),
            }
        )
    return rows


def test_grad_and_fisher_scores_match_manual_autograd():
    torch.manual_seed(0)
    model = Tiny()
    batches = tiny_batches()
    rows = manual_grad_norms(model, batches)
    names = [s.name for s in lora_sites(model)]
    assert sorted(names) == sorted(rows[0])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    grad = score_sites(model, batches, "grad")
    fisher = score_sites(model, batches, "fisher")
    size = score_sites(model, batches, "grad", normalise="size")
    for n in names:
        expected = sum(r[n] for r in rows) / len(rows)
        assert grad.scores[n] == pytest.approx(expected, rel=1e-4)
        assert fisher.scores[n] == pytest.approx(sum(r[n] ** 2 for r in rows) / len(rows), rel=1e-4)
    sites = {s.name: s for s in lora_sites(model)}
    assert size.scores["attn.qkv.q"] == pytest.approx(
        grad.scores["attn.qkv.q"] / math.sqrt(8 * 8), rel=1e-9
    )
    assert sites["attn.qkv.q"].base_params == 64
    # q, k and v really are scored separately
    assert len({grad.scores[f"attn.qkv.{p}"] for p in "qkv"}) == 3
    # the model is left as it was: weights, flags, mode, no .grad
    assert model.training
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    # stability: the reported rho is Spearman between even and odd batches
    even = [sum(r[n] for r in rows[0::2]) / 2 for n in names]
    odd = [sum(r[n] for r in rows[1::2]) / 2 for n in names]
    assert grad.rho == pytest.approx(spearman(even, odd))


def test_activation_scores_are_input_norms():
    torch.manual_seed(1)
    model = Tiny()
    batches = tiny_batches(n=2, b=3)
    got = score_sites(model, batches, "activation")
    rms = score_sites(model, batches, "activation", normalise="size")
    head = [lr.double().norm().item() / math.sqrt(len(lr)) for lr, _ in batches]
    assert got.scores["head"] == pytest.approx(sum(head) / 2, rel=1e-6)
    assert rms.scores["head"] == pytest.approx(
        sum(lr.double().pow(2).mean().sqrt().item() for lr, _ in batches) / 2, rel=1e-6
    )
    # q, k and v share their input
    assert got.scores["attn.qkv.q"] == got.scores["attn.qkv.k"] == got.scores["attn.qkv.v"]
    with torch.no_grad():  # fc2's input, computed independently
        lr = batches[0][0]
        t = model.head(lr).flatten(2).transpose(1, 2)
        q, k, v = model.attn.qkv(t).chunk(3, dim=-1)
        t = t + model.attn.proj(torch.softmax(q @ k.transpose(1, 2) / 8**0.5, -1) @ v)
        x = F.gelu(model.mlp.fc1(t))
    assert got.per_batch[0]["mlp.fc2"] == pytest.approx(x.norm().item() / math.sqrt(3), rel=1e-5)


def test_random_scores_seeded_and_need_no_data():
    model = Tiny()
    a = score_sites(model, None, "random", seed=3)
    assert a.scores == score_sites(model, None, "random", seed=3).scores
    assert a.scores != score_sites(model, None, "random", seed=4).scores
    with pytest.raises(UserError, match="need data"):
        score_sites(model, None, "grad")
    with pytest.raises(UserError, match="no batches"):
        score_sites(model, [], "grad")


def test_scores_on_a_real_sr_model_and_shape_mismatch():
    model = tiny_edsr()
    res = score_sites(model, tiny_batches(n=2, size=8), "grad")
    assert set(res.scores) == {s.name for s in lora_sites(model)}
    assert all(v > 0 for v in res.scores.values())
    wrong = [(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))]
    with pytest.raises(UserError, match="does not match"):
        score_sites(model, wrong, "grad")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4)), min_size=2, max_size=12))
def test_spearman_matches_scipy(pairs):
    from scipy.stats import spearmanr

    a, b = [float(x) for x, _ in pairs], [float(y) for _, y in pairs]
    got = spearman(a, b)
    if len(set(a)) == 1 or len(set(b)) == 1:
        assert got is None
    else:
        assert got == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)
