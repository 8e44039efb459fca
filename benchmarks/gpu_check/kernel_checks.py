"""Stage 1 of the GPU check: the fused LoRA kernels on the device against fp64, opcheck of
every custom op, and a CUDA graph capture of a LoRA layer's forward and backward."""

from __future__ import annotations

import torch

from adaptsr import kernels
from adaptsr.adapt.lora import LoRAConv2d
from adaptsr.kernels import fused  # noqa: F401 - registers the ops that opchecks checks
from benchmarks.gpu_check.report import dtype_name, one_line
from benchmarks.lora_layers import fused_design, rel_error


def _rand(*shape, dtype, device, std=1.0, grad=False, gen=None):
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
                with kernels.use_backend(backend), fused_design(one_pass):
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
            row = {"dtype": dtype_name(dtype), "case": name}
            for label, backend, one_pass in (
                ("one-pass", "triton", True),
                ("two-pass", "triton", False),
                ("eager", "reference", None),
            ):
                got = run(backend, one_pass, args)
                row[label] = max(rel_error(g, w) for g, w in zip(got, want, strict=True))
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
                status = f"failed: {one_line(e)}"
            rows.append({"op": op, "dtype": dtype_name(dtype), "status": status})
    return rows


def graph_capture(device) -> dict:
    """Capture forward + backward of a LoRA conv on the fused path in one CUDA graph, replay it
    on new data and compare with eager."""
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
    err = max(rel_error(g, w) for g, w in zip(captured, want, strict=True))
    return {"rel_error": err, "ok": err <= 1e-2}
