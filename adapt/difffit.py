"""DiffFit-style tuning (`--mode difffit`): a learned scale per output channel, and a shift per
output channel where the layer has a bias, on the frozen base's conv and linear layers.

What is built (after DiffFit's idea of scale factors plus bias terms, kept to what folds into
the weights): every layer holding a site of the chosen families (adaptsr.adapt.sites; a fused
qkv projection is one layer) computes

    y = gamma * (W x + b) + beta          gamma, beta: one value per output channel

with gamma initialised to 1 and beta to 0 (the injected model starts as its base). A layer
without a bias gets no beta: adding a bias would change the merged graph. Merging folds it
exactly into the base layer:

    W' = diag(gamma) W  (row o of a linear, filter o of a conv, scaled by gamma[o])
    b' = gamma * b + beta

so the merged model is the base architecture with other weights, as a merged LoRA is.
Trainable parameters: C_out per layer, plus C_out for each layer with a bias.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from adaptsr.adapt.lora import _acc, _set_submodule, base_fingerprint
from adaptsr.adapt.sites import (
    ALL_TARGETS,
    AdapterLayer,
    parse_targets,
    skipped_layers,
    target_sites,
)
from adaptsr.core.errors import UserError

SCALE, SHIFT = "difffit_scale", "difffit_shift"  # parameter names (adapter file keys end so)


class DiffFitLayer(AdapterLayer):
    """A frozen conv or linear layer whose output channels are scaled (and shifted)."""

    def __init__(self, base: nn.Conv2d | nn.Linear):
        super().__init__()
        self.base_layer, self.merged = base, False
        w = base.weight
        channels = w.shape[0]
        self.difffit_scale = nn.Parameter(torch.ones(channels, device=w.device, dtype=w.dtype))
        self.difffit_shift = None
        if base.bias is not None:
            self.difffit_shift = nn.Parameter(torch.zeros_like(base.bias))

    def tensors(self) -> dict[str, nn.Parameter]:
        """Parameter name -> parameter: the scale, and the shift where the layer has a bias."""
        out = {SCALE: self.difffit_scale}
        if self.difffit_shift is not None:
            out[SHIFT] = self.difffit_shift
        return out

    def _channels(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """A per-channel vector shaped to broadcast over `like` (channels: dim 1 of a conv's
        output or weight, the last dim of a linear's output)."""
        if isinstance(self.base_layer, nn.Conv2d):
            return t.view(1, -1, *([1] * (like.dim() - 2)))
        return t

    def folded(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """W' and b' in fp32 (fp64 for fp64 weights)."""
        w, b = self.base_layer.weight, self.base_layer.bias
        gamma = _acc(self.difffit_scale)
        weight = _acc(w) * gamma.view(-1, *([1] * (w.dim() - 1)))
        if b is None:
            return weight, None
        return weight, gamma * _acc(b) + _acc(self.difffit_shift)

    @property
    def weight(self) -> torch.Tensor:
        # Architectures that read a layer's weight directly (SPAN) see the effective one.
        w = self.base_layer.weight
        return w if self.merged else self.folded()[0].to(w.dtype)

    @property
    def bias(self) -> torch.Tensor | None:
        b = self.base_layer.bias
        return b if self.merged or b is None else self.folded()[1].to(b.dtype)

    def forward(self, x):
        y = self.base_layer(x)
        if self.merged:
            return y
        y = y * self._channels(self.difffit_scale, y)
        if self.difffit_shift is not None:
            y = y + self._channels(self.difffit_shift, y)
        return y

    def finite_after_merge(self) -> bool:
        return all(bool(torch.isfinite(t).all()) for t in self.folded() if t is not None)

    @torch.no_grad()
    def merge(self) -> None:
        if self.merged:
            return
        weight, bias = self.folded()
        base = self.base_layer
        base.weight.copy_(weight.to(base.weight.dtype))
        if bias is not None:
            base.bias.copy_(bias.to(base.bias.dtype))
        self.merged = True


@dataclass
class DiffFitState:
    """What inject_difffit did, kept on the model as `model.adaptsr_difffit`."""

    layers: list[str]  # module paths, in model order
    targets: str = ALL_TARGETS
    skipped: dict[str, str] = field(default_factory=dict)  # module -> reason
    base_fingerprint: str = ""


def difffit_modules(model: nn.Module, targets: str = ALL_TARGETS) -> list[str]:
    """The module paths DiffFit tunes: each layer holding a site of the `targets` families."""
    return list(dict.fromkeys(s.module for s in target_sites(model, targets)))


def inject_difffit(model: nn.Module, targets: str = ALL_TARGETS, layers=None) -> nn.Module:
    """Wrap the layers of the `targets` families (or exactly `layers`, as an adapter file lists
    them) in place; afterwards only the scales and shifts are trainable."""
    if any(getattr(model, a, None) is not None for a in ("adaptsr_lora", "adaptsr_difffit")):
        raise UserError("this model already has adapters (merge them or load a fresh model)")
    targets = parse_targets(targets)
    possible = difffit_modules(model, targets)
    chosen = possible if layers is None else list(layers)
    unknown = [p for p in chosen if p not in possible]
    if unknown:
        raise UserError(
            f"DiffFit layer {unknown[0]!r} is not a layer of this model in --targets {targets}"
        )
    fingerprint = base_fingerprint(model)
    skipped = skipped_layers(model)
    model.requires_grad_(False)
    for path in chosen:
        _set_submodule(model, path, DiffFitLayer(model.get_submodule(path)))
    model.adaptsr_difffit = DiffFitState(chosen, targets, skipped, fingerprint)
    return model


def difffit_layers(model: nn.Module) -> dict[str, DiffFitLayer]:
    return {p: m for p, m in model.named_modules() if isinstance(m, DiffFitLayer)}


def difffit_tensors(model: nn.Module) -> dict[str, nn.Parameter]:
    """`<layer>.difffit_scale` / `<layer>.difffit_shift` -> the parameter, as files name them."""
    return {
        f"{path}.{name}": p
        for path, layer in difffit_layers(model).items()
        for name, p in layer.tensors().items()
    }


def difffit_parameters(model: nn.Module) -> list[nn.Parameter]:
    return list(difffit_tensors(model).values())
