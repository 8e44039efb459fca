"""`--compile` and `--cuda-graphs`: the adapted model under torch.compile, with a fallback.

`--compile` compiles the model with inductor in its default mode: elementwise work (norms,
activations, attention's softmax and reshapes, LoRA's casts) is fused into generated kernels
while convolutions and matmuls stay in cuDNN/cuBLAS, and the fused LoRA ops run as opaque
custom ops (`adaptsr.kernels.fused`). "max-autotune" spends minutes benchmarking GEMM templates
that rarely beat cuDNN at these shapes, so it is not used. `--cuda-graphs` compiles with
"reduce-overhead": the compiled graphs are replayed as CUDA graphs (inductor's CUDA graph
trees), which removes the launch overhead that bounds small SR models; training crops have a
fixed shape, so each graph is captured once. A graph inductor cannot capture (a CPU tensor, a
dynamic shape) runs without CUDA graphs and the run says so once.

The first call runs one trial forward and backward under the compiled model, with the random
state saved and restored, so that a model torch.compile cannot handle falls back to eager
with one line before any training step counts; the gradients it leaves are cleared by the
step's zero_grad.
"""

from __future__ import annotations

import torch

from adaptsr.core.errors import UserError
from adaptsr.core.lazy import lazy_import

dynamo_utils = lazy_import("torch._dynamo.utils")  # loads the compiler: only when it runs

COMPILE_MODE = "default"
GRAPHS_MODE = "reduce-overhead"
BACKEND = "inductor"  # the CPU tests use "aot_eager" (inductor's C++ build takes minutes there)


def check_device(cuda_graphs: bool, device: torch.device) -> None:
    if cuda_graphs and device.type != "cuda":
        raise UserError(f"--cuda-graphs needs a CUDA device; this run is on {device}")


class CompiledModel:
    """Calls `module` compiled (with CUDA graphs when `cuda_graphs`), or eagerly when
    torch.compile fails on it; `say` prints the one-line notes."""

    def __init__(self, module, cuda_graphs: bool, say, backend: str | None = None):
        self.module = module
        self.cuda_graphs = cuda_graphs
        self.say = say
        self.mode = GRAPHS_MODE if cuda_graphs else COMPILE_MODE
        self.compiled = torch.compile(module, backend=backend or BACKEND, mode=self.mode)
        self.tried = False

    @property
    def eager(self) -> bool:
        return self.compiled is None

    def __call__(self, x):
        if not self.tried:
            self.tried = True
            self._trial(x)
        if self.compiled is None:
            return self.module(x)
        if self.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()  # the last step's outputs are done
        return self.compiled(x)

    def _trial(self, x) -> None:
        skips = dynamo_utils.counters["inductor"]["cudagraph_skips"]
        devices = [x.device] if x.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices):
                if self.cuda_graphs:
                    torch.compiler.cudagraph_mark_step_begin()
                out = self.compiled(x)
                if out.requires_grad:
                    out.float().mean().backward()
        except Exception as e:  # anything torch.compile raises: the model itself runs eagerly
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            self.say(f"note: cannot compile the model ({reason[:200]}); training without it")
            self.compiled = None
            return
        if self.cuda_graphs and dynamo_utils.counters["inductor"]["cudagraph_skips"] > skips:
            self.say(
                "note: part of the model cannot be captured in CUDA graphs; that part runs "
                "compiled without them (TORCH_LOGS=perf_hints says why)"
            )
