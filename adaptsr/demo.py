"""`adapt demo`: the whole pipeline on embedded defaults, small enough for a laptop CPU.

No weights or data are downloaded: the base model is a built-in configuration with seeded
random weights, and the images are drawn procedurally. So the demo shows the mechanics (adapt,
merge, export, prove zero overhead, upscale), not super-resolution quality. The latency half of
the zero-overhead proof is a timing on whatever machine runs the demo: on a busy laptop its
noise can exceed the 2% bound, which the report then says (the graph check is exact).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from adaptsr.errors import UserError
from adaptsr.fileio import atomic_output


def write_images(folder: Path, count: int, size: int, seed: int) -> list[Path]:
    from adaptsr.images import Image, synthetic_image, write_image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        rgb = synthetic_image(size, size, seed=seed * 1000 + i).transpose(1, 2, 0)
        img = Image(rgb=np.ascontiguousarray(rgb), alpha=None, bit_depth=8, gray=False)
        paths.append(write_image(img, folder / f"synthetic_{i:03d}.png", force=True))
    return paths


def run_demo(
    out: Path,
    model: str = "safmn-x4",
    iters: int = 40,
    force: bool = False,
    say: Callable[[str], None] = print,
) -> dict:
    """Run every stage that exists; returns a summary (also written to OUT/summary.json)."""
    import torch

    import adaptsr
    from adaptsr.adapt.train import TrainConfig, train

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise UserError(f"{out} is not empty (use --force to reuse it)")
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"model": model}
    steps = 6
    t0 = time.perf_counter()

    say(f"[1/{steps}] synthetic data: 16 training and 4 validation images (128x128)")
    write_images(out / "data" / "train", 16, 128, seed=1)
    write_images(out / "data" / "val", 4, 128, seed=2)

    say(f"[2/{steps}] base model: built-in {model} (seeded random weights)")
    base = adaptsr.load_model(model)
    base_path = adaptsr.save_model(base, out / "base.safetensors", force=True)

    say(f"[3/{steps}] LoRA adaptation: rank 4, Real-ESRGAN degradations, {iters} iterations")
    cfg = TrainConfig(
        model=str(base_path),
        data=[str(out / "data" / "train")],
        val=str(out / "data" / "val"),
        mode="lora",
        rank=4,
        iters=iters,
        batch=4,
        patch=64,
        save_every=iters,
        val_every=iters,
        workers=0,
        device="cpu" if not torch.cuda.is_available() else "auto",
    )
    result = train(cfg, out / "run", force=True, progress=True)
    adapter = out / "run" / "adapter.safetensors"
    summary["train"] = {"iterations": result.iteration, "best": result.best}

    say(f"[4/{steps}] merge: fold the adapter into the weights, check the output is unchanged")
    adapted = adaptsr.load_model(base_path)
    adaptsr.load_adapter(adapted, adapter)
    report = adaptsr.lora_report(adapted)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y_adapted = adapted(x)
        merged = adaptsr.merge_lora(adapted)
        y_merged = merged(x)
    diff = float((y_adapted - y_merged).abs().max())
    merged_path = adaptsr.save_model(merged, out / "merged.safetensors", force=True)
    summary["merge"] = {
        "adapter_params": report["total"],
        "percent_of_base": round(report["percent"], 3),
        "max_abs_diff": diff,
        "merged": str(merged_path),
    }
    say(
        f"      {report['total']:,} adapter parameters ({report['percent']:.2f}% of the base); "
        f"merged vs adapted max |diff| = {diff:.2e}"
    )
    say(f"[5/{steps}] ONNX export of the merged model, with the zero-overhead proof vs the base")
    from adaptsr.export.onnx import export_onnx, load_merged, report_path

    onnx_model, adapter_info = load_merged(str(base_path), adapter)
    onnx_path = out / "merged.onnx"
    exported = export_onnx(
        onnx_model,
        onnx_path,
        tile=(64, 64),
        adapter=adapter_info,
        base=adaptsr.load_model(base_path),
        latency_rounds=100,
        force=True,
    )
    zero = exported["zero_overhead"]
    latency = zero["latency"]
    summary["export"] = {
        "onnx": str(onnx_path),
        "parity_max_abs": exported["parity"]["max_abs"],
        "structure_identical": zero["structure"]["identical"],
        "latency": latency,
    }
    say(
        f"      parity vs PyTorch: max |diff| {exported['parity']['max_abs']:.1e}; graph "
        f"identical to the base: {zero['structure']['identical']}; latency merged/base "
        f"{latency['ratio']:.3f} (95% CI {latency['ci_low']:.3f}-{latency['ci_high']:.3f}, "
        f"{latency['verdict']}); report: {report_path(onnx_path).name}"
    )

    say(f"[6/{steps}] upscale the validation images with the merged ONNX (64x64 tiles)")
    from adaptsr.serve.backends import OnnxBackend
    from adaptsr.serve.upscale import upscale_files

    done = upscale_files(
        OnnxBackend(str(onnx_path), provider="cpu"),
        [out / "data" / "val"],
        out / "upscaled",
        tile=64,
        force=True,
        progress=False,
    )
    if done.failed:
        path, reason = done.failed[0]
        raise UserError(f"upscaling {len(done.failed)} image(s) failed, e.g. {path}: {reason}")
    summary["upscaled"] = len(done.written)
    say(f"      {len(done.written)} images x4 in {out / 'upscaled'}")

    summary["seconds"] = round(time.perf_counter() - t0, 1)
    with atomic_output(out / "summary.json", force=True) as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    say(f"done in {summary['seconds']} s; outputs in {out} (summary.json)")
    return summary
