"""Compile the LoRA Triton kernels for a CUDA target without a GPU: `python -m
benchmarks.compile_check [--arch 90] [--quick]` (sm_90: H100/H200), with TRITON_INTERPRET
unset.

The interpreter that runs the kernels on CPU skips the compiler's type checks, shared-memory
sizing and register allocation; this compiles each kernel at representative block sizes with
the launch options the wrappers use and prints shared memory, registers and spill bytes per
thread (from cuobjdump). Needs Triton's bundled ptxas and cuobjdump, not a GPU.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass

from adaptsr.core.lazy import lazy_import

# Triton reads TRITON_INTERPRET when it is first imported: imported when a kernel is compiled
triton = lazy_import("triton")
triton_backends = lazy_import("triton.backends.compiler")
triton_compiler = lazy_import("triton.compiler")
triton_lora = lazy_import("adaptsr.kernels.triton_lora")

SMEM_LIMIT = 227 * 1024  # bytes of shared memory one block may use on sm_90


@dataclass
class Compiled:
    kernel: str
    config: str
    shared: int
    registers: int | None
    spill_bytes: int | None


def _signature(fn, pointers: dict[str, str], constexprs: dict):
    """Every argument: its pointer type, constexpr, or i32."""
    return {
        name: "constexpr" if name in constexprs else pointers.get(name, "i32")
        for name in fn.arg_names
    }


def configs(dtype: str = "bf16"):
    """(kernel function, pointer types, constexprs, launch options) at the block sizes the
    wrappers pick for typical layers (r = 8 padded to 16) and for the widest ones."""
    T = triton_lora
    t = "*" + dtype
    prec = "ieee" if dtype == "fp32" else "tf32"
    bp_one = 32 if dtype == "fp32" else 64
    merge_ptrs = dict(w_ptr=t, b_ptr=t, a_ptr=t, s_ptr="*fp32", out_ptr=t)
    act_ptrs = dict(x_ptr=t, dy_ptr=t, a_ptr=t, s_ptr="*fp32", b_ptr=t, z_ptr=t, dz_ptr=t)
    grad_ptrs = dict(x_ptr=t, dy_ptr=t, z_ptr=t, dz_ptr=t, s_ptr="*fp32", pa_ptr="*fp32",
                     pb_ptr="*fp32")  # fmt: skip
    one_ptrs = dict(x_ptr=t, dy_ptr=t, a_ptr=t, s_ptr="*fp32", b_ptr=t, pa_ptr="*fp32",
                    pb_ptr="*fp32")  # fmt: skip
    blocks = dict(K=3, PAD=1, PREC=prec, BLOCK_P=64, BLOCK_I=64, BLOCK_O=64, BLOCK_R=16)
    one = dict(blocks, K=1, PAD=0, BLOCK_P=bp_one, BLOCK_O=128)
    return [
        (T._merge_kernel, merge_ptrs, dict(KK=9, BLOCK_O=64, BLOCK_I=64), {}),
        (T._finish_kernel, dict(pa_ptr="*fp32", pb_ptr="*fp32", ga_ptr=t, gb_ptr=t),
         dict(BLOCK=T.FINISH_BLOCK), {}),
        (T._activations_kernel, act_ptrs, blocks, dict(num_warps=8)),
        (T._grads_kernel, grad_ptrs, blocks, {}),
        (T._one_pass_kernel, one_ptrs, one, dict(num_warps=8, num_stages=2)),
        (T._one_pass_kernel, one_ptrs, dict(one, K=3, PAD=1, BLOCK_I=256, BLOCK_R=64),
         dict(num_warps=8, num_stages=2)),
    ]  # fmt: skip


def compile_kernel(fn, pointers, constexprs, options, arch: int = 90) -> Compiled:
    signature = _signature(fn, pointers, constexprs)
    index = {name: i for i, name in enumerate(fn.arg_names)}
    source = triton_compiler.ASTSource(
        fn, signature, constexprs={(index[k],): v for k, v in constexprs.items()}
    )
    compiled = triton.compile(
        source, target=triton_backends.GPUTarget("cuda", arch, 32), options=options
    )
    registers, spills = _resource_usage(compiled.asm["cubin"])
    config = ", ".join(f"{k}={v}" for k, v in {**constexprs, **options}.items())
    return Compiled(fn.__name__, config, compiled.metadata.shared, registers, spills)


def _resource_usage(cubin: bytes) -> tuple[int | None, int | None]:
    """(registers, stack bytes per thread) from cuobjdump, or (None, None) without it."""
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    if not os.path.exists(tool):
        return None, None
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.cubin")
        with open(path, "wb") as f:
            f.write(cubin)
        out = subprocess.run(
            [tool, "--dump-resource-usage", path], capture_output=True, text=True
        ).stdout
    m = re.search(r"REG:(\d+) STACK:(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else (None, None)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compile_check")
    parser.add_argument("--arch", type=int, default=90, help="CUDA compute capability x 10")
    parser.add_argument("--quick", action="store_true", help="bf16 typical configurations only")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        # triton.jit then builds interpreter functions, which do not compile
        print("error: unset TRITON_INTERPRET to compile the kernels", file=sys.stderr)
        return 2
    jobs = [("bf16", c) for c in configs("bf16")[1:5]]
    if not args.quick:
        jobs = [(dtype, c) for dtype in ("fp32", "bf16") for c in configs(dtype)]
    failed = False
    for dtype, (fn, pointers, constexprs, options) in jobs:
        c = compile_kernel(fn, pointers, constexprs, options, args.arch)
        print(
            f"sm_{args.arch} {dtype} {c.kernel} [{c.config}]: shared {c.shared} B, "
            f"{c.registers} registers, {c.spill_bytes} B stack per thread",
            flush=True,
        )
        if c.shared > SMEM_LIMIT:
            print(f"error: {c.kernel} needs {c.shared} B of shared memory (limit {SMEM_LIMIT})")
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
