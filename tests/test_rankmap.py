"""Rank maps (adaptsr.adapt.rankmap): the heatmap grid, the rank map file and its errors, and
RankAllocation as the one schema."""

import json

import fakes.models
import pytest
import torch

import adaptsr
from adaptsr.adapt.allocate import (
    allocate_ranks,
)
from adaptsr.adapt.lora import lora_sites
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
from adaptsr.core.errors import UserError


def tiny_edsr():
    return fakes.models.tiny_edsr(n_resblocks=1, n_feats=8)  # one block of 8 features


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
