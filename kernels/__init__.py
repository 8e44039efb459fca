"""Triton kernels for the LoRA forward and backward, and their PyTorch reference paths.

`lora_linear` and `lora_conv2d` are what the LoRA layers call; `adaptsr.kernels.dispatch` picks
the fused Triton path or the reference path per call, under the backend set here ("auto",
"reference" or "triton"). Triton is imported only when the fused path runs.

Modules: dispatch (backend and path choice), fused (the custom ops), triton_lora (the Triton
kernels), roofline (the cost model that picks a fused design), reference (plain PyTorch).
Benchmarks and the compile check live outside the package, in benchmarks/.
"""

from adaptsr.kernels.dispatch import (
    BACKENDS,
    fused_conv2d_supported,
    fused_linear_supported,
    get_backend,
    lora_conv2d,
    lora_linear,
    set_backend,
    use_backend,
)

__all__ = [
    "BACKENDS",
    "fused_conv2d_supported",
    "fused_linear_supported",
    "get_backend",
    "lora_conv2d",
    "lora_linear",
    "set_backend",
    "use_backend",
]
