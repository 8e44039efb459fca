"""What adaptsr knows about one architecture, as data: the `ArchProfile` and its parts.

A profile is keyed by spandrel's architecture id and says how to build the architecture small
(the sweep and the tests), which built-in configurations it offers, which of its layers carry
no adapter, what the ONNX export rewrites in it, and whether spandrel runs it through a call
function of its own. The profiles themselves live in this folder, one module per family.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from torch import nn


@dataclass(frozen=True)
class LoRASkip:
    """Layers that carry no adapter, and why (shown by `lora_report` and `adapt allocate`)."""

    reason: str
    matches: Callable[[nn.Module, nn.Module, str], bool]  # (layer, its parent, attribute name)


@dataclass(frozen=True)
class Build:
    """One way to build the architecture: `cls(**kwargs)` from the profile's module."""

    cls: str  # class exported by the architecture's module
    kwargs: Mapping[str, object] = field(default_factory=dict)
    variant: str = ""  # a second class of the same architecture (PLKSR / RealPLKSR)
    side: int = 16  # input height/width of the sweep's checks (at least the model's minimum)


@dataclass(frozen=True)
class Builtin:
    """A built-in configuration, offered as `{name}-x{scale}` for each scale."""

    name: str
    cls: str
    kwargs: Callable[[int], dict]  # the constructor's arguments at a scale
    scales: tuple[int, ...] = (2, 4)


@dataclass(frozen=True)
class ExportRewrite:
    """A class whose instances the ONNX export patches (adaptsr.export.rewrites names `rewrite`)."""

    module: str  # the Python module defining the class
    cls: str
    rewrite: str


@dataclass(frozen=True)
class ArchProfile:
    id: str  # spandrel's architecture id
    module: str  # the Python module exporting the architecture's classes
    purpose: str  # spandrel's task label: SR, FaceSR, Restoration, Inpainting
    small: tuple[Build, ...] = ()  # the smallest configurations (first: the one tests use)
    no_small: str = ""  # why there is no small configuration (the sweep's row is n/a)
    builtins: tuple[Builtin, ...] = ()
    lora_skips: tuple[LoRASkip, ...] = ()
    export_rewrites: tuple[ExportRewrite, ...] = ()
    # The export pads the input to a window multiple inside the graph (and crops the output),
    # so the exported graph accepts sizes the PyTorch model refuses.
    export_pads_to_window: bool = False
    # What spandrel's call function does besides `model(image)` ("" when it is just that);
    # when set, load_model makes that function the model's forward (adapt/models.py).
    call: str = ""

    @property
    def package(self) -> str:
        """The distribution the architecture comes from (spandrel, spandrel_extra_arches,
        adaptsr)."""
        return self.module.split(".")[0]

    def construct(self, cls: str, **kwargs) -> nn.Module:
        """A fresh `cls(**kwargs)` from the architecture's module (random weights from torch's
        global RNG)."""
        return getattr(importlib.import_module(self.module), cls)(**kwargs)


def spandrel(arch: str, purpose: str, **facts) -> ArchProfile:
    return ArchProfile(arch, f"spandrel.architectures.{arch}", purpose, **facts)


def extra(arch: str, purpose: str, **facts) -> ArchProfile:
    return ArchProfile(arch, f"spandrel_extra_arches.architectures.{arch}", purpose, **facts)


def small(cls: str, variant: str = "", side: int = 16, **kwargs) -> Build:
    return Build(cls, kwargs, variant=variant, side=side)
