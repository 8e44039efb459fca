"""The one rule for a `--device` value: auto, cpu, cuda or cuda:N, checked before any work."""

from __future__ import annotations

import torch

from adaptsr.core.errors import UserError

CHOICES = "auto, cpu, cuda or cuda:N"


def pick_device(name: str | None) -> str:
    """The device `name` means on this machine ("auto" or None: cuda when PyTorch sees a GPU,
    else cpu). A UserError for anything but cpu and cuda, and for a GPU this machine lacks."""
    if name is None or name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(f"unknown device {name!r} (use {CHOICES})") from None
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"unsupported device {name!r} (use {CHOICES})")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: no CUDA GPU is available to PyTorch here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s)")
    return str(device)
