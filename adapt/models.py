"""Model loading: checkpoints through spandrel (never running code), built-in configurations.

`load_model(spec)` takes a checkpoint path or a built-in name and returns a torch.nn.Module in
eval mode. The facts the rest of the pipeline needs (scale, architecture, size requirements)
travel with the module as `model.adaptsr_info` and are read with `model_info(model)`.
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import re
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import safetensors
import safetensors.torch
import torch
from spandrel import (
    MAIN_REGISTRY,
    ImageModelDescriptor,
    UnsupportedModelError,
    canonicalize_state_dict,
)
from torch import nn

from adaptsr.adapt import archs
from adaptsr.adapt.edsr import register as register_edsr
from adaptsr.adapt.fetch import cached_path
from adaptsr.adapt.releases import RELEASES
from adaptsr.core.errors import UserError
from adaptsr.core.fileio import atomic_output, check_readable
from adaptsr.core.tiling import SizeRule

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors")


@dataclass(frozen=True)
class ModelInfo:
    """What the pipeline needs to know about a model besides its weights."""

    name: str  # built-in name or checkpoint path
    arch: str  # spandrel architecture id, e.g. "SwinIR"
    scale: int
    in_channels: int
    out_channels: int
    min_size: int  # smallest input height/width
    multiple_of: int  # input height/width must be a multiple of this
    tiling: str  # "supported", "discouraged" or "internal"
    supports_half: bool
    supports_bfloat16: bool
    purpose: str = "SR"  # spandrel's task label: SR, FaceSR, Restoration, Inpainting, ...

    def to_dict(self) -> dict:
        return asdict(self)

    def size_rule(self) -> SizeRule:
        """The input sizes the model accepts, for tiling and the backends."""
        return SizeRule(min_size=max(self.min_size, 1), multiple_of=max(self.multiple_of, 1))


# ---------------------------------------------------------------------------------------------
# built-in configurations (official hyper-parameters, random weights), from the architecture
# profiles (adapt/archs/)


def _builtins() -> dict[str, Callable[[], nn.Module]]:
    table: dict[str, Callable[[], nn.Module]] = {}
    for scale in (2, 4):
        for profile in archs.PROFILES.values():
            for config in profile.builtins:
                if scale in config.scales:
                    table[f"{config.name}-x{scale}"] = partial(
                        profile.construct, config.cls, **config.kwargs(scale)
                    )
    return table


BUILTIN_MODELS: dict[str, Callable[[], nn.Module]] = _builtins()


# ---------------------------------------------------------------------------------------------
# pretrained built-ins: weights that ship inside the package (adapt/weights/), so the first
# command a user runs shows super-resolution working without a download. docs/pretrained.md
# records how each was trained and what it scores.


@dataclass(frozen=True)
class Pretrained:
    architecture: str  # the BUILTIN_MODELS configuration the weights fit
    file: str  # under adapt/weights/
    about: str


PRETRAINED: dict[str, Pretrained] = {
    "adaptsr-safmn-x4": Pretrained(
        "safmn-x4",
        "adaptsr-safmn-x4.safetensors",
        "SAFMN x4 pretrained on bicubic x4 with the photos scikit-image and matplotlib ship",
    ),
}


def model_names() -> list[str]:
    """Every name load_model accepts besides a path: pretrained first, then configurations."""
    return [*PRETRAINED, *BUILTIN_MODELS]


def pretrained_path(name: str) -> Path:
    return Path(__file__).parent / "weights" / PRETRAINED[name].file


def _load_pretrained(name: str) -> nn.Module:
    path = pretrained_path(name)
    if not path.is_file():
        raise UserError(f"the weights of {name} are missing from this installation ({path})")
    return model_from_state_dict(_read_state_dict(path, allow_torchscript=False), name=name)


# ---------------------------------------------------------------------------------------------
# random bases: adapting, merging or exporting a configuration without its weights gives a model
# that means nothing, so those pipelines refuse one unless asked (--allow-random-base)

ALLOW_RANDOM_FLAG = "--allow-random-base"


def random_weights(spec: str | os.PathLike) -> bool:
    """Whether `load_model(spec)` gives random weights: a configuration name whose official
    weights `adapt fetch` has not downloaded (pretrained names and checkpoints have weights)."""
    name = str(spec)
    return name in BUILTIN_MODELS and cached_path(name) is None


def check_base_weights(spec: str | os.PathLike, allow_random: bool = False) -> bool:
    """Refuse a base `spec` with random weights unless `allow_random`; True when the base is
    random (the caller records it)."""
    if not random_weights(spec):
        return False
    if not allow_random:
        raise UserError(random_base_message(str(spec)))
    return True


def random_base_message(name: str) -> str:
    """The one line that refuses configuration `name` as a base, and says where weights are."""
    release = RELEASES.get(name)
    if release is not None:
        where = (
            f"{name} has random weights: run `adapt fetch {name}` for its official release "
            f"({release.file}), or pick a model with weights from `adapt models`"
        )
    else:
        where = (
            f"{name} has random weights and no official release is recorded for it: pick a "
            "model with weights from `adapt models` (`adapt fetch NAME` downloads the releases "
            "listed there) or give a checkpoint"
        )
    return f"{where}; {ALLOW_RANDOM_FLAG} uses it as it is"


# ---------------------------------------------------------------------------------------------
# loading


def _registry():
    register_edsr()
    return MAIN_REGISTRY


def _read_state_dict(path: Path, allow_torchscript: bool) -> dict:
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        try:
            return safetensors.torch.load_file(str(path), device="cpu")
        except (safetensors.SafetensorError, OSError, ValueError) as e:
            raise UserError(f"cannot read {path}: not a valid safetensors file ({e})") from e
    if _is_torchscript(path):
        if not allow_torchscript:
            raise UserError(
                f"{path} is a TorchScript archive, which can run code when loaded; "
                "load it only if you trust it (allow_torchscript=True)"
            )
        try:
            return torch.jit.load(str(path), map_location="cpu").state_dict()
        except RuntimeError as e:
            raise UserError(f"cannot read TorchScript archive {path}: {e}".splitlines()[0]) from e
    try:
        # weights_only: a restricted unpickler that builds tensors and containers, never code.
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # truncated or foreign files fail in many ways (struct, zip, EOF)
        raise torch_load_error(path, e) from e


def torch_load_error(path: Path, e: Exception) -> UserError:
    """What a file torch.load refused is, in one line; never torch's advice to load it with
    weights_only=False (which would run any code the file holds)."""
    found = re.search(r"GLOBAL ([\w.]+)", str(e))
    names = [found.group(1)] if found else _pickle_globals(path)
    if isinstance(e, pickle.UnpicklingError) and names:
        return UserError(
            f"refused to load {path}: it holds Python objects besides weights "
            f"({', '.join(names[:3])}), which could run code"
        )
    return UserError(f"cannot read {path}: {describe_file(path)}, not a PyTorch checkpoint")


def _pickle_globals(path: Path, limit: int = 2**26) -> list[str]:
    """The Python names a (plain, non-zip) pickle file imports, read with pickletools without
    running it; [] for a file that is not a whole pickle."""
    try:
        with open(path, "rb") as f:
            data = f.read(limit)
        names, strings = [], []
        for op, arg, _ in pickletools.genops(io.BytesIO(data)):
            if op.name == "GLOBAL":
                names.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                names.append(f"{strings[-2]}.{strings[-1]}")
            elif isinstance(arg, str):
                strings.append(arg)
        return names
    except Exception:  # not a pickle, or cut short: nothing to name
        return []


def describe_file(path: Path) -> str:
    """A few words on what a file holds, from its first bytes."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        return f"unreadable ({e.strerror or e})"
    if size == 0:
        return "an empty file"
    if head.startswith(b"PK\x03\x04"):
        return f"a damaged or foreign zip archive ({size:,} bytes)"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return f"a damaged or foreign pickle ({size:,} bytes)"
    if head.startswith((b"{", b"[")):
        return f"text, perhaps JSON ({size:,} bytes)"
    return f"{size:,} bytes of unrecognised data"


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("/constants.pkl") for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _info_from_descriptor(desc, name: str) -> ModelInfo:
    tiling = {1: "supported", 2: "discouraged", 3: "internal"}.get(desc.tiling.value, "supported")
    req = desc.size_requirements
    return ModelInfo(
        name=name,
        arch=str(desc.architecture.id),
        scale=int(desc.scale),
        in_channels=int(desc.input_channels),
        out_channels=int(desc.output_channels),
        min_size=int(req.minimum),
        multiple_of=int(req.multiple_of),
        tiling=tiling,
        supports_half=bool(desc.supports_half),
        supports_bfloat16=bool(desc.supports_bfloat16),
        purpose=str(desc.purpose),
    )


class CalledModel(nn.Module):
    """A model that spandrel runs through a call function of its own (picking one output of a
    tuple, mapping the output range, adding a noise-level channel): that function becomes the
    forward, so training, merging and export all run what spandrel would run. The state dict
    keeps the architecture's own keys (without this wrapper's `net.` prefix), so checkpoints,
    fingerprints and merged weights read exactly as the unwrapped model's."""

    def __init__(self, net: nn.Module, call: Callable[[nn.Module, torch.Tensor], torch.Tensor]):
        super().__init__()
        self.net = net
        self.call = call
        self.register_state_dict_post_hook(_strip_net_prefix)
        self.register_load_state_dict_pre_hook(_add_net_prefix)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.call(self.net, x)


def _strip_net_prefix(module, state_dict, prefix, local_metadata):
    inner = prefix + "net."
    for key in [k for k in state_dict if k.startswith(inner)]:
        state_dict[prefix + key[len(inner) :]] = state_dict.pop(key)


def _add_net_prefix(module, state_dict, prefix, *args):
    # Every key below this wrapper is the architecture's (the wrapper holds no tensors).
    for key in [k for k in state_dict if k.startswith(prefix)]:
        state_dict[prefix + "net." + key[len(prefix) :]] = state_dict.pop(key)


def architecture_module(model: nn.Module) -> nn.Module:
    """The architecture's own module (inside a CalledModel, or the model itself)."""
    return model.net if isinstance(model, CalledModel) else model


def spandrel_call_function(desc) -> Callable[[nn.Module, torch.Tensor], torch.Tensor]:
    """The function spandrel runs a model through (`descriptor(image)` calls it).

    spandrel keeps it in the private `_call_fn` and has no public way to read it; this is the
    one place adaptsr reads it (tests/test_archs.py fails if spandrel renames it). Which
    architectures need it is a profile fact (`ArchProfile.call`), not guessed from the function.
    """
    return desc._call_fn


def _needs_call_function(arch: str) -> bool:
    profile = archs.find(arch)
    # An architecture without a profile (a newer spandrel) runs as spandrel would run it.
    return profile is None or bool(profile.call)


def model_from_state_dict(state_dict: dict, name: str = "<state dict>") -> nn.Module:
    """Detect the architecture of a state dict and build the model (through spandrel)."""
    if not isinstance(state_dict, dict) or not state_dict:
        raise UserError(f"{name} does not hold a state dict")
    state_dict = canonicalize_state_dict(state_dict)
    try:
        desc = _registry().load(state_dict)
    except UnsupportedModelError as e:
        raise UserError(
            f"unknown architecture in {name}: no supported model matches its keys"
        ) from e
    except (RuntimeError, KeyError, ValueError, IndexError) as e:
        raise UserError(f"cannot build a model from {name}: {e}".splitlines()[0]) from e
    if not isinstance(desc, ImageModelDescriptor):
        raise UserError(f"{name} is a {desc.architecture.name} model, not a super-resolution model")
    model = desc.model.eval()
    if _needs_call_function(str(desc.architecture.id)):
        model = CalledModel(model, spandrel_call_function(desc)).eval()
    model.adaptsr_info = _info_from_descriptor(desc, name)
    return model


def build_model(name: str, seed: int = 0) -> nn.Module:
    """A built-in configuration with random weights (seeded, so reproducible); a pretrained
    name gives its architecture, re-initialised (as pretraining starts)."""
    if name in PRETRAINED:
        name = PRETRAINED[name].architecture
    if name not in BUILTIN_MODELS:
        raise UserError(f"unknown built-in model {name!r} (built-ins: {', '.join(model_names())})")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BUILTIN_MODELS[name]()
    # Through the same path as a checkpoint, so a saved built-in reloads identically.
    return model_from_state_dict(model.state_dict(), name=name)


def load_model(
    spec: str | os.PathLike,
    device: str | torch.device = "cpu",
    allow_torchscript: bool = False,
) -> nn.Module:
    """Load a checkpoint (.pth, .pt, .ckpt, .safetensors), a pretrained built-in (its weights
    ship with the package) or a built-in configuration by name: its official weights where
    `adapt fetch` downloaded them, else random weights."""
    spec_str = str(spec)
    if spec_str in PRETRAINED:
        return _load_pretrained(spec_str).to(device)
    if spec_str in BUILTIN_MODELS:
        fetched = cached_path(spec_str)  # official weights `adapt fetch` downloaded
        if fetched is None:
            return build_model(spec_str).to(device)
        state_dict = _read_state_dict(fetched, allow_torchscript=False)
        return model_from_state_dict(state_dict, name=spec_str).to(device)
    path = Path(spec_str)
    if not path.exists():
        raise UserError(
            f"no model file or built-in named {spec_str!r} "
            f"(built-ins: {', '.join(model_names())}; `adapt models` lists them)"
        )
    check_readable(path, "checkpoint file")  # a folder, a pipe or a device
    if path.suffix.lower() not in CHECKPOINT_SUFFIXES:
        raise UserError(
            f"{path}: unsupported checkpoint type {path.suffix or '(none)'} "
            f"(expected one of {', '.join(CHECKPOINT_SUFFIXES)})"
        )
    state_dict = _read_state_dict(path, allow_torchscript)
    return model_from_state_dict(state_dict, name=str(path)).to(device)


def model_info(model: nn.Module) -> ModelInfo:
    """The facts attached by load_model/build_model."""
    info = getattr(model, "adaptsr_info", None)
    if info is None:
        raise UserError("this model was not loaded by adaptsr.load_model; its facts are unknown")
    return info


def _unshared(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A copy of every tensor whose memory an earlier one shares (a module used twice, as
    MPRNet's activations are): safetensors refuses shared memory; each key keeps its values."""
    seen: set[tuple[int, int]] = set()
    out = {}
    for key, tensor in state.items():
        where = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        out[key] = tensor.clone() if where in seen else tensor
        seen.add(where)
    return out


def save_model(model: nn.Module, path: str | os.PathLike, force: bool = False) -> Path:
    """Write the model's state dict as .safetensors or .pth, atomically."""
    path = Path(path)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_output(path, force=force) as tmp:
        if path.suffix.lower() == ".safetensors":
            safetensors.torch.save_file(_unshared(state), str(tmp), metadata={"format": "pt"})
        elif path.suffix.lower() in (".pth", ".pt", ".ckpt"):
            torch.save(state, tmp)
        else:
            raise UserError(f"{path}: choose a .safetensors or .pth file name")
    return path
