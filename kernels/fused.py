"""Fused LoRA linear and conv as `torch.library` custom ops (merge on the fly, low-rank grads).

Forward: W' = W + B diag(s) A (Triton), then one cuBLAS/cuDNN call with W'. Backward: dX from
W' (one base-sized cuBLAS/cuDNN call, the same as the frozen base layer's), dA and dB from the
low-rank factors (Triton, `triton_lora.lora_grads`); the full-size dW is never formed. Only x and
W' are saved for backward. W and the bias are frozen: no gradient flows to them.

The four ops (`adaptsr::lora_merge`, `adaptsr::lora_grads`, `adaptsr::lora_linear`,
`adaptsr::lora_conv2d`) have fake implementations (shapes and strides without running a
kernel), so torch.compile traces a model with adapters in one graph and CUDA graphs capture
it; the two layer ops carry their backward through `register_autograd`. The layer ops return W'
as a second output, so that backward can reuse it (it is not differentiable). Registering the
ops does not import Triton: the kernels module is loaded when an op first runs.
"""

from __future__ import annotations

import functools
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from adaptsr.core.lazy import lazy_import

triton_lora = lazy_import("adaptsr.kernels.triton_lora")  # imports triton: when a kernel runs


def _new_like_weight(weight: Tensor) -> Tensor:
    return torch.empty_like(weight, memory_format=torch.contiguous_format)


# ---------------------------------------------------------------------------------------------
# the two Triton pieces


@torch.library.custom_op("adaptsr::lora_merge", mutates_args=())
def lora_merge(weight: Tensor, lora_a: Tensor, lora_b: Tensor, scale: Tensor) -> Tensor:
    """W + B diag(scale) A per kernel tap (scale: (r,) fp32); a new contiguous tensor."""
    return triton_lora.merge(weight, lora_a, lora_b, scale)


@lora_merge.register_fake
def _(weight, lora_a, lora_b, scale):
    return _new_like_weight(weight)


@torch.library.custom_op("adaptsr::lora_grads", mutates_args=())
def lora_grads(
    x: Tensor, dy: Tensor, lora_a: Tensor, lora_b: Tensor, scale: Tensor, kernel_size: int
) -> tuple[Tensor, Tensor]:
    """(dA, dB) of the s-scaled LoRA branch from x and dL/dy (see `triton_lora.lora_grads`)."""
    return triton_lora.lora_grads(x, dy, lora_a, lora_b, scale, kernel_size)


@lora_grads.register_fake
def _(x, dy, lora_a, lora_b, scale, kernel_size):
    return lora_a.new_empty(lora_a.shape), lora_b.new_empty(lora_b.shape)


# ---------------------------------------------------------------------------------------------
# the layer ops


@torch.library.custom_op("adaptsr::lora_linear", mutates_args=())
def lora_linear_op(
    x: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],  # noqa: UP045 - the form older torch versions' schemas know
    lora_a: Tensor,
    lora_b: Tensor,
    scale: Tensor,
) -> tuple[Tensor, Tensor]:
    """(y, W'): y = x W'^T + b with W' = W + B diag(scale) A."""
    merged = triton_lora.merge(weight, lora_a, lora_b, scale)
    return F.linear(x, merged, bias), merged


@lora_linear_op.register_fake
def _(x, weight, bias, lora_a, lora_b, scale):
    merged = _new_like_weight(weight)
    return F.linear(x, merged, bias), merged


@torch.library.custom_op("adaptsr::lora_conv2d", mutates_args=())
def lora_conv2d_op(
    x: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],  # noqa: UP045 - the form older torch versions' schemas know
    lora_a: Tensor,
    lora_b: Tensor,
    scale: Tensor,
) -> tuple[Tensor, Tensor]:
    """(y, W'): y = W' * x + b, stride 1, padding k // 2, with W' = W + B diag(scale) A."""
    merged = triton_lora.merge(weight, lora_a, lora_b, scale)
    return F.conv2d(x, merged, bias, 1, weight.shape[-1] // 2), merged


@lora_conv2d_op.register_fake
def _(x, weight, bias, lora_a, lora_b, scale):
    merged = _new_like_weight(weight)
    return F.conv2d(x, merged, bias, 1, weight.shape[-1] // 2), merged


def _setup(ctx, inputs, output):
    x, _, _, lora_a, lora_b, scale = inputs
    merged = output[1]
    ctx.mark_non_differentiable(merged)
    ctx.save_for_backward(x, merged, lora_a, lora_b, scale)


def _linear_backward(ctx, dy, _merged_grad):
    x, merged, lora_a, lora_b, scale = ctx.saved_tensors
    dx = grad_a = grad_b = None
    if ctx.needs_input_grad[0]:
        dx = dy.matmul(merged)
    if ctx.needs_input_grad[3] or ctx.needs_input_grad[4]:
        rows_x, rows_dy = x.reshape(-1, x.shape[-1]), dy.reshape(-1, dy.shape[-1])
        grad_a, grad_b = lora_grads(rows_x, rows_dy, lora_a, lora_b, scale, 1)
    return dx, None, None, grad_a, grad_b, None


def _conv_backward(ctx, dy, _merged_grad):
    x, merged, lora_a, lora_b, scale = ctx.saved_tensors
    k = merged.shape[-1]
    dx = grad_a = grad_b = None
    if ctx.needs_input_grad[0]:
        dx = torch.nn.grad.conv2d_input(x.shape, merged, dy, 1, k // 2)
    if ctx.needs_input_grad[3] or ctx.needs_input_grad[4]:
        grad_a, grad_b = lora_grads(x, dy, lora_a, lora_b, scale, k)
    return dx, None, None, grad_a, grad_b, None


lora_linear_op.register_autograd(_linear_backward, setup_context=_setup)
lora_conv2d_op.register_autograd(_conv_backward, setup_context=_setup)


# ---------------------------------------------------------------------------------------------
# what the dispatcher calls


def scale_vector(scale, rank: int, device: torch.device) -> Tensor:
    """The LoRA scaling as an fp32 (rank,) tensor: a float, a 0-d tensor or one value per rank."""
    if isinstance(scale, Tensor):
        return scale.detach().to(device=device, dtype=torch.float32).expand(rank).contiguous()
    if torch.compiler.is_compiling():  # a constant of the compiled graph
        return torch.full((rank,), float(scale), device=device, dtype=torch.float32)
    return _constant_scale(float(scale), rank, device)


@functools.lru_cache(maxsize=256)
def _constant_scale(value: float, rank: int, device: torch.device) -> Tensor:
    # a layer's float scale never changes: build its vector once, not one fill per call
    return torch.full((rank,), value, device=device, dtype=torch.float32)


def lora_linear(x, weight, bias, lora_a, lora_b, scale):
    s = scale_vector(scale, lora_a.shape[0], x.device)
    return lora_linear_op(x, weight, bias, lora_a, lora_b, s)[0]


def lora_conv2d(x, weight, bias, lora_a, lora_b, scale):
    """Stride 1, padding k // 2, dilation 1, zero padding (the caller checks)."""
    s = scale_vector(scale, lora_a.shape[0], x.device)
    return lora_conv2d_op(x, weight, bias, lora_a, lora_b, s)[0]
