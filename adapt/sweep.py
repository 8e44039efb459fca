"""The architecture sweep, adapt side: every architecture spandrel registers, built small, run
through the public pipeline (load, sites, inject, one training step, merge).

Each architecture is built from the small configuration of its profile (adapt/archs/), saved
as a state dict and loaded back with `load_model`, as a user's checkpoint would be. The ONNX
stages are added by `adaptsr.export.sweep_export`, which is also the command
(`python -m adaptsr.export.sweep_export --out docs/architectures.md`).
"""

from __future__ import annotations

import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import torch
import torch.nn.functional as F
from spandrel import MAIN_REGISTRY
from torch import nn

from adaptsr.adapt.archs import PROFILES, ArchProfile, Build
from adaptsr.adapt.lora import (
    adapter_parameters,
    adapter_train_mode,
    inject_lora,
    lora_layers,
    lora_sites,
    merge_lora,
)
from adaptsr.adapt.models import load_model, model_from_state_dict, model_info
from adaptsr.core.errors import UserError
from adaptsr.core.tiling import round_up

PASS, FAIL, NA = "PASS", "FAIL", "n/a"
ADAPT_STAGES = ("load", "inject", "train_step", "merge")
RANK = 2
MERGE_TOL = 1e-5  # relative L2, merged vs adapted output


def _extra_registry():
    """spandrel_extra_arches' registry, or None when it is not installed (an optional extra)."""
    try:
        import spandrel_extra_arches
    except ImportError:
        return None
    return spandrel_extra_arches


def registry() -> list[tuple[str, str]]:
    """(architecture id, package) for every architecture spandrel registers, and those of
    spandrel_extra_arches when it is installed."""
    out = [(s.architecture.id, "spandrel.architectures") for s in MAIN_REGISTRY]
    extra = _extra_registry()
    if extra is not None:
        out += [(s.architecture.id, "spandrel_extra_arches.architectures") for s in
                extra.EXTRA_REGISTRY]  # fmt: skip
    return [a for a in out if a[0] != "EDSR"]  # adaptsr's own registration, not spandrel's


def install_extra() -> str | None:
    """Add spandrel_extra_arches to spandrel's main registry (where load_model looks); its
    version, or None when it is not installed."""
    extra = _extra_registry()
    if extra is None:
        return None
    ids = {s.architecture.id for s in MAIN_REGISTRY}
    if not all(s.architecture.id in ids for s in extra.EXTRA_REGISTRY):
        extra.install(ignore_duplicates=True)
    return version("spandrel_extra_arches")


@dataclass
class Row:
    """One architecture's results: stage -> (status, reason)."""

    name: str
    arch: str
    package: str
    purpose: str = ""
    scale: int = 0
    params: int = 0
    sites: dict[str, int] = field(default_factory=dict)
    stages: dict[str, tuple[str, str]] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "arch": self.arch,
            "package": self.package,
            "purpose": self.purpose,
            "scale": self.scale,
            "params": self.params,
            "sites": self.sites,
            "stages": {k: {"status": s, "reason": r} for k, (s, r) in self.stages.items()},
            "seconds": round(self.seconds, 1),
        }


def row_name(arch: str, config: Build) -> str:
    return f"{arch} ({config.variant})" if config.variant else arch


def reason(e: BaseException) -> str:
    """One line for a failure: the exception and where in the model it was raised."""
    text = str(e).strip().splitlines()
    line = f"{type(e).__name__}: {text[0] if text else ''}".strip()
    if not isinstance(e, UserError):
        frames = [f for f in traceback.extract_tb(e.__traceback__) if "spandrel" in f.filename]
        if frames:
            line += f" (in {Path(frames[-1].filename).name}:{frames[-1].lineno})"
    return line if len(line) <= 200 else line[:197] + "..."


def example_size(model: nn.Module, side: int = 16) -> int:
    """The smallest square side >= `side` the model accepts."""
    info = model_info(model)
    return round_up(max(side, info.min_size), max(1, info.multiple_of))


def randomise_adapters(model: nn.Module, seed: int = 1) -> None:
    """Non-zero adapters (B starts at zero, which would hide a wrong merge)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            for a, b, _ in layer.adapters().values():
                a.copy_(torch.randn(a.shape, generator=g, dtype=a.dtype) * 0.05)
                b.copy_(torch.randn(b.shape, generator=g, dtype=b.dtype) * 0.05)


def _base_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {
        k.replace(".base_layer.", "."): v.detach().clone()
        for k, v in model.state_dict().items()
        if ".lora_A" not in k and ".lora_B" not in k
    }


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-12))


def _shapes(model: nn.Module) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    return {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}


def _load(profile: ArchProfile, config: Build, work: Path, row: Row) -> nn.Module:
    """Built small, saved and loaded back as a user's checkpoint."""
    torch.manual_seed(0)
    net = profile.construct(config.cls, **config.kwargs)
    path = work / f"{row.name.replace(' ', '_')}.pth"
    torch.save(net.state_dict(), path)
    model = load_model(path)
    info = model_info(model)
    if info.arch != profile.id:
        raise UserError(f"detected as {info.arch}, built as {profile.id}")
    row.scale = info.scale
    row.params = sum(p.numel() for p in model.parameters())
    row.purpose = info.purpose
    return model


def _inject(model: nn.Module, row: Row) -> None:
    for s in lora_sites(model):
        row.sites[s.kind] = row.sites.get(s.kind, 0) + 1
    inject_lora(model, RANK)
    randomise_adapters(model)


def _train_step(model: nn.Module, x: torch.Tensor) -> None:
    """One Adam step: finite loss, gradients on the adapters only, the base untouched."""
    before = _base_state(model)
    adapter_train_mode(model)
    adapters = adapter_parameters(model)
    ids = {id(p) for p in adapters}
    optimizer = torch.optim.Adam(adapters, lr=1e-3)
    out = model(x.clone())  # some models (RCAN) scale their input in place
    if not isinstance(out, torch.Tensor):
        raise UserError(f"forward returns a {type(out).__name__}, not an image tensor")
    target = torch.rand(out.shape, generator=torch.Generator().manual_seed(1))
    loss = F.l1_loss(out, target)
    if not torch.isfinite(loss):
        raise UserError(f"loss is {float(loss)}")
    loss.backward()
    stray = [n for n, p in model.named_parameters() if p.grad is not None and id(p) not in ids]
    if stray:
        raise UserError(f"a base parameter got a gradient: {stray[0]}")
    if not any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in adapters):
        raise UserError("no adapter got a non-zero gradient")
    optimizer.step()
    after = _base_state(model)
    changed = [k for k, v in before.items() if k not in after or not torch.equal(after[k], v)]
    if changed:
        raise UserError(f"the frozen base changed during the step: {changed[0]}")


def _merge(model: nn.Module, x: torch.Tensor, base_shapes: dict) -> None:
    """merge_lora keeps the adapted output, the base's state dict layout, and reloads."""
    model.eval()
    with torch.no_grad():
        adapted = model(x.clone())
        merge_lora(model)
        merged = model(x.clone())
    err = _relative(merged, adapted)
    if not err <= MERGE_TOL:
        raise UserError(f"merged output differs from the adapted one by {err:.2e} (relative)")
    got = _shapes(model)
    if got != base_shapes:
        diff = sorted(set(got) ^ set(base_shapes)) or [k for k in got if got[k] != base_shapes[k]]
        raise UserError(f"merged state dict differs from the base's at {diff[0]}")
    state = model.state_dict()
    reloaded = model_from_state_dict({k: v.clone() for k, v in state.items()}, "merged")
    with torch.no_grad():
        err = _relative(reloaded(x.clone()), merged)
    if not err <= MERGE_TOL:
        raise UserError(f"the reloaded merged checkpoint differs by {err:.2e}")


def check_adapt(profile: ArchProfile, config: Build, work: Path, row: Row) -> nn.Module | None:
    """load -> sites -> inject -> train step -> merge; the merged model when merge passed."""
    try:
        model = _load(profile, config, work, row)
        base_shapes = _shapes(model)
    except Exception as e:
        row.stages["load"] = (FAIL, reason(e))
        return None
    row.stages["load"] = (PASS, "")
    info = model_info(model)
    side = example_size(model, config.side)
    x = torch.rand(1, info.in_channels, side, side, generator=torch.Generator().manual_seed(0))
    stages: list[tuple[str, Callable[[], None]]] = [
        ("inject", lambda: _inject(model, row)),
        ("train_step", lambda: _train_step(model, x)),
        ("merge", lambda: _merge(model, x, base_shapes)),
    ]
    for stage, run in stages:
        try:
            run()
        except Exception as e:
            row.stages[stage] = (FAIL, reason(e))
            return None
        row.stages[stage] = (PASS, "")
    return model


OnnxStages = Callable[[nn.Module, Row, int], None]  # (merged model, row, check side)


def _rows_to_run(names: list[str] | None, packages: dict[str, str]):
    """(profile, configuration or None, row) in spandrel's registry order; a profile without a
    small configuration gives one row with configuration None."""
    for arch, package in packages.items():
        profile = PROFILES.get(arch)
        if profile is None:  # a spandrel release added an architecture: listed, not hidden
            row = Row(arch, arch, package.split(".")[0])
            if not names or arch in names:
                yield None, None, row
            continue
        for config in profile.small or (None,):
            name = row_name(arch, config) if config else arch
            if names and name not in names and arch not in names:
                continue
            yield profile, config, Row(name, arch, package.split(".")[0])


def _run_row(profile, config, row: Row, work: Path, onnx, onnx_for) -> None:
    if profile is None:
        row.stages = {s: (NA, "no profile in adapt/archs/ yet") for s in ADAPT_STAGES}
        return
    if config is None:
        row.purpose = profile.purpose
        row.stages = {s: (NA, profile.no_small) for s in ADAPT_STAGES}
        return
    merged = check_adapt(profile, config, work, row)
    for s in ADAPT_STAGES:
        row.stages.setdefault(s, (NA, "an earlier stage failed"))
    wanted = onnx_for is None or row.name in onnx_for
    if onnx is not None and wanted and merged is not None:
        onnx(merged, row, config.side)


def sweep(
    names: list[str] | None = None,
    onnx: OnnxStages | None = None,
    onnx_for: set[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[Row]:
    """Run every architecture (or those named) through the stages; `onnx` adds the export
    stages for the merged model (for the names in `onnx_for`, or all when it is None)."""
    install_extra()
    packages = dict(registry())
    rows = []
    with tempfile.TemporaryDirectory(prefix="adaptsr-sweep-") as tmp:
        for profile, config, row in _rows_to_run(names, packages):
            start = time.perf_counter()
            _run_row(profile, config, row, Path(tmp), onnx, onnx_for)
            row.seconds = time.perf_counter() - start
            if progress:
                progress(f"{row.name}: " + " ".join(s for s, _ in row.stages.values()))
            rows.append(row)
    return rows
