"""Restoration networks: denoising, deblurring, dehazing, JPEG artefacts, low light (x1)."""

from __future__ import annotations

from adaptsr.adapt.archs.profile import extra, small, spandrel

_NOISE_MAP = "adds a constant noise-level map (15/255) as a fourth input channel"

PROFILES = (
    spandrel(
        "SCUNet",
        "Restoration",
        small=(
            small("SCUNet", config=[2, 2, 2, 2, 2, 2, 2], dim=64, input_resolution=64, side=64),
        ),
    ),
    spandrel(
        "FBCNN",
        "Restoration",
        # Its quality-factor head is fixed at 512 features, so the last width must be 512; with
        # nb=1 its Sequentials collapse and spandrel no longer recognises the keys.
        small=(small("FBCNN", nc=[8, 16, 32, 512], nb=2),),
        call="picks the image from its (image, quality factor) outputs",
    ),
    spandrel(
        "Uformer", "Restoration", small=(small("Uformer", img_size=64, embed_dim=8, win_size=4),)
    ),
    spandrel(
        "KBNet",
        "Restoration",
        small=(
            small("KBNet_s", width=16, middle_blk_num=1, enc_blk_nums=[1, 1], dec_blk_nums=[1, 1]),
        ),
    ),
    spandrel(
        "FFTformer",
        "Restoration",
        small=(small("FFTformer", dim=8, num_blocks=[1, 1, 1], num_refinement_blocks=1),),
    ),
    spandrel(
        "NAFNet",
        "Restoration",
        small=(small("NAFNet", width=8, middle_blk_num=1, enc_blk_nums=[1], dec_blk_nums=[1]),),
    ),
    spandrel(
        "MixDehazeNet",
        "Restoration",
        small=(small("MixDehazeNet", embed_dims=[8, 16, 32, 16, 8], depths=[1, 1, 1, 1, 1]),),
        call="maps its [-1, 1] output to [0, 1]",
    ),
    spandrel(
        "DRUNet",
        "Restoration",
        small=(small("DRUNet", in_nc=4, out_nc=3, nc=[8, 16, 32, 64]),),
        call=_NOISE_MAP,
    ),
    spandrel(
        "DnCNN",
        "Restoration",
        small=(small("DnCNN", in_nc=3, out_nc=3, nc=8),),
        call=_NOISE_MAP + " (FDnCNN checkpoints only)",
    ),
    spandrel(
        "RetinexFormer",
        "Restoration",
        small=(small("RetinexFormer", n_feat=8, stage=1, num_blocks=[1, 1, 1]),),
        call="runs images over 3000 pixels wide or high in interlaced halves",
    ),
    spandrel(
        "HVICIDNet",
        "Restoration",
        small=(small("HVICIDNet", channels=[8, 8, 16, 32], heads=[1, 2, 4, 8]),),
    ),
    extra(
        "M3SNet",
        "Restoration",
        small=(small("M3SNet", width=8, enc_blk_nums=[1, 1, 1, 1], dec_blk_nums=[1, 1, 1, 1]),),
    ),
    extra(
        "Restormer",
        "Restoration",
        small=(
            small(
                "Restormer",
                dim=8,
                num_blocks=[1, 1, 1, 1],
                num_refinement_blocks=1,
                heads=[1, 1, 1, 1],
            ),
        ),
    ),
    extra(
        "MPRNet",
        "Restoration",
        small=(
            small(
                "MPRNet", n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4, num_cab=1, reduction=2
            ),
        ),
        call="picks the final stage's image from its outputs",
    ),
    extra("MIRNet2", "Restoration", small=(small("MIRNet2", n_feat=16, n_MRB=1),)),
)
