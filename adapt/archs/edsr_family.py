"""EDSR and the networks built on its code (RCAN, IPT): a fixed mean shift around the body."""

from __future__ import annotations

from torch import nn

from adaptsr.adapt.archs.profile import ArchProfile, Builtin, LoRASkip, small, spandrel


def _is_mean_shift(layer: nn.Module, parent: nn.Module, leaf: str) -> bool:
    # a conv holding the dataset mean, never trained
    return type(layer).__name__ == "MeanShift"


MEAN_SHIFT = LoRASkip("fixed mean shift (not a learned layer)", _is_mean_shift)


def _edsr(name: str, n_resblocks: int, n_feats: int, res_scale: float) -> Builtin:
    return Builtin(
        name,
        "EDSR",
        lambda scale: dict(
            scale=scale, n_resblocks=n_resblocks, n_feats=n_feats, res_scale=res_scale
        ),
    )


PROFILES = (
    # spandrel has no EDSR: adapt/edsr.py defines it and registers it with spandrel
    ArchProfile(
        "EDSR",
        "adaptsr.adapt.edsr",
        "SR",
        # the tests' tiny EDSR: x2, 2 blocks of 16 features (receptive field ~8 input pixels)
        small=(small("EDSR", scale=2, n_resblocks=2, n_feats=16, res_scale=1.0),),
        # the official hyper-parameters
        builtins=(_edsr("edsr-baseline", 16, 64, 1.0), _edsr("edsr", 32, 256, 0.1)),
        lora_skips=(MEAN_SHIFT,),
    ),
    spandrel(
        "RCAN",
        "SR",
        small=(small("RCAN", scale=2, n_resgroups=1, n_resblocks=1, n_feats=16, reduction=4),),
        lora_skips=(MEAN_SHIFT,),
    ),
    spandrel(
        "IPT",
        "SR",
        small=(
            small(
                "IPT",
                patch_size=12,
                n_feats=16,
                num_heads=2,
                num_layers=1,
                scale=[2],
                rgb_range=1.0,
            ),
        ),
        lora_skips=(MEAN_SHIFT,),
        call="scales the image to its pixel range and picks its largest scale's head",
    ),
)
