"""Which path a LoRA layer call takes: the fused Triton ops or the PyTorch reference.

`lora_linear` and `lora_conv2d` pick the fused path (`adaptsr.kernels.fused`) on CUDA where it
applies and the reference path (`adaptsr.kernels.reference`) otherwise. Backends: "auto" (the
default), "reference" (plain PyTorch everywhere) and "triton" (the fused path wherever the layer
is supported, on any device: CPU tensors need TRITON_INTERPRET=1). Which fused design runs is the
cost model's choice (`adaptsr.kernels.roofline`), made inside the Triton wrappers.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os

import torch

from adaptsr.core.errors import UserError
from adaptsr.kernels import fused, reference  # fused registers the custom ops, without Triton

_backend = "auto"
BACKENDS = ("auto", "reference", "triton")
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def get_backend() -> str:
    return _backend


def set_backend(name: str) -> None:
    global _backend
    if name not in BACKENDS:
        raise ValueError(f"unknown kernel backend {name!r} (choose from {', '.join(BACKENDS)})")
    _backend = name


@contextlib.contextmanager
def use_backend(name: str):
    previous = get_backend()
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


def _fused_ok(x, weight, bias, lora_a, lora_b, scale) -> bool:
    """Common conditions: one device and float dtype, frozen base, constant scale."""
    if _backend == "reference" or lora_a.shape[0] == 0:
        return False
    tensors = [x, weight, lora_a, lora_b] + ([bias] if bias is not None else [])
    if any(t.dtype != x.dtype or t.device != x.device for t in tensors):
        return False
    if x.dtype not in _DTYPES or torch.is_autocast_enabled(x.device.type):
        return False
    if weight.requires_grad or (bias is not None and bias.requires_grad):
        return False  # the fused backward gives no weight or bias gradient
    if isinstance(scale, torch.Tensor) and (
        scale.requires_grad or scale.dim() > 1 or scale.numel() not in (1, lora_a.shape[0])
    ):
        return False
    if _backend == "triton" and x.device.type != "cuda":
        if x.dtype == torch.bfloat16:
            return False  # the interpreter's tl.dot misreads bf16 operands
        if os.environ.get("TRITON_INTERPRET") != "1":
            raise UserError(
                "the triton kernel backend needs CUDA tensors (or TRITON_INTERPRET=1 on CPU)"
            )
        return True
    return x.is_cuda and _TRITON_INSTALLED


# some CUDA builds of torch come without Triton: keep them on the reference path (looked up
# once here, without importing it, so that torch.compile traces the dispatch as plain Python)
_TRITON_INSTALLED = importlib.util.find_spec("triton") is not None


def fused_linear_supported(x, weight, bias, lora_a, lora_b, scale) -> bool:
    """Whether `lora_linear` takes the fused path for these arguments under the current backend."""
    shapes_ok = (
        x.dim() >= 1
        and weight.dim() == 2
        and lora_a.dim() == 2
        and lora_b.dim() == 2
        and x.shape[-1] == weight.shape[1] == lora_a.shape[1]
        and lora_b.shape == (weight.shape[0], lora_a.shape[0])
    )
    return shapes_ok and _fused_ok(x, weight, bias, lora_a, lora_b, scale)


def fused_conv2d_supported(
    x, weight, bias, lora_a, lora_b, scale, stride=1, padding=0, dilation=1, padding_mode="zeros"
) -> bool:
    """Whether `lora_conv2d` takes the fused path: k in {1, 3}, stride 1, padding k // 2,
    dilation 1, zero padding, plus the common conditions."""
    if x.dim() != 4 or weight.dim() != 4 or lora_a.dim() != 4 or lora_b.dim() != 4:
        return False
    c_out, c_in, kh, kw = weight.shape
    r = lora_a.shape[0]
    if kh != kw or kh not in (1, 3) or x.shape[1] != c_in:
        return False
    if lora_a.shape != (r, c_in, 1, 1) or lora_b.shape != (c_out, r, kh, kw):
        return False
    pair = reference.pair
    if padding_mode != "zeros" or pair(stride) != (1, 1) or pair(dilation) != (1, 1):
        return False
    if (padding if isinstance(padding, str) else pair(padding)) not in ((kh // 2,) * 2, "same"):
        return False
    return _fused_ok(x, weight, bias, lora_a, lora_b, scale)


def _without_autocast(fn, x, weight, bias, lora_a, lora_b, *rest):
    """Run `fn` with every operand cast once to the autocast dtype, autocast off.

    Autocast runs linear and conv in its low-precision dtype anyway; casting up front gives the
    fused path one dtype to work with (training uses bf16 autocast on CUDA), and gradients flow
    back through the casts to the fp32 adapter parameters.
    """
    device = x.device.type
    dtype = torch.get_autocast_dtype(device)

    def cast(t):
        return t.to(dtype) if t is not None and t.is_floating_point() else t

    with torch.autocast(device, enabled=False):
        return fn(cast(x), cast(weight), cast(bias), cast(lora_a), cast(lora_b), *rest)


def lora_linear(x, weight, bias, lora_a, lora_b, scale):
    """y = x W^T + b + ((x A^T) * scale) B^T; gradients for x, A and B (W and b are frozen)."""
    if _backend != "reference" and torch.is_autocast_enabled(x.device.type):
        return _without_autocast(lora_linear, x, weight, bias, lora_a, lora_b, scale)
    if fused_linear_supported(x, weight, bias, lora_a, lora_b, scale):
        return fused.lora_linear(x, weight, bias, lora_a, lora_b, scale)
    return reference.lora_linear(x, weight, bias, lora_a, lora_b, scale)


def lora_conv2d(
    x, weight, bias, lora_a, lora_b, scale, stride=1, padding=0, dilation=1, padding_mode="zeros"
):
    """y = W * x + b + scale * B * (A * x): A (r, C_in, 1, 1), B (C_out, r, k, k)."""
    if _backend != "reference" and torch.is_autocast_enabled(x.device.type):
        return _without_autocast(
            lora_conv2d,
            x,
            weight,
            bias,
            lora_a,
            lora_b,
            scale,
            stride,
            padding,
            dilation,
            padding_mode,
        )
    args = (x, weight, bias, lora_a, lora_b, scale)
    if fused_conv2d_supported(*args, stride, padding, dilation, padding_mode):
        return fused.lora_conv2d(*args)
    return reference.lora_conv2d(*args, stride, padding, dilation, padding_mode)
