"""`python -m benchmarks.gpu_check --out DIR` (`make gpu-check`); see the package's docstring.

The environment comes first: TRITON_INTERPRET is decided before Triton loads, and spandrel may
only be importable once DIR/site is prepared, so the stages are imported after that.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from benchmarks.gpu_check.environment import prepare_site

MODELS = ("safmn-x4", "edsr-baseline-x4", "swinir-light-x4", "swinir-m-x4")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu_check",
        description="The GPU validation run: kernels, layers, training steps, the paper's budgets.",
    )
    p.add_argument("--out", default=os.environ.get("OUT") or "gpu-check-out")
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--quick", action="store_true", help="every stage tiny (the CPU test)")
    p.add_argument("--budget", type=float, default=480.0, help="seconds for all stages")
    p.add_argument("--models", default=",".join(MODELS), help="names, or NAME=CHECKPOINT")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--patch", type=int, default=256, help="HR crop (LR = patch / 4)")
    p.add_argument("--iters", type=int, default=30, help="timed steps per end-to-end variant")
    for name in ("--worker-model", "--worker-json"):
        p.add_argument(name, help=argparse.SUPPRESS)
    p.add_argument("--worker-deadline", type=float, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.patch, args.iters = (
            min(args.batch, 1),
            min(args.patch, 32),
            min(args.iters, 1),
        )
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.device == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"  # before Triton is first imported
    else:
        os.environ.pop("TRITON_INTERPRET", None)
    problems = prepare_site(out)
    # after the environment: these import torch, Triton's users and spandrel
    from benchmarks.gpu_check import run, training_timing

    if args.worker_model:
        return training_timing.e2e_worker(args)
    return run.run_check(args, out, problems)


if __name__ == "__main__":
    sys.exit(main())
