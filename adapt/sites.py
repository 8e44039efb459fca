"""Sites: the layers of a model that can carry an adapter, and the families `--targets` picks.

Every adaptable nn.Conv2d and nn.Linear is a *site* with a stable name (its module path; a fused
`qkv` projection gives three sites, `<path>.q`, `.k`, `.v`, with separate ranks). Each site has
a kind, and each kind belongs to one family:

    family   kinds                        what
    conv     conv                         every (non-grouped, square-kernel) nn.Conv2d
    attn     attn-q, attn-k, attn-v,      the q/k/v parts of a fused qkv projection and the
             attn-o                       attention output projection (proj/out_proj/o_proj
                                          inside an attn/attention module)
    mlp      mlp                          fc1/fc2, or any linear inside an mlp/ffn module
    linear   linear                       every other nn.Linear (patch embeddings, SAFMN-like
                                          heads, ...)

`--targets conv,mlp,attn` (any of the four, comma-separated; `all`, the default, is every
family) keeps the sites of those families only.

Grouped and depthwise convs are skipped: their dense update could not be merged into grouped
weights, and a LoRA pair would cost more than the layer itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from adaptsr.adapt.archs import LORA_SKIPS
from adaptsr.core.errors import UserError

QKV_PARTS = ("q", "k", "v")
FAMILIES = {
    "conv": ("conv",),
    "attn": ("attn-q", "attn-k", "attn-v", "attn-o"),
    "mlp": ("mlp",),
    "linear": ("linear",),
}
ALL_TARGETS = "all"


@dataclass(frozen=True)
class Site:
    """One place that can carry an adapter."""

    name: str  # module path, plus .q/.k/.v for a split qkv projection
    kind: str  # conv, mlp, attn-q, attn-k, attn-v, attn-o, linear
    module: str  # path of the nn.Conv2d / nn.Linear in the base model
    d_in: int  # C_in or in_features
    d_out: int  # C_out or out_features (of this site's row block for q/k/v)
    kernel: int  # k for a kxk conv, 1 for a linear
    block: int | None = None  # 0, 1, 2 for q, k, v: row block of the fused weight

    @property
    def family(self) -> str:
        return next(f for f, kinds in FAMILIES.items() if self.kind in kinds)

    @property
    def cost_per_rank(self) -> int:
        """Trainable parameters one rank costs: C_in + C_out*k*k (conv), d_in + d_out (linear)."""
        return self.d_in + self.d_out * self.kernel * self.kernel

    @property
    def max_rank(self) -> int:
        """The rank of a full update: min(C_in, C_out*k*k) for a conv, min(d_in, d_out) else."""
        return min(self.d_in, self.d_out * self.kernel * self.kernel)

    @property
    def base_params(self) -> int:
        return self.d_in * self.d_out * self.kernel * self.kernel


class AdapterLayer(nn.Module):
    """What every adapter wrapper (LoRA, DiffFit) is: a frozen `base_layer` plus trainable
    tensors; site discovery looks through it to the base layer."""

    base_layer: nn.Module
    merged: bool

    def finite_after_merge(self) -> bool:
        """Whether merging would leave every weight finite (merge_lora checks all first)."""
        raise NotImplementedError

    def merge(self) -> None:
        """Fold the adapter into base_layer's tensors, in place."""
        raise NotImplementedError


def parse_targets(text: str | None) -> str:
    """The canonical spelling of a --targets value: `all`, or families in FAMILIES order joined
    by commas (`+` also separates, as run specs write it)."""
    if text is None or str(text).strip().lower() in ("", ALL_TARGETS):
        return ALL_TARGETS
    names = [t.strip().lower() for t in str(text).replace("+", ",").split(",") if t.strip()]
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        raise UserError(
            f"unknown target {unknown[0]!r} (choose families from {', '.join(FAMILIES)}, "
            "comma-separated, or all)"
        )
    chosen = [f for f in FAMILIES if f in names]
    return ALL_TARGETS if len(chosen) == len(FAMILIES) else ",".join(chosen)


def target_sites(model: nn.Module, targets: str | None = ALL_TARGETS) -> list[Site]:
    """The sites of `model` in the families `targets` names; refused in one line when the
    model has none there (SAFMN has no attention or MLP linear layer)."""
    targets = parse_targets(targets)
    sites = lora_sites(model)
    if not sites:
        raise UserError("this model has no conv or linear layer that can be adapted")
    if targets == ALL_TARGETS:
        return sites
    families = targets.split(",")
    chosen = [s for s in sites if s.family in families]
    if not chosen:
        present = sorted({s.family for s in sites}, key=list(FAMILIES).index)
        raise UserError(
            f"--targets {targets}: this model has no site there (its sites are "
            f"{', '.join(present)})"
        )
    return chosen


def _linear_kind(path: str) -> str:
    leaf = path.rsplit(".", 1)[-1]
    parent = path.rsplit(".", 2)[-2] if path.count(".") >= 1 else ""
    if leaf in ("fc1", "fc2") or "mlp" in parent or "ffn" in parent:
        return "mlp"
    if leaf in ("proj", "out_proj", "o_proj") and ("attn" in parent or "attention" in parent):
        return "attn-o"
    return "linear"


def _skip_reason(module: nn.Module, parent: nn.Module, leaf: str) -> str | None:
    for rule in LORA_SKIPS:  # per-architecture rules live in the profiles (adapt/archs/)
        if rule.matches(module, parent, leaf):
            return rule.reason
    if isinstance(module, nn.Conv2d):
        if module.groups != 1:
            kind = "depthwise" if module.groups == module.in_channels else "grouped"
            return f"{kind} conv (groups={module.groups}): a dense update cannot be merged"
        if module.kernel_size[0] != module.kernel_size[1]:
            return f"non-square kernel {module.kernel_size}"
    return None


def _layers(module: nn.Module, prefix: str = ""):
    """(path, base conv/linear, parent, name) in module order; an injected adapter layer
    yields its base layer."""
    for name, child in module.named_children():
        path = f"{prefix}.{name}" if prefix else name
        if isinstance(child, AdapterLayer):
            yield path, child.base_layer, module, name
        elif isinstance(child, (nn.Conv2d, nn.Linear)):
            yield path, child, module, name
        else:
            yield from _layers(child, path)


def _sites_and_skips(model: nn.Module) -> tuple[list[Site], dict[str, str]]:
    sites: list[Site] = []
    skipped: dict[str, str] = {}
    for path, base, parent, leaf in _layers(model):
        reason = _skip_reason(base, parent, leaf)
        if reason:
            skipped[path] = reason
        elif isinstance(base, nn.Conv2d):
            k = base.kernel_size[0]
            sites.append(Site(path, "conv", path, base.in_channels, base.out_channels, k))
        elif path.rsplit(".", 1)[-1] == "qkv" and base.out_features % 3 == 0:
            d = base.out_features // 3
            for i, part in enumerate(QKV_PARTS):
                sites.append(
                    Site(f"{path}.{part}", f"attn-{part}", path, base.in_features, d, 1, i)
                )
        else:
            kind = _linear_kind(path)
            sites.append(Site(path, kind, path, base.in_features, base.out_features, 1))
    return sites, skipped


def lora_sites(model: nn.Module) -> list[Site]:
    """Every adaptable conv and linear of `model` (injected or not), in module order."""
    return _sites_and_skips(model)[0]


def skipped_layers(model: nn.Module) -> dict[str, str]:
    """Conv/linear layers that are not sites, with the reason."""
    return _sites_and_skips(model)[1]
