"""The training benchmark (`adapt train --bench`): steps per second and peak memory of each
model and mode, each in a fresh process, on pre-degraded batches.
"""

from __future__ import annotations

import multiprocessing as mp
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
import torch.nn.functional as F

from adaptsr import kernels
from adaptsr.adapt.degradations import Degrader
from adaptsr.adapt.models import model_info
from adaptsr.adapt.train.config import TrainConfig
from adaptsr.adapt.train.distributed import Dist, resolve_device
from adaptsr.adapt.train.graphs import CompiledModel, check_device
from adaptsr.adapt.train.model import build_trainable
from adaptsr.core.errors import UserError

try:
    import resource  # POSIX: the process's lifetime peak RSS
except ImportError:  # Windows: `adapt train` (which imports this module) must still start
    resource = None


def bench_defaults(device: str) -> dict:
    """Batch, HR crop and timed steps: the paper's batch 8 and LR 64x64 on a GPU; a batch and
    crop that a 2-core CPU gets through in seconds elsewhere."""
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda:
        return {"batch": 8, "patch": 256, "iters": 30}
    return {"batch": 2, "patch": 128, "iters": 10}


def benchmark(
    models: list[str],
    modes: list[str],
    batch: int,
    patch: int,
    iters: int,
    device: str = "auto",
    rank: int = 8,
    warmup: int = 2,
    kernels: str = "auto",
    compile: bool = False,
    cuda_graphs: bool = False,
) -> list[dict]:
    """Training steps per second and peak memory for each (model, mode), with the LoRA kernels
    of `kernels` (auto, reference, triton: see `adaptsr.kernels`), optionally under
    torch.compile (`compile`, `cuda_graphs`: as `adapt train --compile / --cuda-graphs`).

    Each configuration runs in a fresh process, so its peak RSS is its own. A step is what the
    training loop does per iteration on a pre-degraded batch: forward (bf16 autocast on CUDA),
    L1 loss, backward, Adam step.
    """
    rows = []
    for model in models:
        for mode in modes:
            if mode not in ("lora", "full"):
                raise UserError(f"benchmark modes are lora and full, got {mode!r}")
            with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
                args = (model, mode, batch, patch, iters, warmup, device, rank, kernels)
                job = pool.submit(_bench_one, *args, compile, cuda_graphs)
                rows.append(job.result())
    return rows


def _peak_rss_mb() -> float:
    """The kernel's high-water mark of this process's RSS (0 where it keeps none we can read)."""
    if resource is None:
        return 0.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _bench_one(
    spec,
    mode,
    batch,
    patch,
    iters,
    warmup,
    device_name,
    rank,
    kernel_backend,
    compile=False,
    cuda_graphs=False,
) -> dict:
    warnings.filterwarnings("ignore", category=UserWarning)  # architectures' deprecation notes

    # the speed of a step does not depend on the weights' values: random bases time as well
    cfg = TrainConfig(
        model=spec, mode=mode, rank=rank, batch=batch, patch=patch, kernels=kernel_backend,
        allow_random_base=True,
    ).resolved()  # fmt: skip
    device = resolve_device(device_name, Dist())
    check_device(cuda_graphs, device)
    model, params = build_trainable(cfg, device)
    notes = []
    net = CompiledModel(model, cuda_graphs, notes.append) if compile or cuda_graphs else model
    scale = model_info(model).scale
    optimizer = torch.optim.Adam(params, lr=cfg.lr)
    g = torch.Generator(device).manual_seed(0)
    hr = torch.rand(batch, 3, patch, patch, generator=g, device=device)
    lr = Degrader("bicubic", scale, 0, device)(hr)
    cuda = device.type == "cuda"
    rss_before = _rss_mb()
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    times, warmup_s = [], 0.0
    for i in range(warmup + iters):
        t0 = time.perf_counter()
        with kernels.use_backend(cfg.kernels):  # the loop's step: autocast on the forward only
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                sr = net(lr)
            loss = F.l1_loss(sr.float(), hr)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
        optimizer.step()
        if cuda:
            torch.cuda.synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
        else:
            warmup_s += time.perf_counter() - t0  # with compilation
    times.sort()
    row = {
        "model": spec,
        "mode": mode,
        "kernels": cfg.kernels,
        "compiled": "-" if net is model else ("eager (fallback)" if net.eager else net.mode),
        "notes": notes,
        "warmup_s": warmup_s,
        "trainable": sum(p.numel() for p in params),
        "batch": batch,
        "lr_size": patch // scale,
        "it_s": 1.0 / times[len(times) // 2],
        "device": str(device) if not cuda else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads(),
        # the kernel's high-water mark is updated lazily: it can trail the current RSS
        "peak_rss_mb": max(_peak_rss_mb(), _rss_mb() or 0.0),
        "rss_before_mb": rss_before,
    }
    if cuda:
        row["gpu_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return row


def bench_table(rows: list[dict]) -> str:
    """A markdown table of benchmark rows."""
    gpu = any("gpu_peak_mb" in r for r in rows)
    head = "| model | mode | kernels | compile | trainable params | batch | LR crop | it/s | "
    head += "peak GPU memory (MiB) |" if gpu else "peak RSS (MiB) | RSS before training (MiB) |"
    lines = [head, "|" + "---|" * (10 if not gpu else 9)]
    for r in rows:
        cells = [
            r["model"],
            r["mode"],
            r["kernels"] if r["mode"] == "lora" else "-",
            r.get("compiled", "-"),
            f"{r['trainable']:,}",
            str(r["batch"]),
            f"{r['lr_size']}x{r['lr_size']}",
            f"{r['it_s']:.2f}",
        ]
        if gpu:
            cells.append(f"{r['gpu_peak_mb']:.0f}")
        else:
            cells += [f"{r['peak_rss_mb']:.0f}", f"{r['rss_before_mb'] or 0:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
