"""A blend of LoRA adapters as one adapter file (`adapt merge --blend-out`).

Adapters of one base with the same sites blend exactly by concatenating their ranks: at each
site the update of the blend is

    sum_i s_i * c_i * B_i A_i = c * [k_1 B_1, k_2 B_2, ...] [A_1; A_2; ...],   k_i = s_i c_i / c

with c_i each adapter's own scale (alpha_i / r_i or alpha_i / sqrt(r_i)) and c the scale of the
blend's rank R = sum r_i under the first adapter's alpha and scaling rule. Where R would pass
the site's useful rank min(C_in, C_out*k*k) (a file naming such a rank cannot be loaded) the
site holds the summed update itself, factored exactly through an identity on its smaller side.
The file loads like any adapter (load_adapter, `adapt upscale --adapter`) and blends again;
its metadata records the components and their weights.

DiffFit adapters multiply the weights: they have no rank to concatenate and are refused.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from adaptsr.adapt.adapter_file import AdapterFile
from adaptsr.adapt.lora import lora_scale
from adaptsr.adapt.merge_adapter import check_blendable
from adaptsr.adapt.models import check_base_weights, load_model
from adaptsr.core.errors import UserError
from adaptsr.core.fileio import atomic_output, check_not_input, check_writable
from adaptsr.core.version import __version__

BLEND_KEY = "blend"  # metadata: JSON list of the components (file, sha256, weight)


@dataclass(frozen=True)
class BlendFileSummary:
    out: str
    files: int  # adapters blended
    sites: int
    dense: int  # sites holding the summed update (their concatenated rank passed the useful one)

    def text(self) -> str:
        dense = f" ({self.dense} at their full rank)" if self.dense else ""
        return (
            f"wrote the blend of {self.files} adapter file(s) on {self.sites} sites{dense} "
            f"to {self.out}"
        )


def _useful_rank(a: torch.Tensor, b: torch.Tensor) -> int:
    """min(C_in, C_out*k*k) of a site, from its A (r, C_in[, 1, 1]) and B (C_out, r[, k, k])."""
    return min(a.shape[1], b.shape[0] * b[0, 0].numel())


def _dense_pair(delta: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, B) with scale * B A == delta, through an identity on the smaller side of delta."""
    conv = delta.ndim == 4
    out, inp = delta.shape[:2]
    k2 = delta[0, 0].numel()
    eye = torch.eye
    if inp <= out * k2:  # A = I (C_in, C_in): B holds the update
        a = eye(inp, dtype=delta.dtype)
        return (a[:, :, None, None] if conv else a), delta / scale
    if not conv:  # B = I (out, out): A holds the update
        return delta / scale, eye(out, dtype=delta.dtype)
    # conv with C_out*k*k < C_in: B picks one (o, h, w) per rank, A holds dW at that (o, h, w)
    kh, kw = delta.shape[2:]
    b = eye(out * k2, dtype=delta.dtype).reshape(out * k2, out, kh, kw).permute(1, 0, 2, 3)
    a = delta.permute(0, 2, 3, 1).reshape(out * k2, inp) / scale
    return a[:, :, None, None], b.contiguous()


def _fp64_delta(a: torch.Tensor, b: torch.Tensor, scale: float) -> torch.Tensor:
    a, b = a.double(), b.double()
    if a.ndim == 4:
        return scale * torch.einsum("orhw,ri->oihw", b, a[:, :, 0, 0])
    return scale * (b @ a)


def blend_tensors(
    blend: Sequence[tuple[AdapterFile, float]],
) -> tuple[dict[str, torch.Tensor], dict[str, int], int]:
    """The blend's tensors, its rank map and the number of sites stored at full rank."""
    first = blend[0][0].meta
    dtype = torch.float32
    for adapter, _ in blend:
        for t in adapter.tensors.values():
            dtype = torch.promote_types(dtype, t.dtype)
    tensors, ranks, dense = {}, {}, 0
    for site in first.ranks:
        parts = []  # (A, B, this adapter's scale * weight)
        for adapter, s in blend:
            m = adapter.meta
            a, b = adapter.tensors[f"{site}.lora_A"], adapter.tensors[f"{site}.lora_B"]
            parts.append((a, b, s * lora_scale(m.alpha, m.ranks[site], m.scaling)))
        rank = sum(a.shape[0] for a, _, _ in parts)
        useful = _useful_rank(parts[0][0], parts[0][1])
        if rank <= useful:
            scale = lora_scale(first.alpha, rank, first.scaling)
            a = torch.cat([a.double() for a, _, _ in parts])
            b = torch.cat([b.double() * (k / scale) for _, b, k in parts], dim=1)
        else:
            rank, dense = useful, dense + 1
            scale = lora_scale(first.alpha, rank, first.scaling)
            a, b = _dense_pair(sum(_fp64_delta(a, b, k) for a, b, k in parts), scale)
        tensors[f"{site}.lora_A"] = a.to(dtype).contiguous()
        tensors[f"{site}.lora_B"] = b.to(dtype).contiguous()
        ranks[site] = rank
    return tensors, ranks, dense


def write_blend_file(
    model: str,
    blend: Sequence[tuple[str, float]],
    out: str | os.PathLike,
    force: bool = False,
    allow_random_base: bool = False,
) -> BlendFileSummary:
    """Write base + sum_i s_i * dW_i of the (adapter file, s_i) pairs as one adapter file for
    `model` (one with random weights only if allowed, as merging); checked by loading it onto
    the model before it is written."""
    paths = [str(p) for p, _ in blend]
    out = Path(out)
    check_not_input(out, [model, *paths], "--blend-out")
    check_writable(out, force)
    if out.suffix != ".safetensors":
        raise UserError(f"--blend-out {out}: adapter files are .safetensors")
    check_base_weights(model, allow_random_base)
    net = load_model(model)  # a bad --model is named first, whatever the adapters
    adapters = [(AdapterFile.read(p), float(s)) for p, s in blend]
    if not adapters:
        raise UserError("no adapter to blend")
    difffit = next((a for a, _ in adapters if a.meta.mode == "difffit"), None)
    if difffit is not None:
        raise UserError(
            f"{difffit.path} is a DiffFit adapter: its scales multiply the weights, so it has "
            "no rank to concatenate into a blend file (merge it alone with --out)"
        )
    check_blendable([a for a, _ in adapters])
    for adapter, s in adapters:
        if not math.isfinite(s):
            raise UserError(f"{adapter.path}: the weight must be a finite number")
    tensors, ranks, dense = blend_tensors(adapters)
    bad = next((k for k, t in tensors.items() if not bool(torch.isfinite(t).all())), None)
    if bad is not None:  # a file AdapterFile.read would refuse as damaged
        site = bad.rsplit(".", 1)[0]
        raise UserError(f"cannot blend: {site} would get NaN or infinite values (too large)")
    meta = replace(adapters[0][0].meta, ranks=ranks, adaptsr_version=__version__)
    if len({a.meta.degradation for a, _ in adapters}) > 1:
        meta = replace(meta, degradation="")
    # loads onto the base (shapes and ranks fit); a refusal names the first file the user gave,
    # whose base and metadata the blend carries (the blend file is not written yet)
    AdapterFile(adapters[0][0].path, meta, tensors, "").apply(net)
    components = [{"file": a.path.name, "sha256": a.sha256, "weight": s} for a, s in adapters]
    metadata = {**meta.to_json(), BLEND_KEY: json.dumps(components)}
    with atomic_output(out, force=force) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return BlendFileSummary(str(out), len(adapters), len(ranks), dense)


def blend_components(path: str | os.PathLike) -> list[dict]:
    """The components (file, sha256, weight) a blend file records; [] for a trained adapter."""
    with safe_open(str(path), "pt") as f:
        text = (f.metadata() or {}).get(BLEND_KEY)
    return json.loads(text) if text else []
