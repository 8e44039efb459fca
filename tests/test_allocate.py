"""Rank allocation (adaptsr.adapt.allocate): the allocators' properties, budgets, image batches
and `adapt allocate`."""

import copy
import json

import fakes.models
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fakes.models import tiny_batches
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
from adaptsr.adapt.rankmap import (
    read_rank_map,
)
from adaptsr.core.errors import UserError


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
