"""The GPU validation run: `make gpu-check` (python3 tools/gpu_check.py --out DIR).

One command, at most --budget seconds (default 480) on one CUDA GPU, everything written into
one folder (--out, default $OUT, else gpu-check-out):

1. kernels: the fused LoRA kernels compiled for the GPU, fp32 / fp16 / bf16, both backward
   designs, against fp64 (and the eager path's own error in that dtype); torch.library.opcheck
   of every custom op and dtype; a CUDA graph capture of a LoRA layer's forward and backward.
2. layers: per layer shape (kernels/bench.py's cases) and rank, forward + backward of fused
   (both designs), eager LoRA, the floor, full fine-tuning, and one low-rank pass over x and dY.
3. end to end: steps/s and peak memory, batch 8 of 64x64 LR, bf16 autocast, for SAFMN,
   SwinIR-light, SwinIR-M and EDSR-baseline: LoRA fused / eager / fused + compile / fused +
   CUDA graphs and full fine-tuning eager / compiled; Real-ESRGAN and bicubic degradations/s
   against what a step consumes; and a short `adapt train --compile --cuda-graphs` run.
4. budgets: projected wall time of the paper's 100k LoRA and 500k full fine-tuning iterations.

Then the issue's targets are checked; failures (errors, skipped work, missed targets with their
ratio) are printed first, then written with every table to DIR/report.md (raw numbers in
DIR/results.json, one log per stage). Exit code 1 when anything failed.

`--device cpu --quick` runs every stage tiny on the CPU (the Triton interpreter, aot_eager
instead of inductor) so that the script's logic is tested without a GPU (tests/test_gpu_check.py).

It lives under tools/, outside the installed package: it spans every layer and prepares its own
environment. The GPU machine has torch and Triton but not spandrel, and no network: `make
gpu-check-bundle` (run where the package index is reachable) downloads spandrel and its small
pure-Python dependencies into .whl/ (gitignored; carry it with the tree), and this script
unpacks whatever is missing from there into DIR/site (a wheel unpacked is installed), beside a
view of this working tree as the `adaptsr` package (symlinks: nothing is built or installed).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import math
import os
import subprocess
import sys
import time
import traceback
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WHEELS = ROOT / ".whl"
# what the model stages import beyond torch and Triton; the bundle holds wheels for these
BUNDLED = ("spandrel", "einops", "safetensors", "typing_extensions")
OPTIONAL = {"torchvision": "spandrel's model registry", "cv2": "the training-loop stage"}
PACKAGES = {"adaptsr": "adaptsr", "adapt": "adapt", "kernels": "kernels"}
PACKAGES.update(export="export", serve="serve")

MODELS = ("safmn-x4", "edsr-baseline-x4", "swinir-light-x4", "swinir-m-x4")
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
PAPER_HOURS = {("safmn-x4", "lora"): 1, ("swinir-m-x4", "lora"): 4}
PAPER_HOURS.update({("safmn-x4", "full"): 9, ("swinir-m-x4", "full"): 23})
PAPER_ITERS = {"lora": 100_000, "full": 500_000}
# of --budget; a stage that overruns takes from the next ones (each checks its deadline)
STAGE_SHARE = {"kernels": 0.10, "layers": 0.20, "e2e": 0.60, "loop": 0.10}


# ---------------------------------------------------------------------------------------------
# environment


def prepare_site(out: Path) -> list[str]:
    """DIR/site: the working tree as the adaptsr package, and whatever of BUNDLED is missing,
    installed from .whl/. Returns the problems found (one line each)."""
    site = out / "site"
    view = site / "adaptsr"
    view.mkdir(parents=True, exist_ok=True)
    for entry in (ROOT / "adaptsr").iterdir():
        if entry.name != "__pycache__":
            _link(view / entry.name, entry)
    for name in ("adapt", "kernels", "export", "serve"):
        _link(view / name, ROOT / name)
    sys.path.insert(0, str(site))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(site), os.environ.get("PYTHONPATH")])
    )
    importlib.invalidate_caches()
    problems = []
    missing = [m for m in BUNDLED if importlib.util.find_spec(m) is None]
    wheels = [w for m in missing for w in _wheels(m)]
    for wheel in wheels:
        # these wheels are pure Python or abi3 with no scripts: unpacking one into a folder
        # on the path is its installation (no pip needed on the GPU machine)
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(site)
    importlib.invalidate_caches()
    for m in BUNDLED:
        if importlib.util.find_spec(m) is None:
            problems.append(
                f"environment: {m} is missing and .whl/ has no wheel for it (run `make "
                "gpu-check-bundle` where the package index is reachable, carry .whl/)"
            )
    for m, needed_by in OPTIONAL.items():
        if importlib.util.find_spec(m) is None:
            problems.append(f"environment: {m} is missing: {needed_by} cannot run")
    return problems


def _link(path: Path, target: Path) -> None:
    if path.is_symlink() or path.exists():
        if path.is_symlink() and path.resolve() == target.resolve():
            return
        path.unlink()
    path.symlink_to(target)


def _wheels(module: str) -> list[Path]:
    stem = module.replace("-", "_").lower()
    return sorted(p for p in WHEELS.glob("*.whl") if p.name.lower().startswith(stem + "-"))


def environment(device) -> dict:
    import torch

    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }
    try:
        import triton

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


# ---------------------------------------------------------------------------------------------
# stage 1: kernels on the device


def _rand(*shape, dtype, device, std=1.0, grad=False, gen=None):
    import torch

    t = (torch.randn(*shape, dtype=torch.float64, generator=gen) * std).to(device, dtype)
    return t.requires_grad_(grad)


def accuracy_cases(quick: bool):
    """(name, kind, x shape, c_out, k, rank): partial tiles and several channel blocks."""
    cases = [("conv 3x3 37->70", "conv", (2, 37, 9, 11), 70, 3, 5)]
    if not quick:
        cases += [
            ("conv 1x1 37->70", "conv", (2, 37, 9, 11), 70, 1, 5),
            ("linear 70->33", "linear", (2, 50, 70), 33, 0, 3),
            ("qkv 60->180 (per-rank scale)", "linear", (2, 64, 60), 180, 0, 24),
            ("conv 3x3 180->180", "conv", (2, 180, 24, 24), 180, 3, 8),
        ]
    return cases


def kernel_accuracy(device, dtypes, quick: bool) -> list[dict]:
    """Relative error against fp64 of y, dx, dA, dB, for both backward designs and the eager
    path in the same dtype."""
    import torch

    from adaptsr import kernels
    from adaptsr.kernels import bench

    gen = torch.Generator().manual_seed(0)
    rows = []
    for dtype in dtypes:
        for name, kind, shape, c_out, k, r in accuracy_cases(quick):
            c_in = shape[1] if kind == "conv" else shape[-1]
            x = _rand(*shape, dtype=dtype, device=device, grad=True, gen=gen)
            w_shape = (c_out, c_in, k, k) if kind == "conv" else (c_out, c_in)
            weight = _rand(*w_shape, dtype=dtype, device=device, std=0.1, gen=gen)
            bias = _rand(c_out, dtype=dtype, device=device, gen=gen)
            a_shape = (r, c_in, 1, 1) if kind == "conv" else (r, c_in)
            b_shape = (c_out, r, k, k) if kind == "conv" else (c_out, r)
            a = _rand(*a_shape, dtype=dtype, device=device, std=0.3, grad=True, gen=gen)
            b = _rand(*b_shape, dtype=dtype, device=device, std=0.3, grad=True, gen=gen)
            scale = (torch.rand(r, generator=gen) + 0.5).to(device)
            out_shape = (shape[0], c_out, *shape[2:]) if kind == "conv" else (*shape[:-1], c_out)
            dy = _rand(*out_shape, dtype=dtype, device=device, gen=gen)

            def run(backend, one_pass, xs, kind=kind, k=k, dy=dy):
                with kernels.use_backend(backend), bench.fused_design(one_pass):
                    if kind == "conv":
                        y = kernels.lora_conv2d(*xs, 1, k // 2)
                    else:
                        y = kernels.lora_linear(*xs)
                grads = torch.autograd.grad(y, (xs[0], xs[3], xs[4]), dy.to(y.dtype))
                return (y, *grads)

            x64, a64, b64 = (t.detach().double().requires_grad_() for t in (x, a, b))
            args64 = (x64, weight.double(), bias.double(), a64, b64, scale.double())
            want = run("reference", None, args64)
            args = (x, weight, bias, a, b, scale)
            row = {"dtype": _dname(dtype), "case": name}
            for label, backend, one_pass in (
                ("one-pass", "triton", True),
                ("two-pass", "triton", False),
                ("eager", "reference", None),
            ):
                got = run(backend, one_pass, args)
                row[label] = max(bench.rel_error(g, w) for g, w in zip(got, want, strict=True))
            rows.append(row)
    return rows


ACCURACY_BOUND = {"float32": 1e-5, "float16": 5e-3, "bfloat16": 3e-2}


def accuracy_misses(rows) -> list[str]:
    """A design fails when its error is above both its dtype's bound and twice the eager
    path's error in the same dtype."""
    misses = []
    for row in rows:
        bound = max(ACCURACY_BOUND[row["dtype"]], 2 * row["eager"])
        for design in ("one-pass", "two-pass"):
            if not row[design] <= bound:  # NaN fails too
                misses.append(
                    f"kernels: {row['case']} {row['dtype']} {design}: rel error "
                    f"{row[design]:.1e} > {bound:.1e} (ratio {row[design] / bound:.2f})"
                )
    return misses


def opchecks(device, dtypes, ops=None) -> list[dict]:
    import torch

    from adaptsr.kernels import fused  # noqa: F401 - registers the ops

    rows = []
    gen = torch.Generator().manual_seed(1)
    for dtype in dtypes:
        kw = dict(dtype=dtype, device=device, gen=gen)
        s = (torch.rand(5, generator=gen) + 0.5).to(device)
        conv = (
            _rand(2, 17, 5, 6, grad=True, **kw),
            _rand(20, 17, 3, 3, std=0.1, **kw),
            _rand(20, **kw),
            _rand(5, 17, 1, 1, std=0.3, grad=True, **kw),
            _rand(20, 5, 3, 3, std=0.3, grad=True, **kw),
            s,
        )
        lin = (
            _rand(3, 7, 18, grad=True, **kw),
            _rand(24, 18, std=0.1, **kw),
            None,
            _rand(5, 18, std=0.3, grad=True, **kw),
            _rand(24, 5, std=0.3, grad=True, **kw),
            s,
        )
        frozen = [t.detach() if isinstance(t, torch.Tensor) else t for t in conv]
        samples = {
            "lora_conv2d": conv,
            "lora_linear": lin,
            "lora_merge": (frozen[1], frozen[3], frozen[4], s),
            "lora_grads": (frozen[0], _rand(2, 20, 5, 6, **kw), frozen[3], frozen[4], s, 3),
        }
        for op, args in samples.items():
            if ops is not None and op not in ops:
                continue
            try:
                result = torch.library.opcheck(getattr(torch.ops.adaptsr, op).default, args)
                bad = {k: v for k, v in result.items() if v != "SUCCESS"}
                status = "ok" if not bad else f"failed: {bad}"
            except Exception as e:
                status = f"failed: {_line(e)}"
            rows.append({"op": op, "dtype": _dname(dtype), "status": status})
    return rows


def graph_capture(device) -> dict:
    """Capture forward + backward of a LoRA conv on the fused path in one CUDA graph, replay it
    on new data and compare with eager."""
    import torch

    from adaptsr import kernels
    from adaptsr.adapt.lora import LoRAConv2d

    torch.manual_seed(0)
    layer = LoRAConv2d(torch.nn.Conv2d(64, 64, 3, padding=1).requires_grad_(False), 8, 8.0)
    layer = layer.to(device, torch.bfloat16)
    torch.nn.init.normal_(layer.lora_B, std=0.1)
    x = torch.randn(8, 64, 64, 64, device=device, dtype=torch.bfloat16)
    params = [layer.lora_A, layer.lora_B]
    with kernels.use_backend("triton"):

        def step():
            y = layer(x)
            return torch.autograd.grad(y.float().square().mean(), params)

        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                step()  # warm up: Triton compiles, cached scale vectors
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            captured = step()
        x.copy_(torch.randn_like(x))
        graph.replay()
        want = step()
    torch.cuda.synchronize(device)
    from adaptsr.kernels.bench import rel_error

    err = max(rel_error(g, w) for g, w in zip(captured, want, strict=True))
    return {"rel_error": err, "ok": err <= 1e-2}


# ---------------------------------------------------------------------------------------------
# stage 2: layers


def lowrank_ms(case, r, device, dtype, runs, warmup, batch, patch) -> float:
    """One low-rank pass over x and dY: z = x A^T and dz = dY (*) B (what the adapter
    gradients must read beyond the floor)."""
    import torch
    import torch.nn.functional as F

    from adaptsr.kernels import bench

    _, _, a, b, _ = bench.make_lora(case, r, device, dtype)
    a, b = a.detach(), b.detach()
    sets = bench.input_sets(
        case, device, dtype, batch, patch, 0 if device.type == "cpu" else 256 << 20
    )

    def fn(i):
        x, dy = sets[i % len(sets)]
        with torch.no_grad():
            if case.is_conv:
                F.conv2d(x, a)
                torch.nn.grad.conv2d_input(
                    (x.shape[0], a.shape[0], *x.shape[2:]), b, dy, 1, case.k // 2
                )
            else:
                F.linear(x, a)
                dy.matmul(b)

    return bench.time_ms(fn, runs, warmup, device)


def layer_rows(device, dtypes, ranks, runs, warmup, batch, patch, deadline, cases) -> tuple:
    from adaptsr.kernels import bench

    rows, skipped = [], []
    min_bytes = 0 if device.type == "cpu" else 256 << 20
    kw = dict(runs=runs, warmup=warmup, batch=batch, patch=patch, min_bytes=min_bytes)
    for dtype in dtypes:
        for case in cases:
            if time.time() > deadline:
                skipped.append(f"layers: {case.model} {case.layer} {_dname(dtype)}")
                continue
            base = bench.bench_layer(case, 1, ("floor", "full"), device, dtype, **kw)
            for r in ranks:
                t = bench.bench_layer(
                    case, r, ("one-pass", "two-pass", "eager"), device, dtype, **kw
                )
                low = lowrank_ms(case, r, device, dtype, runs, warmup, batch, patch)
                auto = bench.auto_design(case, r, dtype, batch, patch)
                rows.append(
                    dict(
                        case=case,
                        dtype=_dname(dtype),
                        r=r,
                        auto=auto,
                        lowrank=low,
                        check=math.nan,
                        **base,
                        **t,
                    )
                )
    return rows, skipped


def layer_misses(rows) -> list[str]:
    misses = []
    for row in rows:
        c = row["case"]
        where = f"layers: {c.model} {c.layer} {row['dtype']} r={row['r']}"
        fused = min(row["one-pass"], row["two-pass"])
        speedup = row["eager"] / fused
        if speedup < 1.3:
            misses.append(
                f"{where}: fused only {speedup:.2f}x faster than eager (target 1.3x; "
                f"ratio {speedup / 1.3:.2f})"
            )
        limit = 1.2 * (row["floor"] + row["lowrank"])
        if fused > limit:
            misses.append(
                f"{where}: fused {fused:.3f} ms > 1.2 x (floor {row['floor']:.3f} + low-rank pass "
                f"{row['lowrank']:.3f}) ms (ratio {fused / limit:.2f})"
            )
        if row[row["auto"]] > fused * 1.05:
            misses.append(
                f"{where}: the cost model picks {row['auto']}, "
                f"{row[row['auto']] / fused:.2f}x slower than the other design"
            )
    return misses


# ---------------------------------------------------------------------------------------------
# stage 3: end to end (one worker process per model)


def e2e_worker(args) -> int:
    """Run VARIANTS for one model, in order, while time is left; append rows to the JSON."""
    import gc

    import torch

    from adaptsr.adapt.train import bench, graphs

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
                result = bench._bench_one(
                    spec or name, mode, args.batch, args.patch, args.iters,
                    1 if args.quick else 3, args.device, 8, kernel_backend, compiled, cuda_graphs,
                )  # fmt: skip
                row.update(result, model=name, variant=label)
            except Exception as e:
                row["error"] = _line(e)
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
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--out",
            str(out),
            "--device",
            args.device,
        ]
        cmd += ["--batch", str(args.batch), "--patch", str(args.patch), "--iters", str(args.iters)]
        cmd += ["--worker-model", given, "--worker-json", str(target)]
        cmd += ["--worker-deadline", str(time.time() + mine)] + (["--quick"] if args.quick else [])
        log = folder / f"{model}.log"
        with open(log, "w") as f:
            try:
                done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=mine + 30)
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


def budgets(rows, degradation: dict, batch: int) -> list[dict]:
    """Projected hours of the paper's runs: model steps only, and with the on-device
    Real-ESRGAN degradation of each batch added (the loop runs it on the same GPU)."""
    out = []
    rate = degradation.get("realesrgan")
    for (model, mode), paper in PAPER_HOURS.items():
        row = best(rows, model, mode)
        if row is None:
            continue
        iters = PAPER_ITERS[mode]
        step = 1 / row["it_s"]
        with_data = step + (batch / rate if rate else math.nan)
        out.append(
            dict(
                model=model,
                mode=mode,
                variant=row["variant"],
                iters=iters,
                paper_h=paper,
                model_h=iters * step / 3600,
                with_degradation_h=iters * with_data / 3600,
            )  # fmt: skip
        )
    return out


def budget_misses(plans) -> list[str]:
    misses = []
    for p in plans:
        if p["model"] == "safmn-x4" and p["mode"] == "lora":
            minutes = p["with_degradation_h"] * 60
            if not minutes < 15:
                misses.append(
                    f"budgets: SAFMN 100k LoRA iterations take {minutes:.1f} min with the "
                    f"degradation ({p['model_h'] * 60:.1f} min without) > 15 min "
                    f"(ratio {minutes / 15:.2f})"
                )
    return misses


# ---------------------------------------------------------------------------------------------
# the training loop with --compile --cuda-graphs


def loop_run(args, out: Path, deadline: float) -> dict:
    """A short `adapt train` on synthetic images with --compile --cuda-graphs (on a GPU): the
    loop's own it/s and degradations/s."""
    from adaptsr.core.images import Image, synthetic_image, write_image

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


# ---------------------------------------------------------------------------------------------
# report


def _dname(dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:300]}" if text else type(e).__name__


def _f(v, digits=3):
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def render(results: dict, failures: list[str]) -> str:
    env = results.get("environment", {})
    lines = ["# GPU check", ""]
    lines += [f"## Failures ({len(failures)})", ""] + [f"- {x}" for x in failures] + [""]
    lines += ["## Environment", ""] + [f"- {k}: {v}" for k, v in env.items()] + [""]
    acc = results.get("accuracy") or []
    if acc:
        lines += ["## Kernel accuracy (max rel error of y, dx, dA, dB against fp64)", ""]
        lines += [
            "| dtype | case | one-pass | two-pass | eager (same dtype) |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['dtype']} | {r['case']} | {r['one-pass']:.1e} | {r['two-pass']:.1e} "
            f"| {r['eager']:.1e} |"
            for r in acc
        ]
        lines.append("")
    ops = results.get("opcheck") or []
    if ops:
        lines += ["## torch.library.opcheck", "", "| op | dtype | result |", "|---|---|---|"]
        lines += [f"| {r['op']} | {r['dtype']} | {r['status']} |" for r in ops] + [""]
    if "graph_capture" in results:
        lines += [
            f"CUDA graph capture of a LoRA conv (fused, bf16): {results['graph_capture']}",
            "",
        ]
    layers = results.get("layers") or []
    if layers:
        lines += ["## Layers (forward + backward, ms)", ""]
        lines += [
            "| model | layer | dtype | r | one-pass | two-pass | picked | eager | floor "
            "| low-rank pass | full FT | eager/fused | fused/(floor+low-rank) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in layers:
            fused = min(r["one-pass"], r["two-pass"])
            lines.append(
                f"| {r['model']} | {r['layer']} | {r['dtype']} | {r['r']} | {_f(r['one-pass'])} "
                f"| {_f(r['two-pass'])} | {r['auto']} | {_f(r['eager'])} | {_f(r['floor'])} "
                f"| {_f(r['lowrank'])} | {_f(r['full'])} | {_f(r['eager'] / fused, 2)} "
                f"| {_f(fused / (r['floor'] + r['lowrank']), 2)} |"
            )
        lines.append("")
    e2e = results.get("e2e") or []
    if e2e:
        lines += ["## End to end (steps/s, peak memory)", ""]
        lines += [
            "| model | variant | it/s | peak memory (MiB) | warm-up s | trainable |",
            "|---|---|---|---|---|---|",
        ]
        for r in e2e:
            if "it_s" in r:
                mem = r.get("gpu_peak_mb", r.get("peak_rss_mb"))
                lines.append(
                    f"| {r['model']} | {r['variant']} | {r['it_s']:.2f} | {mem:.0f} "
                    f"| {r['warmup_s']:.1f} | {r['trainable']:,} |"
                )
            else:
                lines.append(
                    f"| {r['model']} | {r['variant']} "
                    f"| {r.get('error') or r.get('skipped')} | | | |"
                )
        lines.append("")
    deg = results.get("degradation") or {}
    if deg:
        lines += ["## Degradations (HR crops/s, batch and crop as the steps)", ""]
        lines += [f"- {k}: {v:.1f}" for k, v in deg.items()] + [""]
    plans = results.get("budgets") or []
    if plans:
        lines += ["## The paper's budgets (projected hours)", ""]
        lines += [
            "| model | mode | iterations | variant | steps only | with degradation "
            "| paper (RTX 4090) |"
        ]
        lines += ["|---|---|---|---|---|---|---|"]
        lines += [
            f"| {p['model']} | {p['mode']} | {p['iters']:,} | {p['variant']} | {p['model_h']:.2f} "
            f"| {p['with_degradation_h']:.2f} | {p['paper_h']} |"
            for p in plans
        ]
        lines.append("")
    if "loop" in results:
        lines += ["## Training loop with the speed options", "", f"{results['loop']}", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# main


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="tools/gpu_check.py", description=__doc__.splitlines()[0])
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
    if args.worker_model:
        return e2e_worker(args)
    start = time.time()
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            "error: no CUDA device: run with --device cpu --quick for the logic check",
            file=sys.stderr,
        )
        return 2
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 rows are checked exactly
    torch.backends.cudnn.allow_tf32 = False
    dtypes = [torch.float32, torch.float16] + ([torch.bfloat16] if device.type == "cuda" else [])
    results: dict = {"environment": environment(device)}
    failures: list[str] = list(problems)
    deadlines, t = {}, start
    for stage, share in STAGE_SHARE.items():
        t += share * args.budget
        deadlines[stage] = t

    def stage(name, fn):
        t0 = time.time()
        try:
            fn()
        except Exception as e:
            failures.append(f"{name}: {_line(e)} (traceback in {name}.log)")
            (out / f"{name}.log").write_text(traceback.format_exc())
        results.setdefault("seconds", {})[name] = round(time.time() - t0, 1)
        (out / "results.json").write_text(json.dumps(results, indent=1, default=_plain))
        print(f"[{time.time() - start:5.0f} s] {name} done", file=sys.stderr, flush=True)

    def kernels_stage():
        # the quick CPU run: fp32 only, one opcheck (tests/test_kernels.py checks every op)
        dts = dtypes[:1] if args.quick else dtypes
        results["accuracy"] = kernel_accuracy(device, dts, args.quick)
        failures.extend(accuracy_misses(results["accuracy"]))
        results["opcheck"] = opchecks(device, dts, ["lora_merge"] if args.quick else None)
        failures.extend(
            f"opcheck: {r['op']} {r['dtype']}: {r['status']}"
            for r in results["opcheck"]
            if r["status"] != "ok"
        )
        if device.type == "cuda":
            results["graph_capture"] = graph_capture(device)
            if not results["graph_capture"]["ok"]:
                failures.append(
                    f"kernels: CUDA graph replay differs from eager: {results['graph_capture']}"
                )

    def layers_stage():
        from adaptsr.kernels import bench

        cases = bench.layer_cases()
        if args.quick:  # one conv and one linear case, tiny
            cases = [
                bench.LayerCase("tiny", "conv 3x3", 16, 18, 3),
                bench.LayerCase("tiny", "qkv", 16, 48, qkv=True),
            ]
        ranks = (8,) if args.quick else bench.RANKS
        runs, warmup = (1, 0) if args.quick else (20, 5)
        batch, patch = (1, 5) if args.quick else (bench.BATCH, bench.PATCH)
        dts = [torch.float32] if args.quick else [torch.bfloat16, torch.float32]
        rows, skipped = layer_rows(
            device, dts, ranks, runs, warmup, batch, patch, deadlines["layers"], cases
        )
        results["layers"] = [dict(r, model=r["case"].model, layer=r["case"].layer) for r in rows]
        failures.extend(f"{s}: not measured (out of time)" for s in skipped)
        failures.extend(layer_misses(rows))

    def e2e_stage():
        from adaptsr.adapt.degradations import degradations_per_second

        rows, problems = run_e2e(args, out, deadlines["e2e"] - 10)
        results["e2e"] = rows
        failures.extend(problems)
        deg = {}
        for kind in ("realesrgan", "bicubic"):
            deg[kind] = degradations_per_second(
                kind, args.batch, args.patch, device=device, iters=1 if args.quick else 5
            )
        results["degradation"] = deg
        failures.extend(e2e_misses(rows, deg, args.batch))
        results["budgets"] = budgets(rows, deg, args.batch)
        failures.extend(budget_misses(results["budgets"]))

    def loop_stage():
        results["loop"] = loop_run(args, out, max(deadlines["loop"], time.time() + 60))
        if "error" in results["loop"]:
            failures.append(f"loop: {results['loop']['error']}")
        failures.extend(f"loop: {n}" for n in results["loop"].get("notes", []))

    stage("kernels", kernels_stage)
    stage("layers", layers_stage)
    stage("e2e", e2e_stage)
    stage("loop", loop_stage)
    results["failures"] = failures
    (out / "results.json").write_text(json.dumps(results, indent=1, default=_plain))
    report = render(results, failures)
    (out / "report.md").write_text(report + "\n")
    print(f"FAILURES ({len(failures)})" + (":" if failures else ""))
    for line in failures:
        print(f"  {line}")
    print(
        f"\n{report}\nwrote {out / 'report.md'} and {out / 'results.json'} "
        f"({time.time() - start:.0f} s)"
    )
    return 1 if failures else 0


def _plain(v):
    return getattr(v, "__dict__", str(v))


if __name__ == "__main__":
    sys.exit(main())
