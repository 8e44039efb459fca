"""The built-in models as `adapt models` lists them: pretrained ones (weights ship with
adaptsr) first, then the configurations (official hyper-parameters), each with its official
release where one is recorded (adapt/releases.py) and whether `adapt fetch` has downloaded it."""

from __future__ import annotations

from dataclasses import dataclass

from adaptsr.adapt.fetch import cached_path
from adaptsr.adapt.models import BUILTIN_MODELS, PRETRAINED
from adaptsr.adapt.releases import RELEASES, Release


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    arch: str  # the model class
    scale: int
    params: int
    weights: str  # "pretrained", "fetched" (official, in the cache) or "random"
    release: Release | None = None  # the official weights, where published


def builtin_catalog() -> list[CatalogEntry]:
    rows = []
    for name, build in BUILTIN_MODELS.items():
        model = build()  # the bare constructor: counting needs no checkpoint round trip
        params = sum(p.numel() for p in model.parameters())
        arch, scale = type(model).__name__, int(name.rsplit("-x", 1)[1])
        weights = "fetched" if cached_path(name) else "random"
        rows.append(CatalogEntry(name, arch, scale, params, weights, RELEASES.get(name)))
        for pre_name, pre in PRETRAINED.items():
            if pre.architecture == name:
                rows.append(CatalogEntry(pre_name, arch, scale, params, "pretrained"))
    rows.sort(key=lambda r: r.weights != "pretrained")  # the ready-to-use ones first
    return rows


def catalog_table(rows: list[CatalogEntry]) -> str:
    lines = [f"{'name':<18} {'arch':<7} {'scale':>5} {'params':>12}  {'weights':<10}  release"]
    for r in rows:
        release = r.release.file if r.release else "-"
        lines.append(
            f"{r.name:<18} {r.arch:<7} {r.scale:>5} {r.params:>12,}  {r.weights:<10}  {release}"
        )
    releases = [r for r in rows if r.release]
    if releases:
        lines += ["", "Official releases (`adapt fetch NAME` downloads one, checked by sha256):"]
        for r in releases:
            rel = r.release
            lines += [
                f"{r.name}: {rel.file}, {rel.size:,} bytes, licence {rel.licence}",
                f"  {rel.url}",
                f"  sha256 {rel.sha256}",
            ]
    return "\n".join(lines)
