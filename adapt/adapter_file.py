"""Adapter files: only the adapter tensors of an injected model, with the metadata
(adaptsr.core.contracts.AdapterMeta) needed to reload them onto the right base and check them.

A file is read once, into an `AdapterFile` (path, metadata, tensors, checksum); applying it to a
base model injects the adapters its rank map describes and loads the tensors.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save_file
from torch import nn

from adaptsr.adapt.difffit import DiffFitState, difffit_tensors, inject_difffit
from adaptsr.adapt.lora import LoRAState, base_fingerprint, inject_lora, lora_layers
from adaptsr.core.contracts import AdapterMeta
from adaptsr.core.errors import UserError
from adaptsr.core.fileio import atomic_output, check_readable
from adaptsr.core.version import __version__

# what an adapter's tensors may hold (copied into the model's own dtype when applied)
ADAPTER_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _adapter_params(model: nn.Module) -> dict[str, nn.Parameter]:
    """`<site>.lora_A` / `<site>.lora_B` (`<layer>.difffit_scale` / `.difffit_shift`) -> the
    injected parameter, as the file names them."""
    params = dict(difffit_tensors(model))
    for path, layer in lora_layers(model).items():
        for part, (a, b, _) in layer.adapters().items():
            site = f"{path}.{part}" if part else path
            params[f"{site}.lora_A"], params[f"{site}.lora_B"] = a, b
    return params


def _read_metadata(data: bytes) -> dict:
    """The `__metadata__` of a safetensors file's JSON header (8-byte little-endian length)."""
    size = int.from_bytes(data[:8], "little")
    if len(data) < 8 or size > len(data) - 8:
        raise ValueError("the header is cut short")
    header = json.loads(data[8 : 8 + size])
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    return header.get("__metadata__") or {}


@dataclass(frozen=True)
class AdapterFile:
    """One adapter file, read once and checked."""

    path: Path
    meta: AdapterMeta
    tensors: dict[str, torch.Tensor]
    sha256: str  # of the whole file

    @property
    def fingerprint(self) -> str:
        """The file's identity in export metadata: its sha256, first 16 hex digits."""
        return self.sha256[:16]

    @classmethod
    def read(cls, path: str | os.PathLike) -> AdapterFile:
        """Tensors and metadata, with one clear error for anything malformed."""
        path = check_readable(path, "adapter file")
        data = path.read_bytes()
        try:
            metadata = _read_metadata(data)
            tensors = load_tensors(data)
        except (SafetensorError, ValueError, RecursionError) as e:
            raise UserError(f"cannot read adapter {path}: corrupt or not safetensors ({e})") from e
        meta = AdapterMeta.from_json(metadata, path)
        odd = next((k for k, t in tensors.items() if t.dtype not in ADAPTER_DTYPES), None)
        if odd is not None:
            raise UserError(
                f"adapter {path} is damaged: {odd} holds {str(tensors[odd].dtype)[6:]} values; "
                "adapter weights are floating-point (float16, bfloat16, float32, float64)"
            )
        bad = next((k for k, t in tensors.items() if not bool(torch.isfinite(t).all())), None)
        if bad is not None:
            raise UserError(f"adapter {path} is damaged: {bad} holds NaN or infinite values")
        return cls(path, meta, tensors, hashlib.sha256(data).hexdigest())

    def apply(self, model: nn.Module) -> nn.Module:
        """Inject the adapters the file describes and load its tensors, in place; refused
        (clearly) when the file was trained on another base model."""
        expected = self.meta.base_fingerprint
        current = base_fingerprint(model)
        if expected != current:
            raise UserError(
                f"adapter {self.path} was trained on another base model "
                f"(adapter's base fingerprint {expected or 'missing'}, this model's {current})"
            )
        self._check_model_info(model)
        meta = self.meta
        if meta.mode == "difffit":
            inject_difffit(model, meta.targets, layers=meta.layers)
        else:
            inject_lora(model, dict(meta.ranks), meta.alpha, meta.scaling, meta.targets)
        params = _adapter_params(model)
        if set(self.tensors) != set(params):
            missing = sorted(set(params) - set(self.tensors))
            extra = sorted(set(self.tensors) - set(params))
            raise UserError(
                f"adapter {self.path} does not match its rank map "
                f"(missing {missing[:2]}, extra {extra[:2]})"
            )
        with torch.no_grad():
            for key, param in params.items():
                t = self.tensors[key]
                if t.shape != param.shape:
                    raise UserError(
                        f"adapter {self.path}: {key} has shape {tuple(t.shape)}, expected "
                        f"{tuple(param.shape)}"
                    )
                param.copy_(t.to(param.dtype))
        return model

    def _check_model_info(self, model: nn.Module) -> None:
        """The recorded arch and scale must be the model's: matching weights with another
        arch or scale recorded means the metadata was edited, and the merge would carry it."""
        info = getattr(model, "adaptsr_info", None)
        if info is None:
            return
        meta = self.meta
        if meta.arch and meta.arch != info.arch:
            raise UserError(
                f"adapter {self.path}: key 'arch' is {meta.arch!r}, but the model is {info.arch!r}"
            )
        if meta.scale is not None and meta.scale != info.scale:
            raise UserError(
                f"adapter {self.path}: key 'scale' is {meta.scale}, but the model is x{info.scale}"
            )


def save_adapter(
    model: nn.Module, path: str | os.PathLike, force: bool = False, degradation: str = ""
) -> Path:
    """Write only the adapter tensors, with the metadata needed to reload and check them
    (`degradation`: what the training LR was made with, AdapterMeta.degradation)."""
    state: LoRAState | None = getattr(model, "adaptsr_lora", None)
    difffit: DiffFitState | None = getattr(model, "adaptsr_difffit", None)
    if state is None and difffit is None:
        raise UserError("this model has no adapters to save")
    path = Path(path)
    if path.suffix != ".safetensors":
        raise UserError(f"{path}: adapter files are .safetensors")
    info = getattr(model, "adaptsr_info", None)
    common = dict(
        arch=info.arch if info else "",
        scale=int(info.scale) if info else None,
        adaptsr_version=__version__,
        degradation=degradation,
    )
    if state is not None:
        meta = AdapterMeta(
            ranks=dict(state.ranks),
            alpha=state.alpha,
            base_fingerprint=state.base_fingerprint,
            scaling=state.scaling,
            targets=state.targets,
            **common,
        )
    else:
        meta = AdapterMeta(
            ranks={},
            alpha=1.0,
            base_fingerprint=difffit.base_fingerprint,
            mode="difffit",
            targets=difffit.targets,
            layers=tuple(difffit.layers),
            **common,
        )
    tensors = {k: p.detach().cpu().contiguous() for k, p in _adapter_params(model).items()}
    with atomic_output(path, force=force) as tmp:
        save_file(tensors, str(tmp), metadata=meta.to_json())
    return path


def read_adapter(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and the metadata as written (strings): `AdapterFile.read` for callers that
    want the raw pair."""
    adapter = AdapterFile.read(path)
    return adapter.tensors, adapter.meta.to_json()


def load_adapter(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Inject adapters as described by the file and load its tensors, in place.

    Refused (clearly) when the file was trained on a different base model.
    """
    return AdapterFile.read(path).apply(model)
