"""The GPU check's stages in order, each with its share of the time budget: results and
failures gathered, DIR/results.json rewritten after every stage, the report written last."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

from adaptsr.adapt.degradations import degradations_per_second
from benchmarks.gpu_check import kernel_checks, layer_timing, projections, training_timing
from benchmarks.gpu_check.report import one_line, plain, render

# of --budget; a stage that overruns takes from the next ones (each checks its deadline)
STAGE_SHARE = {"kernels": 0.10, "layers": 0.20, "e2e": 0.60, "loop": 0.10}


def describe_machine(device: torch.device) -> dict:
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "command": " ".join(["python -m benchmarks.gpu_check", *sys.argv[1:]]),
    }
    try:
        import triton  # only its version: the kernels load it themselves when they first run

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
        props = torch.cuda.get_device_properties(device)
        info["sms"] = props.multi_processor_count
        info["memory_gib"] = round(props.total_memory / 2**30, 1)
        smi = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
        try:
            info["driver"] = subprocess.run(smi, capture_output=True, text=True).stdout.strip()
        except OSError:
            info["driver"] = None
    else:
        info["gpu"] = f"none (CPU, {os.cpu_count()} cores)"
    return info


class Check:
    """One run of every stage: results and failures so far, and each stage's deadline."""

    def __init__(self, args, out: Path, problems: list[str]):
        self.args, self.out = args, out
        self.start = time.time()
        self.device = torch.device(args.device)
        self.results: dict = {"environment": describe_machine(self.device)}
        self.failures: list[str] = list(problems)
        self.deadlines, t = {}, self.start
        for stage, share in STAGE_SHARE.items():
            t += share * args.budget
            self.deadlines[stage] = t
        cuda = self.device.type == "cuda"
        self.dtypes = [torch.float32, torch.float16] + ([torch.bfloat16] if cuda else [])

    def stage(self, name: str, fn: Callable[[], None]) -> None:
        t0 = time.time()
        try:
            fn()
        except Exception as e:
            self.failures.append(f"{name}: {one_line(e)} (traceback in {name}.log)")
            (self.out / f"{name}.log").write_text(traceback.format_exc())
        self.results.setdefault("seconds", {})[name] = round(time.time() - t0, 1)
        self.save()
        print(f"[{time.time() - self.start:5.0f} s] {name} done", file=sys.stderr, flush=True)

    def save(self) -> None:
        (self.out / "results.json").write_text(json.dumps(self.results, indent=1, default=plain))

    def kernels(self) -> None:
        # the quick CPU run: fp32 only, one opcheck (tests/test_kernels.py checks every op)
        quick, device, results = self.args.quick, self.device, self.results
        dts = self.dtypes[:1] if quick else self.dtypes
        results["accuracy"] = kernel_checks.kernel_accuracy(device, dts, quick)
        self.failures.extend(kernel_checks.accuracy_misses(results["accuracy"]))
        ops = ["lora_merge"] if quick else None
        results["opcheck"] = kernel_checks.opchecks(device, dts, ops)
        self.failures.extend(
            f"opcheck: {r['op']} {r['dtype']}: {r['status']}"
            for r in results["opcheck"]
            if r["status"] != "ok"
        )
        if device.type == "cuda":
            results["graph_capture"] = kernel_checks.graph_capture(device)
            if not results["graph_capture"]["ok"]:
                self.failures.append(
                    f"kernels: CUDA graph replay differs from eager: {results['graph_capture']}"
                )

    def layers(self) -> None:
        cases, ranks, (runs, warmup), (batch, patch), dts = layer_timing.cases_and_settings(
            self.args.quick
        )
        rows, skipped = layer_timing.layer_rows(
            self.device, dts, ranks, runs, warmup, batch, patch, self.deadlines["layers"], cases
        )
        self.results["layers"] = [
            dict(r, model=r["case"].model, layer=r["case"].layer) for r in rows
        ]
        self.failures.extend(f"{s}: not measured (out of time)" for s in skipped)
        self.failures.extend(layer_timing.layer_misses(rows))

    def e2e(self) -> None:
        args = self.args
        rows, problems = training_timing.run_e2e(args, self.out, self.deadlines["e2e"] - 10)
        self.results["e2e"] = rows
        self.failures.extend(problems)
        deg = {}
        for kind in ("realesrgan", "bicubic"):
            deg[kind] = degradations_per_second(
                kind, args.batch, args.patch, device=self.device, iters=1 if args.quick else 5
            )
        self.results["degradation"] = deg
        self.failures.extend(training_timing.e2e_misses(rows, deg, args.batch))
        self.results["budgets"] = projections.budgets(rows, deg, args.batch)
        self.failures.extend(projections.budget_misses(self.results["budgets"]))

    def loop(self) -> None:
        deadline = max(self.deadlines["loop"], time.time() + 60)
        loop = self.results["loop"] = training_timing.loop_run(self.args, self.out, deadline)
        if "error" in loop:
            self.failures.append(f"loop: {loop['error']}")
        self.failures.extend(f"loop: {n}" for n in loop.get("notes", []))

    def finish(self) -> int:
        self.results["failures"] = failures = self.failures
        self.save()
        report = render(self.results, failures)
        (self.out / "report.md").write_text(report + "\n")
        print(f"FAILURES ({len(failures)})" + (":" if failures else ""))
        for line in failures:
            print(f"  {line}")
        print(
            f"\n{report}\nwrote {self.out / 'report.md'} and {self.out / 'results.json'} "
            f"({time.time() - self.start:.0f} s)"
        )
        return 1 if failures else 0


def run_check(args, out: Path, problems: list[str]) -> int:
    """Every stage in order; 1 when anything failed, 2 without the CUDA device asked for."""
    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            "error: no CUDA device: run with --device cpu --quick for the logic check",
            file=sys.stderr,
        )
        return 2
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 rows are checked exactly
    torch.backends.cudnn.allow_tf32 = False
    check = Check(args, out, problems)
    check.stage("kernels", check.kernels)
    check.stage("layers", check.layers)
    check.stage("e2e", check.e2e)
    check.stage("loop", check.loop)
    return check.finish()
