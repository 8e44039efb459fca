"""Export-time rewrites that make models traceable, with dynamic height/width where they allow it.

SwinIR, DRCT and HAT (spandrel's implementations) build their shifted-window attention mask by
assigning into a tensor sized from Python integers, pick between a stored mask and a recomputed
one by comparing the input size with the training size, and pad to a window multiple only
`if pad_h or pad_w`. A tracer turns each of those into a constant of the example input, so an
export with dynamic H/W is either refused or silently wrong at other sizes. The rewrites below
compute the same mask and padding with tensor operations of the (symbolic) size (SPAN gets one
more: its re-parameterized conv is fused before tracing instead of during it; SeemoRe's
mixture of experts runs every expert with zero weights for the unselected). They are active
only inside `export_rewrites(model)` and change no weights; the parity checks compare the
exported graph with the original, unpatched PyTorch model.

Which classes get which rewrite is a fact of each architecture's profile (adapt/archs/,
`ArchProfile.export_rewrites`, by module path and class name); this module holds the code.
"""

from __future__ import annotations

import contextlib
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from spandrel.architectures.__arch_helpers.padding import pad_to_multiple
from torch import nn

from adaptsr.adapt import archs


def _partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * nW, ws, ws, C); H and W may be symbolic."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // ws, ws, w // ws, ws, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, ws, ws, c)


def _reverse(windows: torch.Tensor, ws: int, h, w) -> torch.Tensor:
    """(B * nW, ws, ws, C) -> (B, H, W, C), without the float division of the original."""
    c = windows.shape[-1]
    x = windows.reshape(-1, h // ws, w // ws, ws, ws, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, h, w, c)


def _regions(n, ws: int, shift: int, device) -> torch.Tensor:
    """Region index 0, 1, 2 along one axis: [0, n-ws), [n-ws, n-shift), [n-shift, n)."""
    i = torch.arange(n, device=device)
    return (i >= n - ws).to(torch.int64) + (i >= n - shift).to(torch.int64)


def shifted_window_mask(h, w, ws: int, shift: int, like: torch.Tensor) -> torch.Tensor:
    """The SW-MSA mask (nW, ws*ws, ws*ws): 0 within a region, -100 across regions."""
    labels = _regions(h, ws, shift, like.device)[:, None] * 3 + _regions(w, ws, shift, like.device)
    labels = labels.reshape(h // ws, ws, w // ws, ws).permute(0, 2, 1, 3).reshape(-1, ws * ws)
    different = labels[:, None, :] != labels[:, :, None]
    zero = torch.zeros((), dtype=like.dtype, device=like.device)
    return torch.where(different, zero - 100.0, zero)


def _block_forward(self, x: torch.Tensor, x_size) -> torch.Tensor:
    """SwinTransformerBlock.forward of SwinIR/DRCT with a traceable mask (same arithmetic)."""
    h, w = x_size
    b, _, c = x.shape
    ws, shift = self.window_size, self.shift_size
    shortcut = x
    x = self.norm1(x).reshape(b, h, w, c)
    if shift > 0:
        x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
    windows = _partition(x, ws).reshape(-1, ws * ws, c)
    mask = shifted_window_mask(h, w, ws, shift, x) if shift > 0 else None
    x = _reverse(self.attn(windows, mask=mask).reshape(-1, ws, ws, c), ws, h, w)
    if shift > 0:
        x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
    x = shortcut + self.drop_path(x.reshape(b, h * w, c))
    return x + self.drop_path(self.mlp(self.norm2(x)))


def pad_to_window(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Reflect-pad bottom/right to a multiple, always (a zero pad is a no-op), so no branch."""
    h, w = x.shape[-2:]
    # ceil(n / m) * m - n rather than (m - n % m) % m: the same number, but a much simpler
    # symbolic expression for the tracer to carry through every reshape (faster export).
    pad_h = (h + multiple - 1) // multiple * multiple - h
    pad_w = (w + multiple - 1) // multiple * multiple - w
    return F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")


def _swinir_check_image_size(self, x: torch.Tensor) -> torch.Tensor:
    return pad_to_window(x, self.window_size)


def _drct_forward(self, x: torch.Tensor) -> torch.Tensor:
    """DRCT itself needs window multiples; the export pads and crops like SwinIR does."""
    h, w = x.shape[-2:]
    y = type(self).forward(self, pad_to_window(x, self.window_size))
    return y[:, :, : h * self.upscale, : w * self.upscale]


def _hat_calculate_mask(self, x_size, dtype) -> torch.Tensor:
    """HAT computes the SW-MSA mask once per forward, in the top-level module."""
    h, w = x_size
    like = torch.zeros((), dtype=dtype, device=self.mean.device)
    return shifted_window_mask(h, w, self.window_size, self.shift_size, like)


def _conv3xc_forward(self, x: torch.Tensor) -> torch.Tensor:
    """SPAN's Conv3XC in eval mode without re-deriving its fused kernel on every call (that
    writes `.data` during forward, which a tracer cannot follow); the kernel is fused once,
    before tracing, by export_rewrites."""
    out = self.eval_conv(x)
    return F.leaky_relu(out, negative_slope=0.05) if self.has_relu else out


def _moe_forward(self, inputs: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """SeemoRe's mixture-of-experts layer without picking experts by the value of a tensor
    (a Python index into its ModuleList, which no tracer can follow): every expert runs and the
    unselected ones are weighted by zero, as its own training branch does. Same output; the
    layer does num_experts / top-k times its arithmetic."""
    weights = F.softmax(self.gate(inputs), dim=1, dtype=torch.float).to(inputs.dtype)
    top_weights, top_experts = torch.topk(weights, self.num_expert)
    dense = torch.zeros_like(weights).scatter(1, top_experts, top_weights)
    out = inputs
    for i, expert in enumerate(self.experts):
        out = out + expert(inputs, k) * dense[:, i : i + 1, None, None]
    return out


def _pads_to_window(model: nn.Module) -> bool:
    info = getattr(model, "adaptsr_info", None)
    profile = archs.find(info.arch if info is not None else type(model).__name__)
    return profile is not None and profile.export_pads_to_window


def size_requirements(model: nn.Module) -> tuple[int, int]:
    """(minimum, multiple_of) of the exported graph's input height/width.

    An architecture whose export pads inside the graph (DRCT) accepts any size whose reflect
    padding fits (at least one window); everything else keeps the model's own requirements.
    """
    info = model.adaptsr_info
    if _pads_to_window(model):
        return max(info.min_size, model.window_size), 1
    return info.min_size, info.multiple_of


def reference_forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What the exported graph must compute, with the original (unpatched) modules."""
    if _pads_to_window(model):
        h, w = x.shape[-2:]
        y = model(pad_to_multiple(x, model.window_size, mode="reflect"))
        return y[:, :, : h * model.upscale, : w * model.upscale]
    return model(x)


@dataclass
class _Patches:
    """What export_rewrites changed, to undo it; `names` says what was rewritten."""

    instances: list[tuple[nn.Module, str]] = field(default_factory=list)
    modules: list[tuple[object, str, object]] = field(default_factory=list)  # (module, name, old)
    names: list[str] = field(default_factory=list)

    def method(self, module: nn.Module, attr: str, fn) -> None:
        setattr(module, attr, types.MethodType(fn, module))
        self.instances.append((module, attr))

    def function(self, pymodule: object, attr: str, fn) -> None:
        self.modules.append((pymodule, attr, getattr(pymodule, attr)))
        setattr(pymodule, attr, fn)

    def undo(self) -> None:
        for module, attr in self.instances:
            delattr(module, attr)
        for pymodule, attr, original in self.modules:
            setattr(pymodule, attr, original)


def _fused_conv(p: _Patches, name: str, module: nn.Module) -> None:
    if not module.training:
        with torch.no_grad():
            module.update_params()  # what its eval forward would do first
        p.method(module, "forward", _conv3xc_forward)
        p.names.append(f"{name}: re-parameterized conv fused before tracing")


def _hat_mask(p: _Patches, name: str, module: nn.Module) -> None:
    p.method(module, "calculate_mask", _hat_calculate_mask)
    p.method(module, "check_image_size", _swinir_check_image_size)
    p.function(sys.modules[type(module).__module__], "window_reverse", _reverse)
    p.names.append(f"{name or 'model'}: traceable mask, padding and window reverse")


def _dense_experts(p: _Patches, name: str, module: nn.Module) -> None:
    if not module.training:
        p.method(module, "forward", _moe_forward)
        p.names.append(f"{name}: every expert, weighted (zero when not selected)")


def _swin_block(p: _Patches, name: str, module: nn.Module) -> None:
    p.method(module, "forward", _block_forward)
    p.names.append(f"{name}: traceable shifted-window mask")


def _swinir_pad(p: _Patches, name: str, module: nn.Module) -> None:
    p.method(module, "check_image_size", _swinir_check_image_size)
    p.names.append(f"{name or 'model'}: traceable pad to window multiple")


def _drct_pad_crop(p: _Patches, name: str, module: nn.Module) -> None:
    p.method(module, "forward", _drct_forward)
    p.names.append(f"{name or 'model'}: pad to window multiple and crop")


# The rewrites a profile may name (ExportRewrite.rewrite).
REWRITES: dict[str, Callable[[_Patches, str, nn.Module], None]] = {
    "fused_conv": _fused_conv,
    "hat_mask": _hat_mask,
    "dense_experts": _dense_experts,
    "swin_block": _swin_block,
    "swinir_pad": _swinir_pad,
    "drct_pad_crop": _drct_pad_crop,
}


def rewrite_table() -> dict[tuple[str, str], str]:
    """(Python module, class name) -> rewrite name, from every architecture profile."""
    return {
        (r.module, r.cls): r.rewrite
        for profile in archs.PROFILES.values()
        for r in profile.export_rewrites
    }


@contextlib.contextmanager
def export_rewrites(model: nn.Module) -> Iterator[list[str]]:
    """Patch the model's instances for tracing; yields the names of what was rewritten."""
    table = rewrite_table()
    patches = _Patches()
    try:
        for name, module in model.named_modules():
            rewrite = table.get((type(module).__module__, type(module).__name__))
            if rewrite is not None:
                REWRITES[rewrite](patches, name, module)
        yield patches.names
    finally:
        patches.undo()
