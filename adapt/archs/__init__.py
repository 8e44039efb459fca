"""One profile per architecture, keyed by spandrel's architecture id: the one place adaptsr
keeps what it knows about an architecture (see profile.py for the fields).

The families live in modules of their own; `PROFILES` gathers them. load_model reads the call
function fact, lora.py the skip rules, the built-in table the configurations, the sweep
(adapt/sweep.py) and the tests the small configurations, and export/rewrites.py the export
facts. tests/test_archs.py checks that every architecture spandrel registers has exactly one
profile.
"""

from __future__ import annotations

from torch import nn

from adaptsr.adapt.archs import convnets, edsr_family, fixed_size, restoration, window
from adaptsr.adapt.archs.profile import (
    ArchProfile,
    Build,
    Builtin,
    ExportRewrite,
    LoRASkip,
)

__all__ = [
    "LORA_SKIPS",
    "PROFILES",
    "ArchProfile",
    "Build",
    "Builtin",
    "ExportRewrite",
    "LoRASkip",
    "build_small",
    "find",
    "get",
]


def _gather(*families: tuple[ArchProfile, ...]) -> dict[str, ArchProfile]:
    table: dict[str, ArchProfile] = {}
    for family in families:
        for p in family:
            if p.id in table:
                raise ValueError(f"two profiles for {p.id}")
            if bool(p.small) == bool(p.no_small):
                raise ValueError(f"{p.id}: give a small configuration or say why there is none")
            table[p.id] = p
    return table


# Family order sets the order of the built-in names (`adapt models`).
PROFILES: dict[str, ArchProfile] = _gather(
    edsr_family.PROFILES,
    convnets.PROFILES,
    window.PROFILES,
    restoration.PROFILES,
    fixed_size.PROFILES,
)


def _skips() -> tuple[LoRASkip, ...]:
    seen: list[LoRASkip] = []
    for p in PROFILES.values():
        seen += [s for s in p.lora_skips if s not in seen]
    return tuple(seen)


# Every architecture's skip rules; lora.py applies them to any model, since a rule names a kind
# of layer (a mean shift, a re-parameterised conv) wherever it occurs.
LORA_SKIPS: tuple[LoRASkip, ...] = _skips()


def find(arch: str) -> ArchProfile | None:
    """The profile of a spandrel architecture id, or None for one adaptsr has none for."""
    return PROFILES.get(arch)


def get(arch: str) -> ArchProfile:
    """The profile of a spandrel architecture id (KeyError naming it when there is none)."""
    profile = PROFILES.get(arch)
    if profile is None:
        raise KeyError(f"no architecture profile for {arch!r}")
    return profile


def build_small(arch: str, variant: str = "", **overrides) -> nn.Module:
    """The architecture's small configuration (its `variant`), with `overrides` on top:
    random weights from torch's global RNG, so a caller seeds it as it needs."""
    profile = get(arch)
    for config in profile.small:
        if config.variant == variant:
            return profile.construct(config.cls, **{**config.kwargs, **overrides})
    raise KeyError(f"{arch} has no small configuration {variant!r}: {profile.no_small}")
