"""The architecture sweep, adapt side: every architecture spandrel registers, built small, run
through the public pipeline (load, sites, inject, one training step, merge).

Each architecture is built from its own constructor with the small settings in `SMALL` (its
defaults where those are small), saved as a state dict and loaded back with `load_model`, as a
user's checkpoint would be. The ONNX stages are added by `adaptsr.export.archcheck`, which is
also the command (`python -m adaptsr.export.archcheck --out docs/architectures.md`).
"""

from __future__ import annotations

import importlib
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from adaptsr.core.errors import UserError

PASS, FAIL, NA = "PASS", "FAIL", "n/a"
ADAPT_STAGES = ("load", "inject", "train_step", "merge")
RANK = 2
MERGE_TOL = 1e-5  # relative L2, merged vs adapted output


@dataclass(frozen=True)
class Small:
    """How to build one architecture small: `module.cls(**kwargs)`."""

    arch: str  # spandrel architecture id
    cls: str  # class exported by the architecture's package
    kwargs: dict = field(default_factory=dict)
    variant: str = ""  # a second class of the same architecture (PLKSR / RealPLKSR)
    skip: str = ""  # why there is no small build: the row is n/a with this reason
    side: int = 16  # input height/width of the checks (at least the model's minimum)
    purpose: str = ""  # spandrel's purpose label, for rows without a build (skip)

    @property
    def name(self) -> str:
        return f"{self.arch} ({self.variant})" if self.variant else self.arch


def _w(**kw) -> dict:
    return kw


# Small settings: the smallest widths and depths each constructor accepts (window sizes of 4,
# one block per stage), x2 where the architecture upscales.
SMALL: tuple[Small, ...] = (
    Small("Compact", "Compact", _w(num_feat=8, num_conv=2, upscale=2)),
    Small("SwiftSRGAN", "SwiftSRGAN", _w(num_channels=8, num_blocks=1, upscale_factor=2)),
    Small(
        "HAT",
        "HAT",
        _w(
            img_size=16,
            embed_dim=24,
            depths=(1,),
            num_heads=(2,),
            window_size=4,
            compress_ratio=3,
            squeeze_factor=4,
            mlp_ratio=2.0,
            upscale=2,
            upsampler="pixelshuffle",
        ),
    ),  # fmt: skip
    Small(
        "GRL",
        "GRL",
        _w(
            img_size=16,
            embed_dim=32,
            upscale=2,
            upsampler="pixelshuffle",
            depths=[1],
            num_heads_window=[2],
            num_heads_stripe=[2],
            window_size=4,
            stripe_size=[4, 4],
            stripe_groups=[None, None],
            mlp_ratio=2.0,
            anchor_window_down_factor=2,
            local_connection=True,
        ),
        side=64,  # spandrel's GRL reflect-pads to a multiple of 64, which needs more than 48
    ),  # fmt: skip
    Small(
        "Swin2SR",
        "Swin2SR",
        _w(
            img_size=16,
            embed_dim=12,
            depths=[1],
            num_heads=[2],
            window_size=4,
            mlp_ratio=2.0,
            upscale=2,
            upsampler="pixelshuffledirect",
        ),
    ),  # fmt: skip
    Small(
        "SwinIR",
        "SwinIR",
        _w(
            img_size=16,
            embed_dim=12,
            depths=[1],
            num_heads=[2],
            window_size=4,
            mlp_ratio=2.0,
            upscale=2,
            upsampler="pixelshuffledirect",
        ),
    ),  # fmt: skip
    Small(
        "GFPGAN",
        "GFPGANv1Clean",
        purpose="FaceSR",
        skip="face restoration at a fixed 512x512 (StyleGAN2 decoder): no small configuration",
    ),
    Small(
        "RestoreFormer",
        "RestoreFormer",
        purpose="FaceSR",
        skip="face restoration at a fixed 512x512 (VQ codebook): no small configuration",
    ),
    Small(
        "LaMa",
        "LaMa",
        purpose="Inpainting",
        skip="inpainting (image and mask): not an image-to-image model",
    ),
    Small(
        "OmniSR",
        "OmniSR",
        _w(num_feat=16, block_num=1, window_size=4, res_num=1, up_scale=2),
    ),
    Small(
        "SCUNet", "SCUNet", _w(config=[2, 2, 2, 2, 2, 2, 2], dim=64, input_resolution=64), side=64
    ),
    # Its quality-factor head is fixed at 512 features, so the last width must be 512; with
    # nb=1 its Sequentials collapse and spandrel no longer recognises the keys.
    Small("FBCNN", "FBCNN", _w(nc=[8, 16, 32, 512], nb=2)),
    Small(
        "Uformer",
        "Uformer",
        _w(img_size=64, embed_dim=8, win_size=4),
    ),
    Small(
        "RGT",
        "RGT",
        # embed_dim >= 32: its position-bias MLP is embed_dim // 2 // 16 wide (0 below 32, a
        # zero-width LayerNorm that PyTorch runs and ONNX Runtime rejects).
        _w(
            img_size=16,
            embed_dim=32,
            depth=[1],
            num_heads=[2],
            mlp_ratio=2.0,
            upscale=2,
            split_size=[4, 4],
        ),
    ),  # fmt: skip
    Small(
        "DAT",
        "DAT",
        _w(
            img_size=16,
            embed_dim=32,
            split_size=[2, 4],
            depth=[1],
            num_heads=[2],
            expansion_factor=2.0,
            upscale=2,
        ),
    ),  # fmt: skip
    Small(
        "CRAFT",
        "CRAFT",
        _w(  # embed_dim >= 32, as for RGT
            window_size=4,
            embed_dim=32,
            depths=[1],
            num_heads=[2],
            split_size_0=2,
            split_size_1=4,
            upscale=2,
        ),
    ),  # fmt: skip
    Small(
        "KBNet",
        "KBNet_s",
        _w(width=16, middle_blk_num=1, enc_blk_nums=[1, 1], dec_blk_nums=[1, 1]),
    ),
    Small(
        "DITN",
        "DITN",
        _w(dim=12, ITL_blocks=1, SAL_blocks=1, UFONE_blocks=1, patch_size=4, upscale=2),
    ),
    Small(
        "MMRealSR",
        "MMRealSR",
        _w(
            num_in_ch=3,
            num_out_ch=3,
            scale=4,  # at x2 and x1 its degradation net expects the unshuffled input
            num_feat=8,
            num_block=1,
            num_grow_ch=4,
            num_feats=[8, 16, 32, 64],
            num_blocks=[1, 1, 1, 1],
        ),
    ),  # fmt: skip
    Small("SPAN", "SPAN", _w(num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=2)),
    Small("RealCUGAN", "UpCunet2x", {}),  # fixed widths (1.3M parameters)
    Small("SAFMN", "SAFMN", _w(dim=8, n_blocks=1, upscaling_factor=2)),
    Small("SAFMNBCIE", "SAFMNBCIE", _w(dim=8, n_blocks=1, num_layers=1, upscaling_factor=2)),
    Small("DCTLSA", "DCTLSA", _w(nf=10, upscale=2, num_head=5)),
    Small("FFTformer", "FFTformer", _w(dim=8, num_blocks=[1, 1, 1], num_refinement_blocks=1)),
    Small("NAFNet", "NAFNet", _w(width=8, middle_blk_num=1, enc_blk_nums=[1], dec_blk_nums=[1])),
    Small(
        "ATD",
        "ATD",
        _w(
            img_size=16,
            embed_dim=12,
            depths=(2,),
            num_heads=(2,),
            window_size=4,
            upscale=2,
            upsampler="pixelshuffledirect",
        ),
    ),  # fmt: skip
    Small(
        "MixDehazeNet", "MixDehazeNet", _w(embed_dims=[8, 16, 32, 16, 8], depths=[1, 1, 1, 1, 1])
    ),
    Small("DRUNet", "DRUNet", _w(in_nc=4, out_nc=3, nc=[8, 16, 32, 64])),
    Small("DnCNN", "DnCNN", _w(in_nc=3, out_nc=3, nc=8)),
    Small(
        "IPT",
        "IPT",
        _w(patch_size=12, n_feats=16, num_heads=2, num_layers=1, scale=[2], rgb_range=1.0),
    ),
    Small(
        "DRCT",
        "DRCT",
        _w(
            img_size=16,
            embed_dim=12,
            depths=(1,),
            num_heads=(2,),
            window_size=4,
            gc=4,
            mlp_ratio=2.0,
            upscale=2,
            upsampler="pixelshuffle",
        ),
    ),  # fmt: skip
    Small("ESRGAN", "ESRGAN", _w(num_filters=8, num_blocks=1, scale=2)),
    Small("PLKSR", "PLKSR", _w(dim=16, n_blocks=1, upscaling_factor=2, kernel_size=5)),
    Small(
        "PLKSR",
        "RealPLKSR",
        _w(dim=16, n_blocks=1, upscaling_factor=2, kernel_size=5, norm_groups=4),
        variant="RealPLKSR",
    ),
    Small("RetinexFormer", "RetinexFormer", _w(n_feat=8, stage=1, num_blocks=[1, 1, 1])),
    Small("HVICIDNet", "HVICIDNet", _w(channels=[8, 8, 16, 32], heads=[1, 2, 4, 8])),
    Small(
        "SeemoRe",
        "SeemoRe",
        _w(
            scale=2,
            num_experts=2,
            num_layers=1,
            embedding_dim=16,
            global_kernel_size=5,
            recursive=1,
        ),
    ),  # fmt: skip
    Small("MoSR", "MoSR", _w(upscale=2, n_block=1, dim=16)),
    Small("MoESR", "MoESR", _w(scale=2, dim=16, n_blocks=1, n_block=1, upsample_dim=16)),
    Small("RCAN", "RCAN", _w(scale=2, n_resgroups=1, n_resblocks=1, n_feats=16, reduction=4)),
    Small(
        "FDAT",
        "FDAT",
        _w(
            scale=2,
            embed_dim=16,
            num_groups=1,
            depth_per_group=1,
            num_heads=2,
            window_size=4,
            mid_dim=16,
            aim_reduction_ratio=4,
        ),
    ),  # fmt: skip
    Small(
        "AuraSR",
        "UnetUpsampler",
        purpose="SR",
        skip="GAN upsampler whose style network and attention stacks are fixed at 600M "
        "parameters: no small configuration",
    ),
    # spandrel_extra_arches
    Small(
        "SRFormer",
        "SRFormer",
        _w(
            img_size=16,
            embed_dim=12,
            depths=(1,),
            num_heads=(2,),
            window_size=4,
            mlp_ratio=2.0,
            upscale=2,
            upsampler="pixelshuffledirect",
        ),
    ),  # fmt: skip
    Small(
        "CodeFormer",
        "CodeFormer",
        purpose="FaceSR",
        skip="face restoration at a fixed 512x512 (VQGAN codebook): no small configuration",
    ),
    Small(
        "MAT",
        "MAT",
        purpose="Inpainting",
        skip="inpainting (image and mask): not an image-to-image model",
    ),
    Small(
        "DDColor",
        "DDColor",
        purpose="Restoration",
        skip="colourisation on a ConvNeXt backbone of fixed size: no small configuration",
    ),
    Small(
        "AdaCode",
        "AdaCodeSRNet_Contrast",
        purpose="SR",
        skip="codebook restoration at fixed widths (VQGAN): no small configuration",
    ),
    Small(
        "FeMaSR",
        "FeMaSRNet",
        purpose="SR",
        skip="codebook restoration at fixed widths (VQGAN): no small configuration",
    ),
    Small("M3SNet", "M3SNet", _w(width=8, enc_blk_nums=[1, 1, 1, 1], dec_blk_nums=[1, 1, 1, 1])),
    Small(
        "Restormer",
        "Restormer",
        _w(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, heads=[1, 1, 1, 1]),
    ),
    Small(
        "MPRNet",
        "MPRNet",
        _w(n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4, num_cab=1, reduction=2),
    ),
    Small("MIRNet2", "MIRNet2", _w(n_feat=16, n_MRB=1)),
)


def registry() -> list[tuple[str, str]]:
    """(architecture id, package) for every architecture spandrel registers, and those of
    spandrel_extra_arches when it is installed."""
    from spandrel import MAIN_REGISTRY

    out = [(s.architecture.id, "spandrel.architectures") for s in MAIN_REGISTRY]
    try:
        import spandrel_extra_arches
    except ImportError:
        return [a for a in out if a[0] != "EDSR"]
    out += [(s.architecture.id, "spandrel_extra_arches.architectures") for s in
            spandrel_extra_arches.EXTRA_REGISTRY]  # fmt: skip
    return [a for a in out if a[0] != "EDSR"]  # adaptsr's own registration, not spandrel's


def install_extra() -> str | None:
    """Add spandrel_extra_arches to spandrel's main registry (where load_model looks); its
    version, or None when it is not installed."""
    try:
        import spandrel_extra_arches
        from spandrel import MAIN_REGISTRY
    except ImportError:
        return None
    ids = {s.architecture.id for s in MAIN_REGISTRY}
    if not all(s.architecture.id in ids for s in spandrel_extra_arches.EXTRA_REGISTRY):
        spandrel_extra_arches.install(ignore_duplicates=True)
    from importlib.metadata import version

    return version("spandrel_extra_arches")


@dataclass
class Row:
    """One architecture's results: stage -> (status, reason)."""

    name: str
    arch: str
    package: str
    purpose: str = ""
    scale: int = 0
    params: int = 0
    sites: dict[str, int] = field(default_factory=dict)
    stages: dict[str, tuple[str, str]] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "arch": self.arch,
            "package": self.package,
            "purpose": self.purpose,
            "scale": self.scale,
            "params": self.params,
            "sites": self.sites,
            "stages": {k: {"status": s, "reason": r} for k, (s, r) in self.stages.items()},
            "seconds": round(self.seconds, 1),
        }


def reason(e: BaseException) -> str:
    """One line for a failure: the exception and where in the model it was raised."""
    text = str(e).strip().splitlines()
    line = f"{type(e).__name__}: {text[0] if text else ''}".strip()
    if not isinstance(e, UserError):
        frames = [f for f in traceback.extract_tb(e.__traceback__) if "spandrel" in f.filename]
        if frames:
            line += f" (in {Path(frames[-1].filename).name}:{frames[-1].lineno})"
    return line if len(line) <= 200 else line[:197] + "..."


def build(spec: Small, package: str) -> nn.Module:
    module = importlib.import_module(f"{package}.{spec.arch}")
    torch.manual_seed(0)
    return getattr(module, spec.cls)(**spec.kwargs)


def example_size(model: nn.Module, side: int = 16) -> int:
    """The smallest square side >= `side` the model accepts."""
    from adaptsr.adapt.models import model_info
    from adaptsr.core.tiling import round_up

    info = model_info(model)
    return round_up(max(side, info.min_size), max(1, info.multiple_of))


def randomise_adapters(model: nn.Module, seed: int = 1) -> None:
    """Non-zero adapters (B starts at zero, which would hide a wrong merge)."""
    from adaptsr.adapt.lora import lora_layers

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            for a, b, _ in layer.adapters().values():
                a.copy_(torch.randn(a.shape, generator=g, dtype=a.dtype) * 0.05)
                b.copy_(torch.randn(b.shape, generator=g, dtype=b.dtype) * 0.05)


def _base_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {
        k.replace(".base_layer.", "."): v.detach().clone()
        for k, v in model.state_dict().items()
        if ".lora_A" not in k and ".lora_B" not in k
    }


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-12))


def check_adapt(spec: Small, package: str, work: Path, row: Row) -> nn.Module | None:
    """load -> sites -> inject -> train step -> merge; the merged model when merge passed."""
    from adaptsr.adapt.lora import (
        adapter_parameters,
        adapter_train_mode,
        inject_lora,
        lora_sites,
        merge_lora,
    )
    from adaptsr.adapt.models import load_model, model_from_state_dict, model_info

    stages = row.stages
    try:
        net = build(spec, package)
        path = work / f"{spec.name.replace(' ', '_')}.pth"
        torch.save(net.state_dict(), path)
        model = load_model(path)
        info = model_info(model)
        if info.arch != spec.arch:
            raise UserError(f"detected as {info.arch}, built as {spec.arch}")
        base_state = {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}
    except Exception as e:
        stages["load"] = (FAIL, reason(e))
        return None
    stages["load"] = (PASS, "")
    row.scale = info.scale
    row.params = sum(p.numel() for p in model.parameters())
    row.purpose = info.purpose
    side = example_size(model, spec.side)
    x = torch.rand(1, info.in_channels, side, side, generator=torch.Generator().manual_seed(0))

    try:
        sites = lora_sites(model)
        for s in sites:
            row.sites[s.kind] = row.sites.get(s.kind, 0) + 1
        inject_lora(model, RANK)
        randomise_adapters(model)
    except Exception as e:
        stages["inject"] = (FAIL, reason(e))
        return None
    stages["inject"] = (PASS, "")

    before = _base_state(model)
    try:
        adapter_train_mode(model)
        adapters = adapter_parameters(model)
        ids = {id(p) for p in adapters}
        optimizer = torch.optim.Adam(adapters, lr=1e-3)
        out = model(x.clone())  # some models (RCAN) scale their input in place
        if not isinstance(out, torch.Tensor):
            raise UserError(f"forward returns a {type(out).__name__}, not an image tensor")
        target = torch.rand(out.shape, generator=torch.Generator().manual_seed(1))
        loss = F.l1_loss(out, target)
        if not torch.isfinite(loss):
            raise UserError(f"loss is {float(loss)}")
        loss.backward()
        stray = [n for n, p in model.named_parameters() if p.grad is not None and id(p) not in ids]
        if stray:
            raise UserError(f"a base parameter got a gradient: {stray[0]}")
        if not any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in adapters):
            raise UserError("no adapter got a non-zero gradient")
        optimizer.step()
        after = _base_state(model)
        changed = [k for k, v in before.items() if k not in after or not torch.equal(after[k], v)]
        if changed:
            raise UserError(f"the frozen base changed during the step: {changed[0]}")
    except Exception as e:
        stages["train_step"] = (FAIL, reason(e))
        return None
    stages["train_step"] = (PASS, "")

    try:
        model.eval()
        with torch.no_grad():
            adapted = model(x.clone())
            merge_lora(model)
            merged = model(x.clone())
        err = _relative(merged, adapted)
        if not err <= MERGE_TOL:
            raise UserError(f"merged output differs from the adapted one by {err:.2e} (relative)")
        state = model.state_dict()
        got = {k: (tuple(v.shape), v.dtype) for k, v in state.items()}
        if got != base_state:
            diff = sorted(set(got) ^ set(base_state)) or [k for k in got if got[k] != base_state[k]]
            raise UserError(f"merged state dict differs from the base's at {diff[0]}")
        reloaded = model_from_state_dict({k: v.clone() for k, v in state.items()}, "merged")
        with torch.no_grad():
            err = _relative(reloaded(x.clone()), merged)
        if not err <= MERGE_TOL:
            raise UserError(f"the reloaded merged checkpoint differs by {err:.2e}")
    except Exception as e:
        stages["merge"] = (FAIL, reason(e))
        return None
    stages["merge"] = (PASS, "")
    return model


OnnxStages = Callable[[nn.Module, Row, int], None]  # (merged model, row, check side)


def sweep(
    names: list[str] | None = None,
    onnx: OnnxStages | None = None,
    onnx_for: set[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[Row]:
    """Run every architecture (or those named) through the stages; `onnx` adds the export
    stages for the merged model (for the names in `onnx_for`, or all when it is None)."""
    install_extra()
    packages = dict(registry())
    rows = []
    with tempfile.TemporaryDirectory(prefix="adaptsr-archcheck-") as tmp:
        for spec in SMALL:
            if names and spec.name not in names and spec.arch not in names:
                continue
            if spec.arch not in packages:
                continue  # spandrel_extra_arches not installed
            row = Row(spec.name, spec.arch, packages[spec.arch].split(".")[0])
            start = time.perf_counter()
            if spec.skip:
                row.purpose = spec.purpose
                row.stages = {s: (NA, spec.skip) for s in ADAPT_STAGES}
            else:
                merged = check_adapt(spec, packages[spec.arch], Path(tmp), row)
                for s in ADAPT_STAGES:
                    row.stages.setdefault(s, (NA, "an earlier stage failed"))
                wanted = onnx_for is None or spec.name in onnx_for
                if onnx is not None and wanted and merged is not None:
                    onnx(merged, row, spec.side)
            row.seconds = time.perf_counter() - start
            if progress:
                progress(f"{row.name}: " + " ".join(s for s, _ in row.stages.values()))
            rows.append(row)
    missing = sorted({a for a, _ in packages.items()} - {s.arch for s in SMALL})
    for arch in missing:  # a spandrel release added an architecture: it is listed, not hidden
        row = Row(arch, arch, packages[arch].split(".")[0])
        row.stages = {s: (NA, "no small configuration in adapt/archcheck.py yet") for s in
                      ADAPT_STAGES}  # fmt: skip
        rows.append(row)
    return rows
