"""Architectures with no small configuration: face restoration, inpainting, colourisation and
codebook networks whose widths or input size are fixed. The sweep lists them as n/a with the
reason; load_model still loads their checkpoints."""

from __future__ import annotations

from adaptsr.adapt.archs.profile import extra, spandrel

_MASKED = "inpainting (image and mask): not an image-to-image model"
_CODEBOOK = "codebook restoration at fixed widths (VQGAN): no small configuration"
_PICK_IMAGE = "picks the image from its outputs"

PROFILES = (
    spandrel(
        "GFPGAN",
        "FaceSR",
        no_small="face restoration at a fixed 512x512 (StyleGAN2 decoder): no small configuration",
        call=_PICK_IMAGE,
    ),
    spandrel(
        "RestoreFormer",
        "FaceSR",
        no_small="face restoration at a fixed 512x512 (VQ codebook): no small configuration",
        call="maps [0, 1] to [-1, 1] and back, and picks the image from its outputs",
    ),
    spandrel("LaMa", "Inpainting", no_small=_MASKED),
    spandrel(
        "AuraSR",
        "SR",
        no_small="GAN upsampler whose style network and attention stacks are fixed at 600M "
        "parameters: no small configuration",
    ),
    extra(
        "CodeFormer",
        "FaceSR",
        no_small="face restoration at a fixed 512x512 (VQGAN codebook): no small configuration",
        call=_PICK_IMAGE,
    ),
    extra("MAT", "Inpainting", no_small=_MASKED),
    extra(
        "DDColor",
        "Restoration",
        no_small="colourisation on a ConvNeXt backbone of fixed size: no small configuration",
        call="colours a grey image through Lab (the model predicts its a and b channels)",
    ),
    extra("AdaCode", "SR", no_small=_CODEBOOK),
    extra("FeMaSR", "SR", no_small=_CODEBOOK),
)
