"""--targets: adapters on chosen site families (conv, attn, mlp, linear), in inject, allocate,
the rank map, the adapter file and the study's run specs."""

import pytest
import torch

from adaptsr.adapt import study
from adaptsr.adapt.adapter_file import AdapterFile, save_adapter
from adaptsr.adapt.allocate import allocate_ranks
from adaptsr.adapt.archs import build_small
from adaptsr.adapt.lora import inject_lora, lora_sites
from adaptsr.adapt.models import model_from_state_dict
from adaptsr.adapt.rankmap import RankAllocation
from adaptsr.adapt.sites import parse_targets, target_sites
from adaptsr.core.errors import UserError


def small(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return model_from_state_dict(build_small(arch).state_dict(), name=f"small-{arch}")


def test_families_select_exactly_their_site_kinds():
    swinir = small("SwinIR")
    kinds = {t: sorted(s.kind for s in target_sites(swinir, t)) for t in ("conv", "attn", "mlp")}
    assert kinds["conv"] == ["conv"] * 4
    assert kinds["attn"] == ["attn-k", "attn-o", "attn-q", "attn-v"]
    assert kinds["mlp"] == ["mlp", "mlp"]
    both = target_sites(swinir, "mlp,attn")
    assert [s.name for s in both] == [s.name for s in lora_sites(swinir) if s.kind != "conv"]
    assert target_sites(swinir, "all") == lora_sites(swinir)
    assert parse_targets("attn+conv") == "conv,attn"  # canonical order
    assert parse_targets("conv,attn,mlp,linear") == "all"
    with pytest.raises(UserError, match="unknown target 'ffn'"):
        parse_targets("ffn")


def test_a_model_without_sites_in_the_family_is_refused_in_one_line():
    safmn = small("SAFMN")
    assert len(target_sites(safmn, "conv")) == len(lora_sites(safmn))
    with pytest.raises(UserError, match="no site there") as e:
        inject_lora(safmn, 4, targets="mlp")
    assert "\n" not in str(e.value) and "conv" in str(e.value)
    assert getattr(safmn, "adaptsr_lora", None) is None


def test_uniform_rank_goes_to_the_targets_only_and_the_file_records_them(tmp_path):
    model = small("SwinIR")
    inject_lora(model, 2, targets="attn")
    attn = {s.name for s in target_sites(model, "attn")}
    assert set(model.adaptsr_lora.ranks) == attn
    path = save_adapter(model, tmp_path / "a.safetensors")
    adapter = AdapterFile.read(path)
    assert adapter.meta.targets == "attn" and adapter.meta.mode == "lora"
    fresh = small("SwinIR")
    adapter.apply(fresh)
    assert set(fresh.adaptsr_lora.ranks) == attn and fresh.adaptsr_lora.targets == "attn"


def test_rank_map_outside_the_targets_is_refused():
    model = small("SwinIR")
    conv = target_sites(model, "conv")[0].name
    with pytest.raises(UserError, match="outside --targets attn"):
        inject_lora(model, {conv: 2}, targets="attn")


def test_allocation_over_targets_scores_and_records_them_only():
    model = small("SwinIR")
    alloc = allocate_ranks(model, None, "r2", score="random", targets="mlp")
    mlp = [s.name for s in target_sites(model, "mlp")]
    assert sorted(alloc.ranks) == sorted(mlp) and alloc.targets == "mlp"
    assert alloc.settings["targets"] == "mlp"
    # budget r2 is uniform rank 2 on the mlp sites only
    assert alloc.budget == sum(2 * s.cost_per_rank for s in target_sites(model, "mlp"))
    back = RankAllocation.from_dict(alloc.to_dict())
    assert back.targets == "mlp" and back.ranks == alloc.ranks


def test_run_spec_options():
    spec = study.parse_spec("ra:r8@targets=attn+mlp@rs@rmin=0@allocator=marginal@lr=5e-3")
    assert spec.option("targets") == "attn,mlp" and spec.option("scaling") == "alpha/sqrt(r)"
    assert (spec.option("r_min"), spec.option("allocator"), spec.option("lr")) == (
        0,
        "marginal",
        5e-3,
    )
    assert spec.folder == "ra-r8@targets=attn+mlp@rs@rmin=0@allocator=marginal@lr=5e-3"
    assert study.parse_spec("difffit@targets=conv").mode == "difffit"
    for bad in ("r8@rmin=0", "full@rs", "r8@lr=-1", "r8@targets=x", "r8@foo=1", "difffit@rs"):
        with pytest.raises(UserError):
            study.parse_spec(bad)


def test_run_spec_options_reach_the_train_config():
    settings = study.StudySettings(model="m", data=["d"], val="v", runs=["r8"], lr=2e-3)
    settings = settings.checked()
    cfg = study.train_config(settings, study.parse_spec("ra:r8@rmin=0@normalise=size@rs"), 0)
    assert cfg.allocation.r_min == 0 and cfg.allocation.normalise == "size"
    assert cfg.scaling == "alpha/sqrt(r)" and cfg.lr == 2e-3 and cfg.rank_aware
    cfg = study.train_config(settings, study.parse_spec("difffit@targets=attn@lr=1e-2"), 1)
    assert (cfg.mode, cfg.targets, cfg.lr) == ("difffit", "attn", 1e-2)
    assert study.train_config(settings, study.parse_spec("full"), 0).lr is None
    # the defaults are not written: studies made before these settings continue
    default = study.StudySettings(model="m", data=["d"], val="v", runs=["r8"]).checked()
    assert not {"lr", "scaling", "targets"} & set(default.comparable())
    assert settings.comparable()["lr"] == 2e-3
