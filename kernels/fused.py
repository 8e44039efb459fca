"""Fused LoRA linear and conv as autograd Functions (merge on the fly, low-rank gradients).

Forward: W' = W + B diag(s) A (Triton), then one cuBLAS/cuDNN call with W'. Backward: dX from
W' (one base-sized cuBLAS/cuDNN call, the same as the frozen base layer's), dA and dB from the
low-rank factors (Triton, `triton_lora.lora_grads`); the full-size dW is never formed. Only x and
W' are saved for backward. W and the bias are frozen: no gradient flows to them.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from adaptsr.kernels import triton_lora


class _LoRALinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, lora_a, lora_b, scale):
        merged = triton_lora.merge(weight, lora_a, lora_b, scale)
        ctx.save_for_backward(x, merged, lora_a, lora_b, scale)
        return F.linear(x, merged, bias)

    @staticmethod
    def backward(ctx, dy):
        x, merged, lora_a, lora_b, scale = ctx.saved_tensors
        dx = grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            dx = dy.matmul(merged)
        if ctx.needs_input_grad[3] or ctx.needs_input_grad[4]:
            grad_a, grad_b = triton_lora.lora_grads(
                x.reshape(-1, x.shape[-1]), dy.reshape(-1, dy.shape[-1]), lora_a, lora_b, scale, 1
            )
        return dx, None, None, grad_a, grad_b, None


class _LoRAConv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, lora_a, lora_b, scale):
        pad = weight.shape[-1] // 2
        merged = triton_lora.merge(weight, lora_a, lora_b, scale)
        ctx.save_for_backward(x, merged, lora_a, lora_b, scale)
        return F.conv2d(x, merged, bias, 1, pad)

    @staticmethod
    def backward(ctx, dy):
        x, merged, lora_a, lora_b, scale = ctx.saved_tensors
        k = merged.shape[-1]
        dx = grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            dx = torch.nn.grad.conv2d_input(x.shape, merged, dy, 1, k // 2)
        if ctx.needs_input_grad[3] or ctx.needs_input_grad[4]:
            grad_a, grad_b = triton_lora.lora_grads(x, dy, lora_a, lora_b, scale, k)
        return dx, None, None, grad_a, grad_b, None


def scale_vector(scale, rank: int, device: torch.device) -> torch.Tensor:
    """The LoRA scaling as an fp32 (rank,) tensor: a float, a 0-d tensor or one value per rank."""
    if isinstance(scale, torch.Tensor):
        return scale.detach().to(device=device, dtype=torch.float32).expand(rank).contiguous()
    return _constant_scale(float(scale), rank, device)


@functools.lru_cache(maxsize=256)
def _constant_scale(value: float, rank: int, device: torch.device) -> torch.Tensor:
    # a layer's float scale never changes: build its vector once, not one fill per call
    return torch.full((rank,), value, device=device, dtype=torch.float32)


def lora_linear(x, weight, bias, lora_a, lora_b, scale):
    s = scale_vector(scale, lora_a.shape[0], x.device)
    return _LoRALinear.apply(x, weight, bias, lora_a, lora_b, s)


def lora_conv2d(x, weight, bias, lora_a, lora_b, scale):
    """Stride 1, padding k // 2, dilation 1, zero padding (the caller checks)."""
    s = scale_vector(scale, lora_a.shape[0], x.device)
    return _LoRAConv2d.apply(x, weight, bias, lora_a, lora_b, s)
