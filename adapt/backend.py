"""The PyTorch inference backend: a model from `load_model` behind serve's `Backend` interface.

A runner only: `adaptsr.adapt.open.open_model` loads the model and its adapter and builds it."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from adaptsr.adapt.devices import pick_device
from adaptsr.adapt.models import model_info
from adaptsr.serve.backends import Backend


class TorchBackend(Backend):
    """A PyTorch model from adaptsr.load_model (base, with an adapter, or merged); `model` is
    the module itself, for callers that need PyTorch beyond inference."""

    kind = "pytorch"

    def __init__(self, model: nn.Module, device: str = "auto", name: str | None = None):
        info = model_info(model)
        device = pick_device(device)
        self.model = model.eval().to(device)
        self.device = device
        self.name = name or info.name
        self.scale = info.scale
        self.rule = info.size_rule()

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
            return self.model(x).float().cpu().numpy()

    def _cuda(self) -> bool:
        return self.device.startswith("cuda")

    def sync(self) -> None:
        if self._cuda():
            torch.cuda.synchronize(self.device)

    def reset_peak_memory(self) -> None:
        if self._cuda():
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_memory_bytes(self) -> int | None:
        return int(torch.cuda.max_memory_allocated(self.device)) if self._cuda() else None
