"""LR for training batches: the degrader of a run (one, or one per HR-only source of a mixed
run) and the (LR, HR) batches it makes; pairs keep their own LR crops."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from adaptsr.adapt.data import Scan, derive_seed
from adaptsr.adapt.degradations import Degrader


class SourceDegraders:
    """One degrader per HR-only source of a mixed run, with the state_dict interface of one
    Degrader (so checkpoints and exact resume cover each of them)."""

    def __init__(self, degraders: dict[int, object]):
        self.degraders = degraders

    def lr(self, batch: dict, hr: torch.Tensor, device) -> tuple[torch.Tensor, int]:
        """LR for a mixed batch: the pairs' crops, the others degraded by their source's
        degrader; and how many were degraded."""
        source = batch["source"].tolist()
        parts = batch.get("lr_of") or [None] * len(source)
        out: list[torch.Tensor | None] = [
            p.to(device, non_blocking=True) if p is not None else None for p in parts
        ]
        degraded = 0
        for s, degrader in self.degraders.items():
            idx = [i for i, v in enumerate(source) if v == s and out[i] is None]
            if idx:
                with torch.no_grad():
                    lr = degrader(hr[idx])
                for i, t in zip(idx, lr, strict=True):
                    out[i] = t
                degraded += len(idx)
        return torch.stack(out), degraded

    def state_dict(self) -> dict:
        return {str(s): d.state_dict() for s, d in self.degraders.items()}

    def load_state_dict(self, state: dict) -> None:
        for s, d in self.degraders.items():
            d.load_state_dict(state[str(s)])


def run_degrader(found: Scan, default, scale: int, seed: int, device):
    """What makes LR from HR in a run: None (pairs only), one degrader (HR-only sources of the
    run's degradation), or SourceDegraders (a mixed run: one per HR-only source). `default` and
    each source's degradation: a preset name, a degradation file or its settings."""
    if found.paired:
        return None
    if not found.mixed:
        return make_degrader(default, scale, seed, device)
    return SourceDegraders(
        {
            i: make_degrader(s.degradation or default, scale, derive_seed(seed, i), device)
            for i, s in enumerate(found.sources)
            if not s.paired
        }
    )


def batch_lr(batch: dict, hr: torch.Tensor, degrader, device) -> tuple[torch.Tensor, int]:
    """The LR batch for `hr`, and how many of its images were degraded on the fly."""
    if "lr" in batch:
        return batch["lr"].to(device, non_blocking=True), 0
    if isinstance(degrader, SourceDegraders):
        return degrader.lr(batch, hr, device)
    with torch.no_grad():
        return degrader(hr), hr.shape[0]


def degraded_batches(
    dataset, plan, degrader, device
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(LR, HR) batches for the keys of `plan`: LR from the pairs, or made by `degrader`."""
    for keys in plan:
        items = [dataset[k] for k in keys]
        hr = torch.stack([item["hr"] for item in items]).to(device)
        if degrader is None:
            lr = torch.stack([item["lr"] for item in items]).to(device)
        else:
            with torch.no_grad():  # closed before the yield: the consumer may need gradients
                lr = degrader(hr)
        yield lr, hr


def make_degrader(kind, scale: int, seed: int, device):
    """The batched degradation of adaptsr.adapt.degradations: HR (B, 3, H, W) -> LR. `kind`:
    a preset name, a degradation file, a recorded table or the settings (Degrader's kind)."""
    return Degrader(kind, scale, seed, device)
