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
"""

from __future__ import annotations

import contextlib
import sys
import types
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

# spandrel modules whose SwinTransformerBlock shares SwinIR's forward (norm1, shifted-window
# attention, norm2 + MLP, both residual) and whose mask is the 3x3-region shifted-window mask.
_BLOCK_MODULES = (
    "spandrel.architectures.SwinIR.__arch.SwinIR",
    "spandrel.architectures.DRCT.__arch.drct_arch",
)
_SPAN_MODULE = "spandrel.architectures.SPAN.__arch.span"
_HAT_MODULE = "spandrel.architectures.HAT.__arch.HAT"
_SEEMORE_MODULE = "spandrel.architectures.SeemoRe.__arch.seemore_arch"


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


def _arch(model: nn.Module) -> str:
    info = getattr(model, "adaptsr_info", None)
    return info.arch if info is not None else type(model).__name__


def size_requirements(model: nn.Module) -> tuple[int, int]:
    """(minimum, multiple_of) of the exported graph's input height/width.

    DRCT pads inside the exported graph, so it accepts any size whose reflect padding fits
    (at least one window); everything else keeps the model's own requirements.
    """
    info = model.adaptsr_info
    if _arch(model) == "DRCT":
        return max(info.min_size, model.window_size), 1
    return info.min_size, info.multiple_of


def reference_forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What the exported graph must compute, with the original (unpatched) modules."""
    if _arch(model) == "DRCT":
        from spandrel.architectures.__arch_helpers.padding import pad_to_multiple

        h, w = x.shape[-2:]
        y = model(pad_to_multiple(x, model.window_size, mode="reflect"))
        return y[:, :, : h * model.upscale, : w * model.upscale]
    return model(x)


@contextlib.contextmanager
def export_rewrites(model: nn.Module) -> Iterator[list[str]]:
    """Patch the model's instances for tracing; yields the names of what was rewritten."""
    patched: list[tuple[nn.Module, str]] = []
    module_patches: list[tuple[object, str, object]] = []  # (python module, name, original)
    names: list[str] = []

    def patch(module: nn.Module, attr: str, fn) -> None:
        setattr(module, attr, types.MethodType(fn, module))
        patched.append((module, attr))

    try:
        for name, module in model.named_modules():
            kind = type(module).__name__
            if type(module).__module__ == _SPAN_MODULE and kind == "Conv3XC":
                if not module.training:
                    with torch.no_grad():
                        module.update_params()  # what its eval forward would do first
                    patch(module, "forward", _conv3xc_forward)
                    names.append(f"{name}: re-parameterized conv fused before tracing")
                continue
            if type(module).__module__ == _HAT_MODULE and kind == "HAT":
                patch(module, "calculate_mask", _hat_calculate_mask)
                patch(module, "check_image_size", _swinir_check_image_size)
                hat = sys.modules[_HAT_MODULE]
                module_patches.append((hat, "window_reverse", hat.window_reverse))
                hat.window_reverse = _reverse
                names.append(f"{name or 'model'}: traceable mask, padding and window reverse")
                continue
            if type(module).__module__ == _SEEMORE_MODULE and kind == "MoELayer":
                if not module.training:
                    patch(module, "forward", _moe_forward)
                    names.append(f"{name}: every expert, weighted (zero when not selected)")
                continue
            if type(module).__module__ not in _BLOCK_MODULES:
                continue
            if kind == "SwinTransformerBlock":
                patch(module, "forward", _block_forward)
                names.append(f"{name}: traceable shifted-window mask")
            elif kind == "SwinIR":
                patch(module, "check_image_size", _swinir_check_image_size)
                names.append(f"{name or 'model'}: traceable pad to window multiple")
            elif kind == "DRCT":
                patch(module, "forward", _drct_forward)
                names.append(f"{name or 'model'}: pad to window multiple and crop")
        yield names
    finally:
        for module, attr in patched:
            delattr(module, attr)
        for pymodule, attr, original in module_patches:
            setattr(pymodule, attr, original)
