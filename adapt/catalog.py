"""The built-in models as `adapt models` lists them: pretrained ones (weights ship with
adaptsr) first, then the configurations (official hyper-parameters, random weights)."""

from __future__ import annotations

from dataclasses import dataclass

from adaptsr.adapt.models import BUILTIN_MODELS, PRETRAINED


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    arch: str  # the model class
    scale: int
    params: int
    weights: str  # "pretrained" or "random"


def builtin_catalog() -> list[CatalogEntry]:
    rows = []
    for name, build in BUILTIN_MODELS.items():
        model = build()  # the bare constructor: counting needs no checkpoint round trip
        params = sum(p.numel() for p in model.parameters())
        arch, scale = type(model).__name__, int(name.rsplit("-x", 1)[1])
        rows.append(CatalogEntry(name, arch, scale, params, "random"))
        for pre_name, pre in PRETRAINED.items():
            if pre.architecture == name:
                rows.append(CatalogEntry(pre_name, arch, scale, params, "pretrained"))
    rows.sort(key=lambda r: r.weights != "pretrained")  # the ready-to-use ones first
    return rows


def catalog_table(rows: list[CatalogEntry]) -> str:
    lines = [f"{'name':<18} {'arch':<7} {'scale':>5} {'params':>12}  weights"]
    for r in rows:
        lines.append(f"{r.name:<18} {r.arch:<7} {r.scale:>5} {r.params:>12,}  {r.weights}")
    return "\n".join(lines)
