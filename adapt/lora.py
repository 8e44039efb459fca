"""LoRA adapters for conv, attention and MLP layers; exact merge (adapter files:
adaptsr.adapt.adapter_file).

Every adaptable nn.Conv2d and nn.Linear is a *site* (adaptsr.adapt.sites: names, kinds and the
families `--targets` picks). The update of a site is dW = s * B A with B initialised to zero, so
an injected model starts exactly equal to its base; s = alpha / r (default) or alpha / sqrt(r)
(`scaling`, rank-stabilised):

- conv W (C_out, C_in, k, k): A is a 1x1 conv C_in -> r, B a kxk conv r -> C_out carrying the
  base conv's stride, padding, dilation and padding mode (the paper's 1x1 -> kxk factorisation);
  merged, dW[o, i] = s * sum_r B[o, r] A[r, i].
- linear W (d_out, d_in): A (r, d_in), B (d_out, r).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from importlib import import_module

import torch
from torch import nn

from adaptsr import kernels
from adaptsr.adapt.sites import (  # noqa: F401  (Site, lora_sites, skipped_layers: public here)
    ALL_TARGETS,
    QKV_PARTS,
    AdapterLayer,
    Site,
    lora_sites,
    parse_targets,
    skipped_layers,
    target_sites,
)
from adaptsr.core.adapter_meta import RANK_STABILISED, SCALING_RULE, SCALINGS
from adaptsr.core.errors import UserError

# Moved out of this module; the old paths keep working for one release, read lazily (the new
# modules import this one).
_MOVED = {
    **dict.fromkeys(("save_adapter", "load_adapter", "read_adapter"), "adaptsr.adapt.adapter_file"),
    **dict.fromkeys(("ADAPTER_FORMAT",), "adaptsr.core.contracts"),
    **dict.fromkeys(("lora_report", "base_parameter_count"), "adaptsr.adapt.lora_report"),
}


def __getattr__(name: str):
    if name in _MOVED:
        return getattr(import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------------------------------------
# scaling


def lora_scale(alpha: float, rank: int, scaling: str = SCALING_RULE) -> float:
    """The factor of B A at a site of `rank`: alpha / r (the paper's), or alpha / sqrt(r)
    (rank-stabilised: the update's size no longer shrinks as the rank grows)."""
    if scaling == SCALING_RULE:
        return alpha / rank
    if scaling == RANK_STABILISED:
        return alpha / math.sqrt(rank)
    raise UserError(f"unknown scaling {scaling!r} (choose {', '.join(SCALINGS)})")


# ---------------------------------------------------------------------------------------------
# layers


class LoRALayer(AdapterLayer):
    """Wraps a frozen base layer; holds one adapter (or three, for q/k/v) of given ranks."""

    def adapters(self) -> dict[str, tuple[nn.Parameter, nn.Parameter, float]]:
        """part name ('' for a single adapter) -> (A, B, scale)."""
        raise NotImplementedError

    def delta_weight(self) -> torch.Tensor:
        """dW in fp32 (fp64 for fp64 weights), shaped like the base weight."""
        raise NotImplementedError

    # Some architectures read a layer's weight directly (SPAN folds its convs into one at
    # inference): they see the effective weight, base plus update.
    @property
    def weight(self) -> torch.Tensor:
        w = self.base_layer.weight
        if self.merged:
            return w
        return (_acc(w) + self.delta_weight()).to(w.dtype)

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base_layer.bias

    def finite_after_merge(self) -> bool:
        w = self.base_layer.weight
        return bool(torch.isfinite((_acc(w) + self.delta_weight()).to(w.dtype)).all())

    def merge(self) -> None:
        """Fold dW into the base weight (in fp32, cast back to the weight's dtype)."""
        if not self.merged:
            self._add_delta(+1)
            self.merged = True

    def unmerge(self) -> None:
        """Subtract dW again: the base weight comes back to within fp32 rounding."""
        if self.merged:
            self._add_delta(-1)
            self.merged = False

    @torch.no_grad()
    def _add_delta(self, sign: int) -> None:
        w = self.base_layer.weight
        w.copy_((_acc(w) + sign * self.delta_weight()).to(w.dtype))


def _acc(t: torch.Tensor) -> torch.Tensor:
    """Detached, in fp32 at least (fp64 stays fp64): half models merge in fp32."""
    return t.detach().to(torch.promote_types(t.dtype, torch.float32))


def _init_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    # A like a freshly initialised layer (kaiming-uniform), B zero: dW starts at exactly zero.
    nn.init.kaiming_uniform_(a, a=math.sqrt(5))
    nn.init.zeros_(b)


class _PairLayer(LoRALayer):
    """One adapter pair: A (rank, ...) and B (..., rank, ...) with scale lora_scale(alpha, rank)."""

    def __init__(self, base: nn.Module, rank: int, alpha: float, a_shape, b_shape, scaling):
        super().__init__()
        self.base_layer = base
        self.rank, self.alpha, self.scaling, self.merged = rank, alpha, scaling, False
        kw = dict(device=base.weight.device, dtype=base.weight.dtype)
        self.lora_A = nn.Parameter(torch.empty(*a_shape, **kw))
        self.lora_B = nn.Parameter(torch.empty(*b_shape, **kw))
        _init_pair(self.lora_A, self.lora_B)

    @property
    def scale(self) -> float:
        return lora_scale(self.alpha, self.rank, self.scaling)

    def adapters(self):
        return {"": (self.lora_A, self.lora_B, self.scale)}


class LoRAConv2d(_PairLayer):
    def __init__(self, base: nn.Conv2d, rank: int, alpha: float, scaling: str = SCALING_RULE):
        k = base.kernel_size[0]
        b_shape = (base.out_channels, rank, k, k)
        super().__init__(base, rank, alpha, (rank, base.in_channels, 1, 1), b_shape, scaling)

    def delta_weight(self) -> torch.Tensor:
        a = _acc(self.lora_A)[:, :, 0, 0]
        return self.scale * torch.einsum("orhw,ri->oihw", _acc(self.lora_B), a)

    def forward(self, x):
        base = self.base_layer
        if self.merged:
            return base(x)
        return kernels.lora_conv2d(
            x,
            base.weight,
            base.bias,
            self.lora_A,
            self.lora_B,
            self.scale,
            base.stride,
            base.padding,
            base.dilation,
            base.padding_mode,
        )


class LoRALinear(_PairLayer):
    def __init__(self, base: nn.Linear, rank: int, alpha: float, scaling: str = SCALING_RULE):
        a_shape = (rank, base.in_features)
        super().__init__(base, rank, alpha, a_shape, (base.out_features, rank), scaling)

    def delta_weight(self) -> torch.Tensor:
        return self.scale * (_acc(self.lora_B) @ _acc(self.lora_A))

    def forward(self, x):
        base = self.base_layer
        if self.merged:
            return base(x)
        return kernels.lora_linear(x, base.weight, base.bias, self.lora_A, self.lora_B, self.scale)


class LoRAQKV(LoRALayer):
    """A fused qkv Linear with separate Q, K and V adapters (rank 0: no adapter there).

    The three adapters run as one low-rank product: A stacked (r_q + r_k + r_v, d_in), B block
    diagonal (3 d, r_q + r_k + r_v), and a per-rank scale lora_scale(alpha, r_part).
    """

    def __init__(
        self, base: nn.Linear, ranks: dict[str, int], alpha: float, scaling: str = SCALING_RULE
    ):
        super().__init__()
        self.base_layer = base
        self.alpha, self.scaling, self.merged = alpha, scaling, False
        self.ranks = {p: int(ranks.get(p, 0)) for p in QKV_PARTS}
        d = base.out_features // 3
        kw = dict(device=base.weight.device, dtype=base.weight.dtype)
        self.lora_A = nn.ParameterDict()
        self.lora_B = nn.ParameterDict()
        for part, r in self.ranks.items():
            if r > 0:
                self.lora_A[part] = nn.Parameter(torch.empty(r, base.in_features, **kw))
                self.lora_B[part] = nn.Parameter(torch.empty(d, r, **kw))
                _init_pair(self.lora_A[part], self.lora_B[part])
        scales = [lora_scale(alpha, r, scaling) for r in self.ranks.values() for _ in range(r)]
        self.register_buffer("rank_scale", torch.tensor(scales, **kw), persistent=False)

    def adapters(self):
        return {
            p: (self.lora_A[p], self.lora_B[p], lora_scale(self.alpha, self.ranks[p], self.scaling))
            for p in self.lora_A
        }

    def _stacked(self) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.base_layer.out_features // 3
        w = self.base_layer.weight
        blocks = [self.lora_B[p] if p in self.lora_B else w.new_zeros(d, 0) for p in QKV_PARTS]
        a = torch.cat([self.lora_A[p] for p in QKV_PARTS if p in self.lora_A])
        return a, torch.block_diag(*blocks)

    def delta_weight(self) -> torch.Tensor:
        a, b = self._stacked()
        b = _acc(b)
        return (b * self.rank_scale.to(b.dtype)) @ _acc(a)

    def forward(self, x):
        base = self.base_layer
        if self.merged:
            return base(x)
        a, b = self._stacked()
        return kernels.lora_linear(x, base.weight, base.bias, a, b, self.rank_scale)


# ---------------------------------------------------------------------------------------------
# injection, merge


@dataclass
class LoRAState:
    """What inject_lora did, kept on the model as `model.adaptsr_lora`."""

    ranks: dict[str, int]  # site -> rank actually used (sites without adapter absent)
    alpha: float
    capped: dict[str, tuple[int, int]] = field(default_factory=dict)  # site -> (asked, used)
    skipped: dict[str, str] = field(default_factory=dict)  # module -> reason
    base_fingerprint: str = ""
    scaling: str = SCALING_RULE  # or RANK_STABILISED: alpha / sqrt(r)
    targets: str = ALL_TARGETS  # the site families adapters were placed on


def _check_rank(site: Site | None, name: str, rank, from_map: bool) -> int:
    if isinstance(rank, bool) or not isinstance(rank, (int, float)) or int(rank) != rank:
        raise UserError(f"rank for {name} must be a whole number, got {rank!r}")
    rank = int(rank)
    if rank < 0:
        raise UserError(f"rank for {name} must be >= 0, got {rank}")
    if site is not None and from_map and rank > site.max_rank:
        raise UserError(
            f"rank {rank} for {name} is above its useful rank {site.max_rank} "
            f"(min(C_in, C_out*k*k) = min({site.d_in}, {site.d_out * site.kernel**2}))"
        )
    return rank


def resolve_ranks(
    model: nn.Module, ranks: int | dict[str, int], targets: str = ALL_TARGETS
) -> tuple[dict[str, int], dict[str, tuple[int, int]]]:
    """Turn a uniform rank or a rank map into {site: rank > 0}, plus the capped sites. A uniform
    rank goes to the sites of the `targets` families only; a rank map may name no other site."""
    sites = {s.name: s for s in lora_sites(model)}
    if not sites:
        raise UserError("this model has no conv or linear layer that LoRA can adapt")
    placed = {s.name for s in target_sites(model, targets)}
    capped: dict[str, tuple[int, int]] = {}
    if isinstance(ranks, dict):
        unknown = [k for k in ranks if k not in sites]
        if unknown:
            example = ", ".join(list(sites)[:3])
            raise UserError(
                f"rank map names {len(unknown)} site(s) this model does not have, e.g. "
                f"{unknown[0]!r} (sites look like: {example}; `adapt allocate` writes valid maps)"
            )
        chosen = {k: _check_rank(sites[k], k, r, from_map=True) for k, r in ranks.items()}
        outside = [k for k, r in chosen.items() if r > 0 and k not in placed]
        if outside:
            raise UserError(
                f"rank map gives {outside[0]!r} ({sites[outside[0]].family}) a rank, outside "
                f"--targets {parse_targets(targets)}"
            )
    else:
        r = _check_rank(None, "uniform LoRA", ranks, from_map=False)
        if r == 0:
            raise UserError("a uniform rank must be at least 1")
        chosen = {}
        for name, site in sites.items():
            if name not in placed:
                continue
            chosen[name] = min(r, site.max_rank)
            if site.max_rank < r:
                capped[name] = (r, site.max_rank)
    return {k: v for k, v in chosen.items() if v > 0}, capped


def base_fingerprint(model: nn.Module) -> str:
    """sha256 of the base weights (names, shapes, dtypes, values), adapters excluded.

    Works on an injected model too: wrapper paths are mapped back to the base names.
    """
    for module in model.modules():
        if isinstance(module, AdapterLayer) and module.merged:
            raise UserError("fingerprint of a model with merged adapters: unmerge first")
    h = hashlib.sha256()
    for name, tensor in sorted(_base_state(model).items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        # flattened first: a 0-dim buffer (BatchNorm's num_batches_tracked) has no byte view
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


# names of adapter tensors in a state dict (LoRA's A and B, DiffFit's scale and shift)
ADAPTER_TENSORS = (".lora_A", ".lora_B", ".difffit_")


def _base_state(model: nn.Module) -> dict[str, torch.Tensor]:
    state = {}
    for name, tensor in model.state_dict().items():
        if any(marker in name for marker in ADAPTER_TENSORS):
            continue
        state[name.replace(".base_layer.", ".")] = tensor
    return state


def inject_lora(
    model: nn.Module,
    ranks: int | dict[str, int],
    alpha: float = 1.0,
    scaling: str = SCALING_RULE,
    targets: str = ALL_TARGETS,
) -> nn.Module:
    """Add adapters in place; afterwards only adapter parameters are trainable.

    `ranks`: an int (uniform rank, capped at each site's useful rank and reported) or a rank
    map {site: rank} (missing sites get no adapter; rank 0 means none; unknown sites, negative
    ranks and ranks above a site's useful rank are errors). `scaling`: alpha/r or
    alpha/sqrt(r). `targets`: the site families to place adapters on (adaptsr.adapt.sites).
    """
    if any(getattr(model, a, None) is not None for a in ("adaptsr_lora", "adaptsr_difffit")):
        raise UserError("this model already has adapters (merge them or load a fresh model)")
    if not (alpha > 0 and math.isfinite(alpha)):
        raise UserError(f"alpha must be a positive finite number, got {alpha}")
    if scaling not in SCALINGS:
        raise UserError(f"unknown scaling {scaling!r} (choose {', '.join(SCALINGS)})")
    targets = parse_targets(targets)
    chosen, capped = resolve_ranks(model, ranks, targets)
    if not chosen:
        raise UserError("the rank map gives no site a rank above 0: nothing to adapt")
    fingerprint = base_fingerprint(model)
    sites = {s.name: s for s in lora_sites(model)}
    skipped = skipped_layers(model)
    by_module: dict[str, dict[str, int]] = {}
    for name, r in chosen.items():
        site = sites[name]
        part = QKV_PARTS[site.block] if site.block is not None else ""
        by_module.setdefault(site.module, {})[part] = r
    model.requires_grad_(False)
    for path, parts in by_module.items():
        base = model.get_submodule(path)
        if isinstance(base, nn.Conv2d):
            layer: LoRALayer = LoRAConv2d(base, parts[""], alpha, scaling)
        elif "" in parts:
            layer = LoRALinear(base, parts[""], alpha, scaling)
        else:
            layer = LoRAQKV(base, parts, alpha, scaling)
        _set_submodule(model, path, layer)
    model.adaptsr_lora = LoRAState(
        dict(chosen), float(alpha), capped, skipped, fingerprint, scaling, targets
    )
    return model


def _set_submodule(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def lora_layers(model: nn.Module) -> dict[str, LoRALayer]:
    return {p: m for p, m in model.named_modules() if isinstance(m, LoRALayer)}


def adapter_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [
        p
        for layer in lora_layers(model).values()
        for a, b, _ in layer.adapters().values()
        for p in (a, b)
    ]


def adapter_train_mode(model: nn.Module) -> nn.Module:
    """The mode adapters train (and `adapt allocate` scores) in, over a frozen base.

    The model runs its training-time forward, so re-parameterised blocks (SPAN) use the
    training branches whose convs carry the adapters; but every normalisation layer that keeps
    running statistics (BatchNorm, tracked InstanceNorm) and every dropout and drop-path layer is
    in eval mode. The base is frozen: its statistics must not drift, and the function the
    adapters correct is the one the merged model computes at inference.
    """
    model.train()
    frozen = (nn.modules.batchnorm._NormBase, nn.modules.dropout._DropoutNd)
    for module in model.modules():
        # DropPath, DropBlock2d, Dropsample: stochastic layers outside torch.nn
        if isinstance(module, frozen) or type(module).__name__.startswith("Drop"):
            module.eval()
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter (LoRA, and DiffFit's scales: adaptsr.adapt.difffit) into its layer,
    in place; the result has exactly the base architecture (plain Conv2d/Linear, same
    parameter names and shapes)."""
    layers = {p: m for p, m in model.named_modules() if isinstance(m, AdapterLayer)}
    with torch.no_grad():  # checked before any weight changes: all layers merge or none
        for path, layer in layers.items():
            if not layer.finite_after_merge():
                raise UserError(f"cannot merge: {path} would get NaN or infinite weights")
    for path, layer in layers.items():
        layer.merge()
        _set_submodule(model, path, layer.base_layer)
    for state in ("adaptsr_lora", "adaptsr_difffit"):
        if hasattr(model, state):
            delattr(model, state)
    return model
