"""GPU benchmark of the LoRA kernels per layer: `python -m benchmarks.lora_layers [--force]`.

Per layer (batch 8 of 64x64 LR patches), forward + backward time of
- fused: `adaptsr.kernels` with the Triton backend (merged weight, low-rank gradients), in
  both backward designs (one-pass, two-pass; docs/kernels.md),
- eager: the reference path (separate ops, as peft does),
- floor: the frozen base op's forward + input gradient only,
- full: full fine-tuning of the base op (forward + input and weight gradients).

It prints the table and writes it, with the GPU name, versions, date and command, to
docs/benchmarks/kernels.md. Whole training steps per kernel backend are the training
benchmark's job (`adapt train --bench --kernels triton|reference`): kernels know no models.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from adaptsr import kernels
from adaptsr.core.errors import UserError
from adaptsr.core.fileio import atomic_output, check_writable
from adaptsr.core.lazy import lazy_import
from adaptsr.kernels import reference, roofline

# Triton reads TRITON_INTERPRET when it is first imported: imported when a kernel first runs
triton = lazy_import("triton")
triton_lora = lazy_import("adaptsr.kernels.triton_lora")

RANKS = (1, 4, 8, 16)
BATCH, PATCH = 8, 64
VARIANTS = ("one-pass", "two-pass", "eager", "floor", "full")
DESIGNS = {"one-pass": True, "two-pass": False, "fused": None}  # triton_lora.design_override


@dataclass(frozen=True)
class LayerCase:
    model: str
    layer: str
    c_in: int
    c_out: int
    k: int = 0  # 0: linear over tokens; 1 or 3: conv
    qkv: bool = False  # three adapters of rank r stacked, per-rank scale

    @property
    def is_conv(self) -> bool:
        return self.k > 0

    def lora_rank(self, r: int) -> int:
        return 3 * r if self.qkv else r

    def input_shape(self, batch: int = BATCH, patch: int = PATCH) -> tuple[int, ...]:
        if self.is_conv:
            return (batch, self.c_in, patch, patch)
        return (batch, patch * patch, self.c_in)  # every pixel is a token

    def flops(self, batch: int = BATCH, patch: int = PATCH) -> int:
        """Multiply-adds x 2 of one base forward pass."""
        return 2 * batch * patch * patch * self.c_in * self.c_out * max(self.k, 1) ** 2


def layer_cases() -> list[LayerCase]:
    """The layer shapes of the four reference models (conv sites and transformer linears)."""
    return [
        LayerCase("EDSR", "body conv 3x3", 64, 64, 3),
        LayerCase("SAFMN", "CCM conv 3x3", 36, 72, 3),
        LayerCase("SAFMN", "CCM conv 1x1", 72, 36, 1),
        LayerCase("SwinIR-light", "attn qkv", 60, 180, qkv=True),
        LayerCase("SwinIR-light", "mlp fc1", 60, 120),
        LayerCase("SwinIR-light", "RSTB conv 3x3", 60, 60, 3),
        LayerCase("SwinIR-M", "attn qkv", 180, 540, qkv=True),
        LayerCase("SwinIR-M", "mlp fc1", 180, 360),
        LayerCase("SwinIR-M", "RSTB conv 3x3", 180, 180, 3),
    ]


def make_lora(case: LayerCase, r: int, device, dtype, generator=None):
    """Random base weight, bias, A, B and scale for `case` at adapter rank r."""
    kw = dict(device=device, dtype=dtype)

    def rand(*shape, std):
        t = torch.randn(*shape, generator=generator, device="cpu", dtype=torch.float32) * std
        return t.to(**kw)

    k = max(case.k, 1)
    rank = case.lora_rank(r)
    weight = rand(case.c_out, case.c_in, *((k, k) if case.is_conv else ()), std=0.05)
    bias = rand(case.c_out, std=0.05)
    a = rand(rank, case.c_in, *((1, 1) if case.is_conv else ()), std=0.1).requires_grad_()
    if case.qkv:  # block diagonal: Q, K and V adapters of rank r each
        d = case.c_out // 3
        b = torch.block_diag(*[rand(d, r, std=0.1) for _ in range(3)]).requires_grad_()
        scale = torch.tensor([1.0 / r, 2.0 / r, 0.5 / r], device=device).repeat_interleave(r)
    else:
        b = rand(case.c_out, rank, *((k, k) if case.is_conv else ()), std=0.1).requires_grad_()
        scale = 1.0 / r
    return weight, bias, a, b, scale


def layer_step(case: LayerCase, variant: str, weight, bias, a, b, scale) -> Callable:
    """fn(x, dy): one forward + backward of `variant`; x requires grad."""
    pad = case.k // 2

    def base(x, w):
        return F.conv2d(x, w, bias, 1, pad) if case.is_conv else F.linear(x, w, bias)

    def lora(x):
        if case.is_conv:
            return kernels.lora_conv2d(x, weight, bias, a, b, scale, 1, pad)
        return kernels.lora_linear(x, weight, bias, a, b, scale)

    if variant in DESIGNS:

        def step(x, dy):
            a.grad = b.grad = None
            with kernels.use_backend("triton"), fused_design(DESIGNS[variant]):
                lora(x).backward(dy)

    elif variant == "eager":

        def step(x, dy):
            a.grad = b.grad = None
            with kernels.use_backend("reference"):
                lora(x).backward(dy)

    elif variant == "floor":

        def step(x, dy):
            base(x, weight).backward(dy)

    elif variant == "full":
        w_full = weight.detach().clone().requires_grad_()

        def step(x, dy):
            w_full.grad = None
            base(x, w_full).backward(dy)

    else:
        raise ValueError(f"unknown variant {variant!r}")
    return step


def rel_error(got: torch.Tensor, want: torch.Tensor) -> float:
    want = want.double()
    return ((got.double() - want).norm() / want.norm().clamp_min(1e-30)).item()


@contextlib.contextmanager
def fused_design(one_pass: bool | None):
    """Force the fused backward's design (None: the cost model picks per call)."""
    previous = triton_lora.design_override
    triton_lora.design_override = one_pass
    try:
        yield
    finally:
        triton_lora.design_override = previous


def auto_design(case: LayerCase, r: int, dtype, batch: int = BATCH, patch: int = PATCH) -> str:
    """The design the cost model picks for this layer (what plain `lora_*` calls run)."""
    e = torch.finfo(dtype).bits // 8
    math_kind = "fp32" if dtype == torch.float32 else "bf16"
    if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32:
        math_kind = "tf32"
    args = (batch * patch * patch, case.c_in, case.c_out, max(case.k, 1), case.lora_rank(r), e)
    return "one-pass" if roofline.prefer_one_pass(*args, math_kind) else "two-pass"


def check_layer(case: LayerCase, r: int, device, dtype, generator=None) -> float:
    """Largest relative error of the output and x, A, B gradients of both fused designs
    against fp64."""
    weight, bias, a, b, scale = make_lora(case, r, device, dtype, generator)
    x = torch.randn(case.input_shape(2, 16), generator=generator).to(device, dtype)
    x.requires_grad_()
    dy = None
    worst = 0.0
    for one_pass in (True, False):
        with kernels.use_backend("triton"), fused_design(one_pass):
            if case.is_conv:
                y = kernels.lora_conv2d(x, weight, bias, a, b, scale, 1, case.k // 2)
            else:
                y = kernels.lora_linear(x, weight, bias, a, b, scale)
            if dy is None:
                dy = torch.randn(y.shape, generator=generator).to(device, dtype)
            got = (y, *torch.autograd.grad(y, (x, a, b), dy))
        worst = max(worst, _max_error(case, got, x, weight, bias, a, b, scale, dy))
    return worst


def _max_error(case, got, x, weight, bias, a, b, scale, dy) -> float:
    x64, a64, b64 = (t.detach().double().requires_grad_() for t in (x, a, b))
    w64, bias64 = weight.double(), bias.double()
    s64 = scale.double() if isinstance(scale, torch.Tensor) else scale
    if case.is_conv:
        y64 = reference.lora_conv2d(x64, w64, bias64, a64, b64, s64, 1, case.k // 2)
    else:
        y64 = reference.lora_linear(x64, w64, bias64, a64, b64, s64)
    want = (y64, *torch.autograd.grad(y64, (x64, a64, b64), dy.double()))
    return max(rel_error(g, w) for g, w in zip(got, want, strict=True))


def time_ms(fn: Callable[[int], None], runs: int, warmup: int, device) -> float:
    """Median milliseconds of fn(i) (i cycles over the input sets) with CUDA events."""
    for i in range(warmup):
        fn(i)
    if device.type != "cuda":  # CPU smoke runs: host clock
        times = []
        for i in range(runs):
            t0 = time.perf_counter()
            fn(i)
            times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)
    torch.cuda.synchronize(device)
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(runs)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(runs)]
    for i in range(runs):
        starts[i].record()
        fn(i)
        ends[i].record()
    torch.cuda.synchronize(device)
    return statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends, strict=True))


def input_sets(case: LayerCase, device, dtype, batch: int, patch: int, min_bytes: int):
    """Enough (x, dy) pairs that cycling through them overflows the cache (at least two)."""
    shape = case.input_shape(batch, patch)
    out_shape = (*shape[:-1], case.c_out) if not case.is_conv else (batch, case.c_out, patch, patch)
    per_set = (math.prod(shape) + math.prod(out_shape)) * torch.finfo(dtype).bits // 8
    n = min(16, max(2, math.ceil(min_bytes / per_set)))
    sets = []
    for _ in range(n):
        x = torch.randn(shape, device=device, dtype=dtype).requires_grad_()
        sets.append((x, torch.randn(out_shape, device=device, dtype=dtype)))
    return sets


def bench_layer(
    case: LayerCase,
    r: int,
    variants,
    device,
    dtype,
    runs: int = 50,
    warmup: int = 10,
    batch: int = BATCH,
    patch: int = PATCH,
    min_bytes: int = 256 << 20,
) -> dict[str, float]:
    """Median fwd+bwd milliseconds of each variant at adapter rank r."""
    params = make_lora(case, r, device, dtype)
    sets = input_sets(case, device, dtype, batch, patch, min_bytes)
    result = {}
    for variant in variants:
        step = layer_step(case, variant, *params)

        def fn(i, step=step):
            x, dy = sets[i % len(sets)]
            x.grad = None
            step(x, dy)

        result[variant] = time_ms(fn, runs, warmup, torch.device(device))
    return result


# ---------------------------------------------------------------------------------------------
# report


def _fmt(v: float) -> str:
    return "n/a" if v is None or math.isnan(v) else f"{v:.3f}"


def layer_table(rows: list[dict]) -> str:
    """rows: {case, dtype, r, auto, one-pass, two-pass, eager, floor, full, check} -> markdown;
    fused is the design the cost model picks (`auto`), the other design is shown beside it."""
    head = (
        "| model | layer | dtype | r | fused ms (design) | other design ms | eager ms "
        "| floor ms | full FT ms | fused/floor | eager/fused | full/fused | max rel err |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for row in rows:
        c, f = row["case"], row[row["auto"]]
        other = row["two-pass" if row["auto"] == "one-pass" else "one-pass"]
        lines.append(
            f"| {c.model} | {c.layer} ({c.c_in}->{c.c_out}) | {row['dtype']} | {row['r']} "
            f"| {_fmt(f)} ({row['auto']}) | {_fmt(other)} | {_fmt(row['eager'])} "
            f"| {_fmt(row['floor'])} | {_fmt(row['full'])} "
            f"| {_fmt(f / row['floor'])} | {_fmt(row['eager'] / f)} | {_fmt(row['full'] / f)} "
            f"| {row['check']:.1e} |"
        )
    return head + "\n".join(lines) + "\n"


def render_report(meta: dict, layer_rows: list[dict]) -> str:
    """The whole markdown page: provenance, then the table."""
    return (
        "# LoRA kernel benchmark\n\n"
        f"- GPU: {meta['gpu']}\n"
        f"- torch {meta['torch']}, Triton {meta['triton']}, CUDA {meta['cuda']}\n"
        f"- date: {meta['date']}\n"
        f"- command: `{meta['command']}`\n"
        f"- TF32 for matmuls: {meta['tf32']}; TF32 for cuDNN convs: {meta['cudnn_tf32']}\n\n"
        f"Per layer: median forward + backward time over {meta['runs']} runs (CUDA events), "
        f"batch {BATCH} of {PATCH}x{PATCH} LR patches, inputs rotated through buffers larger "
        "than the L2 cache. fused = Triton backend (merged weight + low-rank gradient kernels) "
        "in the design the cost model picks (kernels/roofline.py), the other design beside it; "
        "eager = reference path (separate ops); floor = frozen base op, forward + input "
        "gradient; full FT = base op with weight gradient. qkv rows stack Q, K and V adapters "
        "of rank r (total 3r) with per-rank scales. Max rel err: output and x, A, B gradients "
        "of both designs against fp64 on a small input.\n\n"
        "## Per layer\n\n" + layer_table(layer_rows) + "\nEnd to end (whole training steps "
        "with each kernel backend): `adapt train --bench --kernels triton|reference`.\n"
    )


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.lora_layers", description=__doc__)
    p.add_argument("--out", default="docs/benchmarks/kernels.md", help="markdown report path")
    p.add_argument("--force", action="store_true", help="overwrite an existing report")
    p.add_argument("--dtypes", default="float32,bfloat16", help="comma-separated torch dtypes")
    p.add_argument("--ranks", default=",".join(map(str, RANKS)))
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--tf32", action="store_true", help="allow TF32 in fp32 matmuls and convs")
    return p.parse_args(argv)


def main(argv=None) -> int:
    given = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(given)
    if not torch.cuda.is_available():
        print("error: no CUDA device: this benchmark needs a GPU", file=sys.stderr)
        return 2
    try:
        check_writable(args.out, args.force)
        dtypes = [getattr(torch, name) for name in args.dtypes.split(",")]
        ranks = [int(r) for r in args.ranks.split(",")]
    except (UserError, AttributeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    device = torch.device("cuda")
    # one setting for every variant; off by default, so that fp32 rows are checked exactly
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.allow_tf32 = args.tf32
    gen = torch.Generator().manual_seed(0)
    layer_rows = []
    for dtype in dtypes:
        dname = str(dtype).removeprefix("torch.")
        for case in layer_cases():
            base = bench_layer(case, 1, ("floor", "full"), device, dtype, runs=args.runs)
            for r in ranks:
                variants = ("one-pass", "two-pass", "eager")
                t = bench_layer(case, r, variants, device, dtype, runs=args.runs)
                err = check_layer(case, r, device, dtype, gen)
                auto = auto_design(case, r, dtype)
                row = dict(case=case, dtype=dname, r=r, check=err, auto=auto, **base, **t)
                layer_rows.append(row)
                print(layer_table([row]).splitlines()[-1], flush=True)
    meta = dict(
        gpu=torch.cuda.get_device_name(device),
        torch=torch.__version__,
        triton=triton.__version__,
        cuda=torch.version.cuda,
        date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        command=" ".join(["python -m benchmarks.lora_layers", *given]),
        tf32=torch.backends.cuda.matmul.allow_tf32,
        cudnn_tf32=torch.backends.cudnn.allow_tf32,
        runs=args.runs,
    )
    report = render_report(meta, layer_rows)
    print(report)
    with atomic_output(args.out, args.force) as tmp:
        Path(tmp).write_text(report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
