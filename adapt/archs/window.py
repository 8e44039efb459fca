"""Window-attention transformers (SwinIR and its descendants). The small settings use windows of
4 and one block per stage."""

from __future__ import annotations

from adaptsr.adapt.archs.profile import Builtin, ExportRewrite, extra, small, spandrel

_SWINIR = "spandrel.architectures.SwinIR.__arch.SwinIR"
_DRCT = "spandrel.architectures.DRCT.__arch.drct_arch"
_HAT = "spandrel.architectures.HAT.__arch.HAT"


def _swinir_light(scale: int) -> dict:  # lightweight SR
    return dict(
        upscale=scale,
        img_size=64,
        window_size=8,
        img_range=1.0,
        mlp_ratio=2.0,
        resi_connection="1conv",
        in_chans=3,
        embed_dim=60,
        depths=[6] * 4,
        num_heads=[6] * 4,
        upsampler="pixelshuffledirect",
    )


def _swinir_medium(scale: int) -> dict:  # classical SR, trained on 48x48 (x2: 64x64) patches
    return dict(
        upscale=scale,
        img_size=48 if scale == 4 else 64,
        window_size=8,
        img_range=1.0,
        mlp_ratio=2.0,
        resi_connection="1conv",
        in_chans=3,
        embed_dim=180,
        depths=[6] * 6,
        num_heads=[6] * 6,
        upsampler="pixelshuffle",
    )


def _drct(scale: int) -> dict:
    return dict(
        upscale=scale,
        img_size=64,
        window_size=16,
        img_range=1.0,
        embed_dim=180,
        depths=(6,) * 6,
        num_heads=(6,) * 6,
        mlp_ratio=2.0,
        gc=32,
        upsampler="pixelshuffle",
        resi_connection="1conv",
    )


def _swin_small(cls: str, **kwargs) -> tuple:
    """One block of width 12, two heads, windows of 4, x2 by pixel shuffle."""
    settings = dict(
        img_size=16,
        embed_dim=12,
        depths=[1],
        num_heads=[2],
        window_size=4,
        mlp_ratio=2.0,
        upscale=2,
        upsampler="pixelshuffledirect",
    )
    return (small(cls, **{**settings, **kwargs}),)


PROFILES = (
    spandrel(
        "HAT",
        "SR",
        small=_swin_small(
            "HAT",
            embed_dim=24,
            depths=(1,),
            num_heads=(2,),
            compress_ratio=3,
            squeeze_factor=4,
            upsampler="pixelshuffle",
        ),
        export_rewrites=(ExportRewrite(_HAT, "HAT", "hat_mask"),),
    ),
    spandrel(
        "GRL",
        "SR",
        small=(
            small(
                "GRL",
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
                side=64,  # spandrel's GRL reflect-pads to a multiple of 64, which needs > 48
            ),
        ),
    ),
    spandrel("Swin2SR", "SR", small=_swin_small("Swin2SR")),
    spandrel(
        "SwinIR",
        "SR",
        small=_swin_small("SwinIR"),
        builtins=(
            Builtin("swinir-light", "SwinIR", _swinir_light),
            Builtin("swinir-m", "SwinIR", _swinir_medium),
        ),
        export_rewrites=(
            ExportRewrite(_SWINIR, "SwinTransformerBlock", "swin_block"),
            ExportRewrite(_SWINIR, "SwinIR", "swinir_pad"),
        ),
    ),
    spandrel(
        "RGT",
        "SR",
        # embed_dim >= 32: its position-bias MLP is embed_dim // 2 // 16 wide (0 below 32, a
        # zero-width LayerNorm that PyTorch runs and ONNX Runtime rejects).
        small=(
            small(
                "RGT",
                img_size=16,
                embed_dim=32,
                depth=[1],
                num_heads=[2],
                mlp_ratio=2.0,
                upscale=2,
                split_size=[4, 4],
            ),
        ),
    ),
    spandrel(
        "DAT",
        "SR",
        small=(
            small(
                "DAT",
                img_size=16,
                embed_dim=32,
                split_size=[2, 4],
                depth=[1],
                num_heads=[2],
                expansion_factor=2.0,
                upscale=2,
            ),
        ),
    ),
    spandrel(
        "CRAFT",
        "SR",
        small=(
            small(  # embed_dim >= 32, as for RGT
                "CRAFT",
                window_size=4,
                embed_dim=32,
                depths=[1],
                num_heads=[2],
                split_size_0=2,
                split_size_1=4,
                upscale=2,
            ),
        ),
    ),
    spandrel("ATD", "SR", small=_swin_small("ATD", depths=(2,), num_heads=(2,))),
    spandrel(
        "DRCT",
        "SR",
        small=_swin_small("DRCT", depths=(1,), num_heads=(2,), gc=4, upsampler="pixelshuffle"),
        builtins=(Builtin("drct", "DRCT", _drct),),
        export_rewrites=(
            ExportRewrite(_DRCT, "SwinTransformerBlock", "swin_block"),
            ExportRewrite(_DRCT, "DRCT", "drct_pad_crop"),
        ),
        export_pads_to_window=True,
    ),
    spandrel(
        "FDAT",
        "SR",
        small=(
            small(
                "FDAT",
                scale=2,
                embed_dim=16,
                num_groups=1,
                depth_per_group=1,
                num_heads=2,
                window_size=4,
                mid_dim=16,
                aim_reduction_ratio=4,
            ),
        ),
    ),
    extra("SRFormer", "SR", small=_swin_small("SRFormer", depths=(1,), num_heads=(2,))),
)
