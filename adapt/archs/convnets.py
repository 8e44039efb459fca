"""Super-resolution networks built mostly from convolutions (some with a little attention)."""

from __future__ import annotations

from torch import nn

from adaptsr.adapt.archs.profile import Builtin, ExportRewrite, LoRASkip, small, spandrel


def _is_reparameterised(layer: nn.Module, parent: nn.Module, leaf: str) -> bool:
    # SPAN-style blocks rebuild `eval_conv` from their training-time convs (`update_params`)
    return leaf == "eval_conv" and hasattr(parent, "update_params")


REPARAMETERISED = LoRASkip(
    "re-computed from the block's other convs at inference (reparameterised)",
    _is_reparameterised,
)

PROFILES = (
    spandrel("Compact", "SR", small=(small("Compact", num_feat=8, num_conv=2, upscale=2),)),
    spandrel(
        "SwiftSRGAN",
        "SR",
        small=(small("SwiftSRGAN", num_channels=8, num_blocks=1, upscale_factor=2),),
    ),
    spandrel(
        "OmniSR",
        "SR",
        small=(small("OmniSR", num_feat=16, block_num=1, window_size=4, res_num=1, up_scale=2),),
    ),
    spandrel(
        "DITN",
        "SR",
        small=(
            small(
                "DITN",
                dim=12,
                ITL_blocks=1,
                SAL_blocks=1,
                UFONE_blocks=1,
                patch_size=4,
                upscale=2,
            ),
        ),
    ),
    spandrel(
        "MMRealSR",
        "SR",
        small=(
            small(
                "MMRealSR",
                num_in_ch=3,
                num_out_ch=3,
                scale=4,  # at x2 and x1 its degradation net expects the unshuffled input
                num_feat=8,
                num_block=1,
                num_grow_ch=4,
                num_feats=[8, 16, 32, 64],
                num_blocks=[1, 1, 1, 1],
            ),
        ),
        call="picks the image from its (image, degradation) outputs",
    ),
    spandrel(
        "SPAN",
        "SR",
        small=(small("SPAN", num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=2),),
        lora_skips=(REPARAMETERISED,),
        export_rewrites=(
            ExportRewrite("spandrel.architectures.SPAN.__arch.span", "Conv3XC", "fused_conv"),
        ),
    ),
    spandrel("RealCUGAN", "SR", small=(small("UpCunet2x"),)),  # fixed widths (1.3M parameters)
    spandrel(
        "SAFMN",
        "SR",
        small=(small("SAFMN", dim=8, n_blocks=1, upscaling_factor=2),),
        builtins=(
            Builtin(
                "safmn",
                "SAFMN",
                lambda scale: dict(dim=36, n_blocks=8, ffn_scale=2.0, upscaling_factor=scale),
            ),
        ),
    ),
    spandrel(
        "SAFMNBCIE",
        "Restoration",
        small=(small("SAFMNBCIE", dim=8, n_blocks=1, num_layers=1, upscaling_factor=2),),
    ),
    spandrel("DCTLSA", "SR", small=(small("DCTLSA", nf=10, upscale=2, num_head=5),)),
    spandrel("ESRGAN", "SR", small=(small("ESRGAN", num_filters=8, num_blocks=1, scale=2),)),
    spandrel(
        "PLKSR",
        "SR",
        small=(
            small("PLKSR", dim=16, n_blocks=1, upscaling_factor=2, kernel_size=5),
            small(
                "RealPLKSR",
                variant="RealPLKSR",
                dim=16,
                n_blocks=1,
                upscaling_factor=2,
                kernel_size=5,
                norm_groups=4,
            ),
        ),
    ),
    spandrel(
        "SeemoRe",
        "SR",
        small=(
            small(
                "SeemoRe",
                scale=2,
                num_experts=2,
                num_layers=1,
                embedding_dim=16,
                global_kernel_size=5,
                recursive=1,
            ),
        ),
        export_rewrites=(
            ExportRewrite(
                "spandrel.architectures.SeemoRe.__arch.seemore_arch", "MoELayer", "dense_experts"
            ),
        ),
    ),
    spandrel("MoSR", "SR", small=(small("MoSR", upscale=2, n_block=1, dim=16),)),
    spandrel(
        "MoESR",
        "SR",
        small=(small("MoESR", scale=2, dim=16, n_blocks=1, n_block=1, upsample_dim=16),),
    ),
)
