"""Folding an adapter file into its base model: a plain checkpoint of the base architecture,
which loads anywhere the base model does."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from adaptsr.adapt.adapter_file import AdapterFile
from adaptsr.adapt.lora import lora_layers, merge_lora
from adaptsr.adapt.lora_report import base_parameter_count
from adaptsr.adapt.model_card import Resource, make_card, write_card
from adaptsr.adapt.models import CHECKPOINT_SUFFIXES, check_base_weights, load_model, save_model
from adaptsr.core.artifacts import model_card_path
from adaptsr.core.errors import UserError
from adaptsr.core.fileio import check_not_input, check_writable


@dataclass(frozen=True)
class MergeSummary:
    out: str
    sites: int  # adapters folded
    parameters: int  # adapter parameters folded
    percent: float  # of the base model's parameters
    files: int = 1  # adapter files blended
    card: str = ""  # the model card written beside `out`

    def text(self) -> str:
        blend = f" from {self.files} adapter files" if self.files > 1 else ""
        card = f"\nmodel card: {self.card}" if self.card else ""
        return (
            f"merged {self.sites} adapters{blend} ({self.parameters:,} parameters, "
            f"{self.percent:.2f}% of the base) into {self.out}{card}"
        )


def merge_adapter_file(
    model: str,
    adapter: str,
    out: str,
    force: bool = False,
    strength: float = 1.0,
    allow_random_base: bool = False,
) -> MergeSummary:
    """Load `model`, fold `adapter` at `strength` into the weights and save the result as
    `out` (strength 1: the adapter as trained; 0: the base)."""
    return merge_adapter_files(model, [(adapter, strength)], out, force, allow_random_base)


def merge_adapter_files(
    model: str,
    blend: Sequence[tuple[str, float]],
    out: str,
    force: bool = False,
    allow_random_base: bool = False,
) -> MergeSummary:
    """Load `model`, fold base + sum_i s_i * dW_i of the (adapter file, s_i) pairs into the
    weights and save the result as `out`; a base with random weights only if allowed."""
    check_merge_out(model, [path for path, _ in blend], out, force)
    check_base_weights(model, allow_random_base)
    net = load_model(model)  # a bad --model is named first, whatever the adapters
    adapters = [(AdapterFile.read(path), float(s)) for path, s in blend]
    parameters = sum(t.numel() for a, _ in adapters for t in a.tensors.values())
    percent = 100.0 * parameters / base_parameter_count(net)
    blend_adapters(net, adapters)
    save_model(net, out, force=force)
    card = make_card(net, model, adapters, Resource.of_file(out), Path(out).stem)
    write_card(card, model_card_path(out), force)
    meta = adapters[0][0].meta
    sites = len(meta.ranks) or len(meta.layers)
    return MergeSummary(out, sites, parameters, percent, len(adapters), str(model_card_path(out)))


def check_merge_out(model: str, adapters: Sequence[str], out: str | None, force: bool) -> None:
    """The merged checkpoint `out` (None: none is written) and its model card can be written
    (before any work, and before `adapt merge` writes its --blend-out): no input, a
    checkpoint's name, --force for an existing file."""
    if out is None:
        return
    check_not_input(out, [model, *adapters], "--out")
    check_writable(out, force)
    if not str(out).lower().endswith(CHECKPOINT_SUFFIXES):
        raise UserError(f"{out}: choose a {' or '.join(CHECKPOINT_SUFFIXES)} file name")
    check_not_input(model_card_path(out), [model, *adapters], "the model card")
    check_writable(model_card_path(out), force)  # the model card beside it


# ---------------------------------------------------------------------------------------------
# blends: several adapters of one base, each with a strength, folded into the weights


def parse_weighted(spec: str) -> tuple[str, float | None]:
    """`PATH` or `PATH:WEIGHT` (the weight a finite number): the path and the weight or None."""
    path, sep, tail = str(spec).rpartition(":")
    if not sep or not path:
        return str(spec), None
    try:
        weight = float(tail)
    except ValueError:
        return str(spec), None  # a colon inside a path
    if not math.isfinite(weight):
        raise UserError(f"{spec}: the weight after ':' must be a finite number")
    return path, weight


def check_blendable(adapters: Sequence[AdapterFile]) -> None:
    """Every adapter of a blend must be trained on one base and adapt the same sites."""
    first = adapters[0]
    for other in adapters[1:]:
        if other.meta.base_fingerprint != first.meta.base_fingerprint:
            raise UserError(
                f"cannot blend {first.path} and {other.path}: they were trained on different "
                f"base models (fingerprints {first.meta.base_fingerprint or 'missing'} and "
                f"{other.meta.base_fingerprint or 'missing'})"
            )
        if set(other.meta.ranks) != set(first.meta.ranks):
            only = sorted(set(first.meta.ranks) ^ set(other.meta.ranks))
            raise UserError(
                f"cannot blend {first.path} and {other.path}: they adapt different sites "
                f"(e.g. {only[0]})"
            )


def _adapter_deltas(model: nn.Module, adapter: AdapterFile) -> dict[str, torch.Tensor]:
    """module path -> the adapter's dW (fp32, fp64 for fp64 weights); the model is left as
    it was (the adapters are taken out again without merging)."""
    adapter.apply(model)
    layers = lora_layers(model)
    with torch.no_grad():
        deltas = {path: layer.delta_weight() for path, layer in layers.items()}
    for path, layer in layers.items():
        parent, _, leaf = path.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, leaf, layer.base_layer)
    del model.adaptsr_lora
    return deltas


def _merge_difffit(model: nn.Module, blend: Sequence[tuple[AdapterFile, float]]) -> nn.Module:
    """A DiffFit adapter scales the weights (W' = diag(gamma) W): it has no additive update to
    weight or mix, so it folds alone, as trained."""
    (adapter, strength), *others = blend
    if others or strength != 1:
        raise UserError(
            f"{adapter.path} is a DiffFit adapter: it merges alone at strength 1 (its scales "
            "multiply the weights; there is no update to weight or blend)"
        )
    adapter.apply(model)
    return merge_lora(model)


def blend_adapters(model: nn.Module, blend: Sequence[tuple[AdapterFile, float]]) -> nn.Module:
    """Fold base + sum_i s_i * dW_i into `model`'s weights, in place (the base architecture
    stays). A strength of 0 leaves the weights bit for bit; one adapter at 1 is `merge_lora`'s
    result bit for bit (the same fp32 sum). Refused for adapters of another base or layout."""
    if not blend:
        raise UserError("no adapter to blend")
    check_blendable([a for a, _ in blend])
    for adapter, strength in blend:
        if not math.isfinite(strength):
            raise UserError(f"{adapter.path}: the strength must be a finite number")
    if any(a.meta.mode == "difffit" for a, _ in blend):
        return _merge_difffit(model, blend)
    total: dict[str, torch.Tensor] = {}
    for adapter, strength in blend:
        deltas = _adapter_deltas(model, adapter)  # checks the base fingerprint too
        if strength == 0:
            continue
        for path, delta in deltas.items():
            term = delta if strength == 1 else strength * delta
            total[path] = term if path not in total else total[path] + term
    with torch.no_grad():
        new = {}
        for path, delta in total.items():
            w = model.get_submodule(path).weight
            acc = w.detach().to(torch.promote_types(w.dtype, torch.float32))
            new[path] = (acc + delta).to(w.dtype)
            if not bool(torch.isfinite(new[path]).all()):
                raise UserError(f"cannot merge: {path} would get NaN or infinite weights")
        for path, weight in new.items():  # all or nothing
            model.get_submodule(path).weight.copy_(weight)
    return model
