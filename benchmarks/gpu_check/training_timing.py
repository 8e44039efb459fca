"""Stage 3 of the GPU check: whole training steps per model and variant (LoRA fused / eager /
compiled / CUDA graphs, full fine-tuning), each model in a worker process of its own, and a
short `adapt train --compile --cuda-graphs` run; checked against the issue's targets."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

from adaptsr.adapt.train import graphs, throughput
from adaptsr.core.images import Image, synthetic_image, write_image
from benchmarks.gpu_check.environment import ROOT
from benchmarks.gpu_check.report import one_line

MODEL_WEIGHT = {"safmn-x4": 1.0, "edsr-baseline-x4": 1.0, "swinir-light-x4": 1.5}
MODEL_WEIGHT["swinir-m-x4"] = 2.0  # its compile takes longest
# (label, mode, kernels, compile, cuda_graphs), in the order they are run (most needed first)
VARIANTS = (
    ("LoRA fused", "lora", "triton", False, False),
    ("LoRA eager", "lora", "reference", False, False),
    ("full eager", "full", "auto", False, False),
    ("LoRA fused + compile", "lora", "triton", True, False),
    ("full + compile", "full", "auto", True, False),
    ("LoRA fused + CUDA graphs", "lora", "triton", True, True),
)


def e2e_worker(args) -> int:
    """Run VARIANTS for one model, in order, while time is left; append rows to the JSON."""
    if args.quick:  # the CPU logic check: no inductor C++ build, no interpreter in the steps
        graphs.BACKEND = "aot_eager"
    path = Path(args.worker_json)
    rows = []
    name, _, spec = args.worker_model.partition("=")
    for label, mode, kernel_backend, compiled, cuda_graphs in VARIANTS:
        row = {"model": name, "variant": label, "mode": mode}
        if cuda_graphs and args.device != "cuda":
            row["skipped"] = "needs a CUDA device"
        elif time.time() + (30 if compiled and not args.quick else 5) > args.worker_deadline:
            row["skipped"] = "out of time"
        else:
            try:
                if args.quick and kernel_backend == "triton":
                    kernel_backend = "auto"  # the kernels stage runs them in the interpreter
                result = throughput._bench_one(
                    spec or name, mode, args.batch, args.patch, args.iters,
                    1 if args.quick else 3, args.device, 8, kernel_backend, compiled, cuda_graphs,
                )  # fmt: skip
                row.update(result, model=name, variant=label)
            except Exception as e:
                row["error"] = one_line(e)
                (path.parent / f"{path.stem}-{len(rows)}.err").write_text(traceback.format_exc())
        rows.append(row)
        path.write_text(json.dumps(rows, indent=1, default=str))
        torch._dynamo.reset()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return 0


def run_e2e(args, out: Path, deadline: float) -> tuple[list[dict], list[str]]:
    folder = out / "e2e"
    folder.mkdir(exist_ok=True)
    rows, problems = [], []
    models = args.models.split(",")
    for i, given in enumerate(models):
        model = given.split("=")[0]
        left = deadline - time.time()
        weights = [MODEL_WEIGHT.get(m.split("=")[0], 1.0) for m in models[i:]]
        mine = left * weights[0] / sum(weights)
        if mine < 10:
            problems.append(f"e2e: {model}: not measured (out of time)")
            continue
        target = folder / f"{model}.json"
        cmd = [sys.executable, "-m", "benchmarks.gpu_check", "--out", str(out)]
        cmd += ["--device", args.device]
        cmd += ["--batch", str(args.batch), "--patch", str(args.patch), "--iters", str(args.iters)]
        cmd += ["--worker-model", given, "--worker-json", str(target)]
        cmd += ["--worker-deadline", str(time.time() + mine)] + (["--quick"] if args.quick else [])
        log = folder / f"{model}.log"
        with open(log, "w") as f:
            try:
                done = subprocess.run(
                    cmd, stdout=f, stderr=subprocess.STDOUT, timeout=mine + 30, cwd=ROOT
                )
                code = done.returncode
            except subprocess.TimeoutExpired:
                code = "timeout"
        got = json.loads(target.read_text()) if target.exists() else []
        if code != 0:
            problems.append(f"e2e: {model}: worker ended with {code} (see {log})")
        rows += got
    for row in rows:
        if "error" in row:
            problems.append(f"e2e: {row['model']} {row['variant']}: {row['error']}")
        elif "skipped" in row:
            problems.append(
                f"e2e: {row['model']} {row['variant']}: not measured ({row['skipped']})"
            )
        for note in row.get("notes") or []:
            problems.append(f"e2e: {row['model']} {row['variant']}: {note}")
    return rows, problems


def measured(rows, model, variant):
    for row in rows:
        if row["model"] == model and row["variant"] == variant and "it_s" in row:
            return row
    return None


def e2e_misses(rows, degradation: dict, batch: int) -> list[str]:
    misses = []
    for model in {r["model"] for r in rows}:
        lora, full = (
            measured(rows, model, "LoRA fused + compile"),
            measured(rows, model, "full + compile"),
        )
        if lora and full:
            if lora["it_s"] < full["it_s"]:
                misses.append(
                    f"e2e: {model}: LoRA + compile {lora['it_s']:.1f} it/s < full + compile "
                    f"{full['it_s']:.1f} it/s (ratio {lora['it_s'] / full['it_s']:.2f})"
                )
            mem = "gpu_peak_mb" if "gpu_peak_mb" in lora else "peak_rss_mb"
            if lora[mem] > full[mem]:
                misses.append(
                    f"e2e: {model}: LoRA + compile peak memory {lora[mem]:.0f} MiB > full + "
                    f"compile {full[mem]:.0f} MiB (ratio {lora[mem] / full[mem]:.2f})"
                )
        fastest = best(rows, model, "lora")
        rate = degradation.get("realesrgan")
        if fastest and rate:
            need = fastest["it_s"] * batch
            if rate < 2 * need:
                misses.append(
                    f"e2e: {model}: Real-ESRGAN degradation {rate:.0f} crops/s < 2 x the "
                    f"{need:.0f} crops/s that {fastest['variant']} consumes "
                    f"(ratio {rate / (2 * need):.2f})"
                )
    return misses


def best(rows, model, mode):
    found = [r for r in rows if r["model"] == model and r.get("mode") == mode and "it_s" in r]
    return max(found, key=lambda r: r["it_s"]) if found else None


def loop_run(args, out: Path, deadline: float) -> dict:
    """A short `adapt train` on synthetic images with --compile --cuda-graphs (on a GPU): the
    loop's own it/s and degradations/s."""
    data = out / "loop-data"
    data.mkdir(exist_ok=True)
    size = max(args.patch + 32, 64)
    for i in range(8 if args.quick else 32):
        rgb = synthetic_image(size, size, seed=i).transpose(1, 2, 0)
        write_image(Image(rgb, None, 8, False), data / f"{i:03d}.png", force=True)
    iters = 4 if args.quick else 60
    run = out / "loop-run"
    first = args.models.split(",")[0]
    cmd = [sys.executable, "-m", "adaptsr.cli.app", "train", "--model", first.split("=")[-1]]
    cmd += ["--data", str(data), "--out", str(run), "--force", "--quiet", "--iters", str(iters)]
    cmd += ["--batch", str(args.batch), "--patch", str(args.patch), "--device", args.device]
    cmd += ["--log-every", str(max(1, iters // 3)), "--save-every", "0", "--val-every", "0"]
    cmd += ["--workers", "0" if args.quick else "6"]
    cmd += ["--allow-random-base"]  # a timing: the built-in configurations' weights are random
    # the CPU check runs the loop eagerly: inductor's C++ build would take minutes there
    cmd += ["--compile", "--cuda-graphs"] if args.device == "cuda" else []
    timeout = max(5.0, deadline - time.time())
    try:
        # not from the tree's root: `-m` would put its bare adaptsr/ (no kernels/) first
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=out)
    except subprocess.TimeoutExpired:
        return {"error": f"did not finish within {timeout:.0f} s", "command": " ".join(cmd)}
    (out / "loop.log").write_text(done.stdout + done.stderr)
    if done.returncode:
        return {"error": (done.stderr.strip().splitlines() or ["?"])[-1], "command": " ".join(cmd)}
    logs = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    steps = [r for r in logs if "loss" in r]
    notes = [x for x in done.stderr.splitlines() if x.startswith("note:")]
    return {"command": " ".join(cmd), "last": steps[-1], "notes": notes}
