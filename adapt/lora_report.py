"""What an injected model's adapters cost: trainable parameters per site and in total,
absolute and as a share of the base model."""

from __future__ import annotations

from torch import nn

from adaptsr.adapt.lora import LoRAState, lora_sites
from adaptsr.core.errors import UserError


def base_parameter_count(model: nn.Module) -> int:
    """Parameters of the base model (adapters and buffers such as attention masks excluded)."""
    return sum(
        p.numel() for n, p in model.named_parameters() if ".lora_A" not in n and ".lora_B" not in n
    )


def lora_report(model: nn.Module) -> dict:
    """Trainable adapter parameters per site and in total, absolute and as % of the base."""
    state: LoRAState | None = getattr(model, "adaptsr_lora", None)
    if state is None:
        raise UserError("this model has no adapters")
    sites = {s.name: s for s in lora_sites(model)}
    base_params = base_parameter_count(model)
    rows = []
    for name, r in state.ranks.items():
        site = sites[name]
        rows.append({"site": name, "kind": site.kind, "rank": r, "params": r * site.cost_per_rank})
    total = sum(r["params"] for r in rows)
    return {
        "sites": rows,
        "total": total,
        "base_params": base_params,
        "percent": 100.0 * total / base_params,
        "capped": {k: list(v) for k, v in state.capped.items()},
        "skipped": dict(state.skipped),
    }
