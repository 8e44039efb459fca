"""The architecture profiles (adapt/archs/): one per spandrel architecture, and their facts
agree with what spandrel builds and runs."""

import importlib

import pytest
import torch
from spandrel import MAIN_REGISTRY

from adaptsr.adapt import archs
from adaptsr.adapt.archs import edsr_family
from adaptsr.adapt.archs import profile as profile_types
from adaptsr.adapt.models import CalledModel, model_from_state_dict, spandrel_call_function
from adaptsr.adapt.sweep import install_extra, registry
from adaptsr.export.rewrites import REWRITES, rewrite_table

EXTRA = "spandrel_extra_arches"
SMALL = [(p.id, c.variant) for p in archs.PROFILES.values() for c in p.small]


def test_every_spandrel_architecture_has_exactly_one_profile():
    extra = install_extra() is not None  # the dev extra installs spandrel_extra_arches
    spandrel_ids = {arch for arch, _ in registry()}
    profiled = {p.id for p in archs.PROFILES.values() if extra or p.package != EXTRA}
    assert spandrel_ids | {"EDSR"} == profiled, "add a profile in adapt/archs/"
    for p in archs.PROFILES.values():
        # a small configuration, or the reason there is none (the sweep's n/a row)
        assert bool(p.small) != bool(p.no_small), p.id


def test_a_second_profile_or_a_silent_one_is_refused():
    twice = (*edsr_family.PROFILES, edsr_family.PROFILES[0])
    with pytest.raises(ValueError, match="two profiles for EDSR"):
        archs._gather(twice)
    silent = profile_types.spandrel("Nothing", "SR")
    with pytest.raises(ValueError, match="say why"):
        archs._gather((silent,))


def _descriptor(net: torch.nn.Module):
    return MAIN_REGISTRY.load(net.state_dict())


@pytest.mark.parametrize(("arch", "variant"), SMALL)
def test_small_configuration_loads_as_its_profile_says(arch, variant):
    p = archs.get(arch)
    if install_extra() is None and p.package == EXTRA:
        pytest.skip("spandrel_extra_arches is not installed")
    torch.manual_seed(0)
    net = archs.build_small(arch, variant)
    model = model_from_state_dict(net.state_dict(), name=arch)
    info = model.adaptsr_info
    assert (info.arch, info.purpose) == (arch, p.purpose)
    # The call-function fact agrees with spandrel: a function of its own exactly when the
    # profile describes one, and the loaded model computes what spandrel's descriptor does.
    desc = _descriptor(net)
    own = not spandrel_call_function(desc).__qualname__.startswith("ImageModelDescriptor.")
    assert own == bool(p.call), f"{arch}: spandrel's call function changed"
    assert isinstance(model, CalledModel) == bool(p.call)
    config = next(c for c in p.small if c.variant == variant)
    side = max(config.side, info.min_size)
    side += -side % max(info.multiple_of, 1)
    x = torch.rand(1, info.in_channels, side, side, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model(x.clone()).clamp(0, 1)
    torch.testing.assert_close(ours, desc(x.clone()), rtol=1e-4, atol=1e-5)


def test_spandrel_keeps_its_call_function_where_models_reads_it():
    # adapt/models.py reads spandrel's private `_call_fn` in one place; this fails first if a
    # spandrel release renames it or stops calling it.
    torch.manual_seed(0)
    desc = _descriptor(archs.build_small("FBCNN"))
    seen = []
    call = spandrel_call_function(desc)
    desc._call_fn = lambda model, image: seen.append(1) or call(model, image)
    desc(torch.rand(1, 3, 16, 16))
    assert seen == [1]


def test_build_small_takes_overrides_and_names_a_missing_configuration():
    torch.manual_seed(0)
    net = archs.build_small("SAFMN", upscaling_factor=4)
    assert _descriptor(net).scale == 4
    with pytest.raises(KeyError, match="no small configuration 'Real'"):
        archs.build_small("SAFMN", "Real")
    with pytest.raises(KeyError, match="GFPGAN has no small configuration"):
        archs.build_small("GFPGAN")
    with pytest.raises(KeyError, match="no architecture profile for 'Nope'"):
        archs.get("Nope")


def test_export_rewrites_name_real_classes_and_known_rewrites():
    table = rewrite_table()
    for (module, cls), rewrite in table.items():
        assert hasattr(importlib.import_module(module), cls), f"{module}.{cls} moved"
        assert rewrite in REWRITES, rewrite
    assert set(table.values()) == set(REWRITES)  # no rewrite without an architecture using it


def test_lora_skips_gather_every_profiles_rules_once():
    rules = [s for p in archs.PROFILES.values() for s in p.lora_skips]
    assert set(archs.LORA_SKIPS) == set(rules) and len(archs.LORA_SKIPS) == len(set(rules))
    assert {p.id for p in archs.PROFILES.values() if edsr_family.MEAN_SHIFT in p.lora_skips} == {
        "EDSR",
        "RCAN",
        "IPT",
    }
