import copy
import json
import math

import fakes.models
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import adaptsr
from adaptsr.adapt.allocate import (
    allocate,
    allocate_ranks,
    entry_batches,
    image_batches,
    parse_budget,
)
from adaptsr.adapt.lora import Site, lora_sites
from adaptsr.adapt.models import model_from_state_dict
from adaptsr.adapt.rankmap import (
    RANK_MAP_FORMAT,
    RankAllocation,
    rank_grid,
    read_rank_map,
    site_column,
    site_row,
    summary_table,
    write_rank_map,
)
from adaptsr.adapt.site_scores import score_sites, spearman
from adaptsr.core.errors import UserError


class Tiny(nn.Module):
    """A x2 SR net with a conv, a fused-qkv attention and an MLP (every kind of site)."""

    def __init__(self, c=8, scale=2):
        super().__init__()
        self.c = c
        self.head = nn.Conv2d(3, c, 3, padding=1)
        self.attn = nn.Module()
        self.attn.qkv = nn.Linear(c, 3 * c)
        self.attn.proj = nn.Linear(c, c)
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(c, 2 * c)
        self.mlp.fc2 = nn.Linear(2 * c, c)
        self.tail = nn.Conv2d(c, 3 * scale * scale, 3, padding=1)
        self.up = nn.PixelShuffle(scale)

    def forward(self, x):
        f = self.head(x)
        t = f.flatten(2).transpose(1, 2)
        q, k, v = self.attn.qkv(t).chunk(3, dim=-1)
        a = torch.softmax(q @ k.transpose(1, 2) / self.c**0.5, dim=-1) @ v
        t = t + self.attn.proj(a)
        t = t + self.mlp.fc2(F.gelu(self.mlp.fc1(t)))
        return self.up(self.tail(t.transpose(1, 2).reshape(f.shape)))


def tiny_batches(n=4, b=2, size=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        (
            torch.rand(b, 3, size, size, generator=g),
            torch.rand(b, 3, 2 * size, 2 * size, generator=g),
        )
        for _ in range(n)
    ]


def tiny_edsr():
    return fakes.models.tiny_edsr(n_resblocks=1, n_feats=8)  # one block of 8 features


def write_png(path, array):
    import cv2

    cv2.imwrite(str(path), (np.clip(array, 0, 1) * 255).round().astype(np.uint8))


def make_images(folder, n=3, size=40, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        base = rng.random((size // 8, size // 8, 3))
        img = np.kron(base, np.ones((8, 8, 1))) + 0.1 * rng.random((size, size, 3))
        write_png(folder / f"img{i}.png", img)
    return folder


# ---------------------------------------------------------------------------------------------
# scores


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


# ---------------------------------------------------------------------------------------------
# allocation properties


def site_strategy():
    dims = st.sampled_from([1, 3, 8, 24, 64, 180, 360, 1000])
    return st.builds(
        lambda d_in, d_out, k, n: Site(
            f"s{n}", "conv" if k > 1 else "linear", f"s{n}", d_in, d_out, k
        ),
        dims,
        dims,
        st.sampled_from([1, 1, 3]),
        st.just(0),
    )


@st.composite
def problems(draw):
    n = draw(st.integers(1, 14))
    sites = []
    for i in range(n):
        s = draw(site_strategy())
        sites.append(Site(f"s{i}", s.kind, f"s{i}", s.d_in, s.d_out, s.kernel))
    # few distinct values: many ties
    values = draw(
        st.lists(st.sampled_from([0.0, 0.5, 1.0, 1.0, 2.0, 1e-9, 7.5]), min_size=n, max_size=n)
    )
    scores = {s.name: v for s, v in zip(sites, values, strict=True)}
    r_min = draw(st.integers(0, 3))
    r_max = draw(st.integers(max(1, r_min), 40))
    floor = sum(min(r_min, s.max_rank) * s.cost_per_rank for s in sites)
    top = sum(min(r_max, s.max_rank) * s.cost_per_rank for s in sites)
    cheapest = min(s.cost_per_rank for s in sites)
    budget = draw(
        st.integers(max(1, floor, cheapest if floor == 0 else 1), int(top * 1.2) + cheapest)
    )
    return sites, scores, budget, r_min, r_max, draw(st.integers(0, 5))


@settings(max_examples=250, deadline=None)
@given(problems(), st.sampled_from(["paper", "marginal"]))
def test_allocation_properties(problem, method):
    sites, scores, budget, r_min, r_max, seed = problem
    ranks = allocate(sites, scores, budget, r_min, r_max, method, seed)
    assert ranks == allocate(sites, scores, budget, r_min, r_max, method, seed)  # deterministic
    cost = {s.name: s.cost_per_rank for s in sites}
    hi = {s.name: min(r_max, s.max_rank) for s in sites}
    used = sum(ranks[n] * cost[n] for n in ranks)
    assert used <= budget
    for s in sites:
        assert min(r_min, s.max_rank) <= ranks[s.name] <= hi[s.name]
        if ranks[s.name] < hi[s.name]:  # one more rank here would not fit
            assert budget - used < cost[s.name]
    for a in sites:
        for b in sites:
            if cost[a.name] == cost[b.name] and scores[a.name] > scores[b.name]:
                assert ranks[a.name] >= min(ranks[b.name], hi[a.name]), (a, b)


def test_paper_allocator_fills_from_the_top():
    sites = [Site(f"s{i}", "linear", f"s{i}", 10, 10, 1) for i in range(5)]  # 20 per rank
    scores = {"s0": 0.1, "s1": 0.9, "s2": 0.5, "s3": 0.7, "s4": 0.3}
    ranks = allocate(sites, scores, 20 * (5 + 4 + 4 + 2), r_min=1, r_max=5, method="paper")
    assert ranks == {"s1": 5, "s3": 5, "s2": 3, "s4": 1, "s0": 1}
    # marginal: gains a: 1, .41, .32, .27, .24, .21 ...; b: .5, .21, ...: the 6 best steps give
    # a five ranks and b one, where the paper's fill gives a all six.
    pair = sites[:2]
    scores = {"s0": 1.0, "s1": 0.5}
    assert allocate(pair, scores, 20 * 6, 0, 10, "marginal") == {"s0": 5, "s1": 1}
    assert allocate(pair, scores, 20 * 6, 0, 10, "paper") == {"s0": 6, "s1": 0}


def test_ties_follow_the_seed():
    sites = [Site(f"s{i}", "linear", f"s{i}", 10, 10, 1) for i in range(6)]
    scores = dict.fromkeys((s.name for s in sites), 1.0)
    maps = {
        tuple(allocate(sites, scores, 20 * 3, 0, 1, "paper", seed).values()) for seed in range(20)
    }
    assert len(maps) > 1  # equal scores: which sites win depends on the seed


def test_allocation_errors():
    sites = [Site("a", "linear", "a", 10, 10, 1), Site("b", "conv", "b", 4, 4, 3)]  # 20, 40
    scores = {"a": 1.0, "b": 2.0}
    with pytest.raises(UserError, match="r_min=1 at every site costs"):
        allocate(sites, scores, 59, r_min=1)
    with pytest.raises(UserError, match="below one rank at the cheapest site"):
        allocate(sites, scores, 19, r_min=0)
    assert allocate(sites, scores, 20, r_min=0) == {"a": 1, "b": 0}
    with pytest.raises(UserError, match="no conv or linear"):
        allocate([], {}, 100)
    with pytest.raises(UserError, match="r_max"):
        allocate(sites, scores, 100, r_min=3, r_max=2)
    with pytest.raises(UserError, match="finite"):
        allocate(sites, {"a": float("nan"), "b": 1.0}, 100)
    with pytest.raises(UserError, match="no score"):
        allocate(sites, {"a": 1.0}, 100)
    with pytest.raises(UserError, match="no conv or linear"):
        allocate_ranks(nn.Sequential(nn.ReLU()), None, 1000, score="random")


# ---------------------------------------------------------------------------------------------
# budgets, SwinIR-M


def test_parse_budget():
    model = tiny_edsr()
    n = sum(p.numel() for p in model.parameters())
    assert parse_budget("886000", model)[0] == 886000
    assert parse_budget("886k", model)[0] == 886000
    assert parse_budget("1.2M", model)[0] == 1_200_000  # exact, not 1199999
    assert parse_budget(" 0.3m ", model)[0] == 300_000
    assert parse_budget(5000, model)[0] == 5000
    assert parse_budget("8%", model)[0] == int(0.08 * n)
    reference = adaptsr.inject_lora(tiny_edsr(), 4)  # capping at each site's useful rank
    assert parse_budget("r4", model)[0] == adaptsr.lora_report(reference)["total"]
    for bad in ("abc", "0", "-5", "r0", "150%", "0%", "1.2G", "", "8 %%", "1e6"):
        with pytest.raises(UserError, match="budget"):
            parse_budget(bad, model)


@pytest.fixture(scope="module")
def swinir_m():
    return adaptsr.build_model("swinir-m-x4")


@pytest.mark.parametrize("method", ["paper", "marginal"])
def test_swinir_m_budget_r8_is_used(swinir_m, method):
    alloc = allocate_ranks(swinir_m, None, "r8", score="random", allocator=method, seed=1)
    assert 0.99 * alloc.budget <= alloc.used <= alloc.budget
    sites = {s.name: s for s in lora_sites(swinir_m)}
    assert alloc.used == sum(r * sites[n].cost_per_rank for n, r in alloc.ranks.items())
    assert len(alloc.ranks) == len(sites) == 228
    assert getattr(swinir_m, "adaptsr_lora", None) is None  # not injected by allocation


def test_swinir_m_r8_budget_matches_uniform_injection(swinir_m):
    budget, _ = parse_budget("r8", swinir_m)
    injected = adaptsr.inject_lora(copy.deepcopy(swinir_m), 8)
    assert budget == adaptsr.lora_report(injected)["total"]


# ---------------------------------------------------------------------------------------------
# outputs


def small_swinir():
    from spandrel.architectures.SwinIR import SwinIR

    torch.manual_seed(0)
    net = SwinIR(
        upscale=2,
        img_size=16,
        window_size=4,
        embed_dim=12,
        depths=[2, 2],
        num_heads=[2, 2],
        mlp_ratio=2.0,
        upsampler="pixelshuffledirect",
        img_range=1.0,
    )
    return model_from_state_dict(net.state_dict(), name="small-swinir")


def test_heatmap_grid_layout():
    model = small_swinir()
    sites = lora_sites(model)
    ranks = {s.name: i % 5 for i, s in enumerate(sites)}
    rows, cols, cells = rank_grid(sites, ranks)
    assert cols == ["conv", "q", "k", "v", "o", "fc1", "fc2"]
    assert "layers.1.residual_group.blocks.1" in rows and "layers.1" in rows
    assert "conv_first" in rows
    assert sorted(site for site, _ in cells.values()) == sorted(s.name for s in sites)
    for (row, col), (name, rank) in cells.items():
        site = next(s for s in sites if s.name == name)
        assert row == site_row(site) and col.split("#")[0] == site_column(site)
        assert rank == ranks[name]
    q = next(s for s in sites if s.name == "layers.0.residual_group.blocks.1.attn.qkv.q")
    assert cells[("layers.0.residual_group.blocks.1", "q")][0] == q.name
    edsr_rows, edsr_cols, _ = rank_grid(lora_sites(tiny_edsr()), {})
    assert "body.0" in edsr_rows and edsr_cols == ["conv", "conv#2"]


def test_rank_map_file_heatmap_and_inject(tmp_path):
    model = small_swinir()
    alloc = allocate_ranks(
        model, None, "r2", score="random", allocator="marginal", r_min=0, settings={"model": "x"}
    )
    path, png = write_rank_map(alloc, tmp_path / "ranks.json")
    assert png == tmp_path / "ranks.png"
    data = json.loads(path.read_text())
    assert data["ranks"] == alloc.ranks and data["used_params"] == alloc.used
    assert data["budget"]["params"] == alloc.budget and data["settings"]["allocator"] == "marginal"
    assert set(data["scores"]) == set(data["ranks"]) == set(data["sites"])
    import cv2

    image = cv2.imread(str(png))
    assert image is not None and image.shape[0] > 100 and image.std() > 10  # a real picture
    with pytest.raises(UserError, match="already exists"):
        write_rank_map(alloc, path)
    adaptsr.inject_lora(model, read_rank_map(path))
    assert adaptsr.lora_report(model)["total"] == alloc.used
    text = summary_table(alloc)
    assert "total:" in text and f"{alloc.used:,}" in text


def test_read_rank_map_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match="cannot read"):
        read_rank_map(bad)
    bad.write_text(json.dumps({"ranks": {"a": -1}}))
    with pytest.raises(UserError, match="whole number"):
        read_rank_map(bad)
    bad.write_text(json.dumps({"scores": {}}))
    with pytest.raises(UserError, match="'ranks'"):
        read_rank_map(bad)


def test_rank_allocation_is_the_one_schema(tmp_path):
    from dataclasses import replace

    alloc = allocate_ranks(small_swinir(), None, "r2", score="random", settings={"model": "x"})
    assert RankAllocation.from_dict(alloc.to_dict()) == replace(alloc, warnings=[])
    path, _ = write_rank_map(alloc, tmp_path / "full.json", heatmap=False)
    assert RankAllocation.read(path) == replace(alloc, warnings=[])
    assert not (tmp_path / "full.png").exists()
    # hand-written: only ranks; every other field is there, empty
    hand = RankAllocation.from_dict({"ranks": {"a": 2, "b": 0}}, "hand.json")
    assert hand.adapted == {"a": 2} and hand.sites == [] and hand.budget is None
    data = hand.to_dict()
    assert set(data) == set(alloc.to_dict()) and data["format"] == RANK_MAP_FORMAT
    empty = (data["scores"], data["sites"], data["budget"], data["used_params"], data["source"])
    assert empty == ({}, {}, None, None, None)
    assert RankAllocation.from_dict(data) == hand
    with pytest.raises(UserError, match="without site details has no heatmap"):
        write_rank_map(hand, tmp_path / "hand.json")
    for bad, message in [
        ({"format": "other-1", "ranks": {"a": 1}}, "unknown format 'other-1'"),
        ({"ranks": {"a": 1}, "scores": {"a": "high"}}, "'scores' has the wrong type"),
        ({"ranks": {"a": 1}, "budget": {"params": -5}}, "'budget' has the wrong type"),
        ({"ranks": {"a": 1}, "sites": {"a": {"kind": "conv"}}}, "'sites' has the wrong type"),
        ({"ranks": {"a": 1.5}}, "rank of a must be a whole number"),
        ([1, 2], "no rank map under the key 'ranks'"),
    ]:
        with pytest.raises(UserError, match=message):
            RankAllocation.from_dict(bad, "m.json")


def test_reduce_sets_the_scores_that_are_allocated():
    model = tiny_edsr()
    sites = lora_sites(model)
    top = sites[-1].name

    def only_top(scores):  # e.g. what averaging over processes could give
        assert set(scores) == {s.name for s in sites}
        return {k: 1.0 if k == top else 1e-3 for k in scores}

    alloc = allocate_ranks(model, tiny_batches(2), "r2", r_max=4, reduce=only_top)
    assert alloc.scores == {k: 1.0 if k == top else 1e-3 for k in alloc.ranks}
    assert alloc.ranks[top] == min(4, sites[-1].max_rank)


# ---------------------------------------------------------------------------------------------
# data


def test_image_batches_hr_only_and_paired(tmp_path):
    import cv2

    make_images(tmp_path / "hr", n=2, size=40)
    got = list(image_batches(tmp_path / "hr", 2, count=3, batch=2, patch=16, degradation="bicubic"))
    assert len(got) == 3
    lr, hr = got[0]
    assert lr.shape == (2, 3, 8, 8) and hr.shape == (2, 3, 16, 16)
    from adaptsr.adapt.imresize import imresize

    assert torch.allclose(lr, (imresize(hr, 0.5).clamp(0, 1) * 255).round() / 255, atol=1e-6)
    again = list(
        image_batches(tmp_path / "hr", 2, count=3, batch=2, patch=16, degradation="bicubic")
    )
    assert all(torch.equal(a[1], b[1]) for a, b in zip(got, again, strict=True))  # seeded

    # DIV2K-style pairs, and the same pairs as --lr-dir/--hr-dir
    root = tmp_path / "div2k"
    make_images(root / "X_train_HR", n=2, size=32)
    (root / "X_train_LR_bicubic" / "X2").mkdir(parents=True)
    for p in (root / "X_train_HR").iterdir():
        small = cv2.resize(cv2.imread(str(p)), (16, 16), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(root / "X_train_LR_bicubic" / "X2" / f"{p.stem}x2.png"), small)
    lr_dir, hr_dir = root / "X_train_LR_bicubic" / "X2", root / "X_train_HR"
    for batches in (
        image_batches(root, 2, count=2, batch=3, patch=16),
        image_batches(None, 2, count=2, batch=3, patch=16, lr_dir=lr_dir, hr_dir=hr_dir),
    ):
        for lr, hr in batches:
            assert lr.shape == (3, 3, 8, 8) and hr.shape == (3, 3, 16, 16)
            # the LR crop is the area-downscaled HR crop (both 8-bit)
            assert (F.avg_pool2d(hr, 2) - lr).abs().max() < 2.5 / 255


def test_entry_batches_slices_for_processes(tmp_path):
    from types import SimpleNamespace

    from adaptsr.adapt.data import scan

    make_images(tmp_path / "hr", n=3, size=40)
    found = scan([tmp_path / "hr"], 2, 16)
    common = dict(scale=2, count=2, batch=4, patch=16, degradation="realesrgan", seed=5)

    def drawn(dist=None):
        return list(entry_batches(found.entries, False, **common, device="cpu", dist=dist))

    whole = drawn()
    for (lr, hr), (lr2, hr2) in zip(whole, image_batches(tmp_path / "hr", **common), strict=True):
        assert torch.equal(lr, lr2) and torch.equal(hr, hr2)  # what `adapt allocate` draws
    slices = [drawn(SimpleNamespace(rank=r, world=2)) for r in (0, 1)]
    for i, (_, hr) in enumerate(whole):
        assert torch.equal(torch.cat([slices[0][i][1], slices[1][i][1]]), hr)
        assert slices[0][i][0].shape == (2, 3, 8, 8)
    with pytest.raises(UserError, match="no image is large enough for 48x48"):
        entry_batches(found.entries, False, 2, 1, 1, 48, "bicubic", 0, "cpu")


def test_image_batch_errors(tmp_path):
    make_images(tmp_path / "hr", n=1, size=24)
    with pytest.raises(UserError, match="multiple of the model's scale"):
        image_batches(tmp_path / "hr", 4, patch=18)
    with pytest.raises(UserError, match="do not suit"):
        image_batches(tmp_path / "hr", 2, patch=20, lr_multiple=8)
    with pytest.raises(UserError, match="smaller than the crop"):
        image_batches(tmp_path / "hr", 2, patch=32, degradation="bicubic")
    with pytest.raises(UserError, match="no such folder"):
        image_batches(tmp_path / "missing", 2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images"):
        image_batches(tmp_path / "empty", 2)


# ---------------------------------------------------------------------------------------------
# CLI


@pytest.fixture
def cli_setup(tmp_path):
    checkpoint = tmp_path / "tiny.safetensors"
    adaptsr.save_model(tiny_edsr(), checkpoint)
    data = make_images(tmp_path / "data", n=3, size=40)
    return checkpoint, data, tmp_path


def test_cli_allocate(cli_setup, run_cli):
    checkpoint, data, tmp = cli_setup
    out = tmp / "maps" / "ranks.json"
    args = [
        "allocate",
        "--model",
        checkpoint,
        "--data",
        data,
        "--budget",
        "r2",
        "--out",
        out,
        "--batches",
        "2",
        "--batch",
        "2",
        "--patch",
        "16",
        "--degradation",
        "bicubic",
    ]
    code, stdout, stderr = run_cli(*args)
    assert code == 0, stderr
    assert "total:" in stdout and "conv" in stdout
    data_json = json.loads(out.read_text())
    model = adaptsr.load_model(checkpoint)
    assert set(data_json["ranks"]) == {s.name for s in lora_sites(model)}
    assert data_json["used_params"] <= data_json["budget"]["params"]
    assert data_json["settings"]["score"] == "grad" and data_json["settings"]["batches"] == 2
    assert data_json["spearman_rho"] is not None
    assert (tmp / "maps" / "ranks.png").stat().st_size > 1000
    code, _, stderr = run_cli(*args)
    assert code != 0 and "already exists" in stderr and "Traceback" not in stderr
    more = ["--allocator", "marginal", "--score", "fisher", "--degradation", "realesrgan"]
    code, _, stderr = run_cli(*args, "--force", *more)
    assert code == 0, stderr
    settings = json.loads(out.read_text())["settings"]
    assert (settings["allocator"], settings["degradation"]) == ("marginal", "realesrgan")
    adaptsr.inject_lora(model, read_rank_map(out))


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--budget", "lots"], "not understood"),
        (["--budget", "10"], "r_min=1 at every site"),
        (["--r-min", "4", "--r-max", "2"], "above --r-max"),
        (["--patch", "15"], "multiple of the model's scale"),
        (["--data", "MISSING"], "no such folder"),
        (["--out", "ranks.txt"], ".json"),
        (["--model", "no-such-model"], "no model file or built-in"),
        (["--score", "magic"], "magic"),
    ],
)
def test_cli_bad_input(cli_setup, run_cli, extra, message):
    checkpoint, data, tmp = cli_setup
    opts = {
        "--model": str(checkpoint),
        "--data": str(data),
        "--budget": "r2",
        "--out": str(tmp / "r.json"),
        "--batches": "1",
        "--batch": "1",
        "--patch": "16",
    }
    for key, value in zip(extra[0::2], extra[1::2], strict=True):
        opts[key] = value.replace("MISSING", str(tmp / "missing")).replace(
            "ranks.txt", str(tmp / "ranks.txt")
        )
    args = [x for kv in opts.items() for x in kv]
    code, _, stderr = run_cli("allocate", *args, "--degradation", "bicubic")
    assert code != 0
    assert stderr.startswith("error:") and message in stderr and "Traceback" not in stderr
    assert not (tmp / "r.json").exists()


def test_cli_random_scores_need_no_data(cli_setup, run_cli):
    checkpoint, _, tmp = cli_setup
    out = tmp / "r.json"
    code, _, stderr = run_cli("allocate", "--model", checkpoint, "--budget", "r1", "--out", out)
    assert code != 0 and "--data (or --lr-dir and --hr-dir) is needed" in stderr
    code, stdout, stderr = run_cli(
        "allocate", "--model", checkpoint, "--budget", "20%", "--out", out, "--score", "random"
    )
    assert code == 0, stderr
    assert json.loads(out.read_text())["settings"]["batches"] == 0
