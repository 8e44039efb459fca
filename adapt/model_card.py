"""Model cards: what `adapt merge` and `adapt export onnx` write beside their output, in the
shape of OpenModelDB's model files (data/models/*.json in OpenModelDB/open-model-database), so
a merged model is shared as the community shares models.

The OpenModelDB fields are filled with what adaptsr knows: the architecture, scale, channels
and size tags of the model; the training iterations, batch, HR crop and dataset of the run the
adapter came from (its config.json and log.jsonl, when the adapter still sits in its run
folder); the base model as pretrainedModelG; and the file itself as a resource with its size
and sha256. What OpenModelDB has no field for (the adapters and their blend weights, ranks,
degradation, the ONNX export's zero-overhead verdict) goes under the `adaptsr` key. What only
the author knows (author, subject tags, images, download URLs) is left for them to add.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from spandrel import MAIN_REGISTRY, UnsupportedModelError
from torch import nn

from adaptsr.adapt.adapter_file import AdapterFile
from adaptsr.adapt.edsr import register as register_edsr
from adaptsr.adapt.models import BUILTIN_MODELS, PRETRAINED, model_info, random_weights
from adaptsr.adapt.releases import RELEASES
from adaptsr.core.artifacts import model_card_path, sha256_file
from adaptsr.core.contracts import ExportReport
from adaptsr.core.errors import UserError
from adaptsr.core.fileio import atomic_output, parse_json
from adaptsr.core.version import __version__

# spandrel's architecture id -> OpenModelDB's (data/architectures.json, read 2026-08). An
# architecture OpenModelDB does not list yet gets spandrel's id in lower case.
# fmt: off
OPENMODELDB_ARCHITECTURES = {
    "ATD": "atd", "Compact": "compact", "CRAFT": "craft", "DAT": "dat", "DCTLSA": "dctlsa",
    "DITN": "ditn", "DRCT": "drct", "EDSR": "edsr", "ESRGAN": "esrgan", "GRL": "grl",
    "HAT": "hat", "MoSR": "mosr", "OmniSR": "omnisr", "RCAN": "rcan", "RealCUGAN": "real-cugan",
    "RGT": "rgt", "SPAN": "span", "SRFormer": "srformer", "SwiftSRGAN": "swift-srgan",
    "SwinIR": "swinir",
}
# fmt: on
REAL_PLKSR = "realplksr"  # spandrel's PLKSR id covers PLKSR and RealPLKSR (another class)

# OpenModelDB's resource types, by file suffix
RESOURCE_TYPES = {
    ".safetensors": ("pytorch", "safetensors"),
    ".pth": ("pytorch", "pth"),
    ".pt": ("pytorch", "pth"),
    ".ckpt": ("pytorch", "pth"),
    ".onnx": ("onnx", "onnx"),
}


def openmodeldb_architecture(model: nn.Module) -> str:
    """OpenModelDB's architecture id for a model adaptsr loaded."""
    arch = model_info(model).arch
    if arch == "PLKSR":
        net = getattr(model, "net", model)  # a CalledModel wraps the architecture
        return REAL_PLKSR if type(net).__name__ == "RealPLKSR" else "plksr"
    return OPENMODELDB_ARCHITECTURES.get(arch, arch.lower())


def size_tags(model: nn.Module) -> tuple[str, ...]:
    """The parameter-size tags spandrel reads from the weights (["64nf", "23nb"] for ESRGAN):
    the convention OpenModelDB's `size` field follows; none for a model spandrel does not
    know (one built in hand and exported with `export_onnx`)."""
    register_edsr()
    state = {k: v.detach() for k, v in model.state_dict().items()}
    try:
        return tuple(MAIN_REGISTRY.load(state).tags)
    except UnsupportedModelError:
        return ()


@dataclass(frozen=True)
class Resource:
    """One file of the model, as OpenModelDB lists it (`urls` for the author to fill in)."""

    platform: str  # pytorch or onnx
    type: str  # safetensors, pth or onnx
    size: int  # bytes
    sha256: str
    urls: tuple[str, ...] = ()

    @classmethod
    def of_file(cls, path: str | os.PathLike, named: str | os.PathLike | None = None) -> Resource:
        """The resource of `path` (a file written under a temporary name: its type from the
        final name `named`)."""
        path = Path(path)
        suffix = Path(named or path).suffix.lower()
        if suffix not in RESOURCE_TYPES:
            raise UserError(f"{named or path}: no model card for a {suffix or 'suffixless'} file")
        platform, kind = RESOURCE_TYPES[suffix]
        return cls(platform, kind, path.stat().st_size, sha256_file(path))

    def to_json(self) -> dict:
        return {
            "platform": self.platform,
            "type": self.type,
            "size": self.size,
            "sha256": self.sha256,
            "urls": list(self.urls),
        }


@dataclass(frozen=True)
class Training:
    """What the run an adapter came from records (None where it records nothing)."""

    iterations: int | None = None
    batch_size: int | None = None
    hr_size: int | None = None
    dataset: str | None = None

    @classmethod
    def of_adapter(cls, adapter: str | os.PathLike) -> Training:
        """Read from the adapter's run folder: config.json for the settings, log.jsonl for the
        iteration the file holds (the best validation's for adapter-best). Nothing when the
        adapter no longer sits in its run folder."""
        adapter = Path(adapter)
        config_file = adapter.parent / "config.json"
        if not adapter.name.startswith("adapter") or not config_file.is_file():
            return cls()
        config = parse_json(config_file.read_text(), str(config_file))
        if not isinstance(config, dict):
            return cls()
        folders = config.get("data") if isinstance(config.get("data"), list) else []
        names = [Path(f).name for f in [*folders, config.get("hr_dir")] if f and isinstance(f, str)]
        return cls(
            iterations=_iteration_held(adapter),
            batch_size=_positive(config.get("batch")),
            hr_size=_positive(config.get("patch")),
            dataset=", ".join(names) or None,
        )

    @classmethod
    def from_card(cls, data: dict) -> Training:
        """Read back from a card's OpenModelDB fields."""
        return cls(
            iterations=_positive(data.get("trainingIterations")),
            batch_size=_positive(data.get("trainingBatchSize")),
            hr_size=_positive(data.get("trainingHRSize")),
            dataset=_text(data.get("dataset")),
        )


def _text(value) -> str | None:
    return value if isinstance(value, str) and value else None


def _positive(value) -> int | None:
    return value if type(value) is int and value > 0 else None


def _iteration_held(adapter: Path) -> int | None:
    """The iteration whose weights `adapter` holds, from the run's log: the last best
    validation for adapter-best, the end of the run for adapter (None when it has not ended)."""
    log = adapter.parent / "log.jsonl"
    if not log.is_file():
        return None
    best = adapter.stem.endswith("-best")
    held = None
    for line in log.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if not isinstance(record, dict):
            continue
        event = record.get("event")
        if (best and event == "val" and record.get("best") is True) or (
            not best and event in ("done", "interrupted")
        ):
            held = _positive(record.get("iter"))
    return held


@dataclass(frozen=True)
class AdapterUse:
    """One adapter folded into the weights, with its blend weight (1: as trained)."""

    file: str
    sha256: str
    weight: float
    mode: str  # lora or difffit
    scaling: str
    targets: str
    sites: int
    ranks: tuple[int, int, float, int]  # min, max, mean, total over its sites (0s: difffit)
    alpha: float
    degradation: str  # a preset name or the settings as a JSON table ("" unrecorded)

    @classmethod
    def of(cls, adapter: AdapterFile, weight: float) -> AdapterUse:
        meta = adapter.meta
        r = list(meta.ranks.values())
        return cls(
            file=adapter.path.name,
            sha256=adapter.sha256,
            weight=float(weight),
            mode=meta.mode,
            scaling=meta.scaling,
            targets=meta.targets,
            sites=len(meta.ranks) or len(meta.layers),
            ranks=(min(r), max(r), round(sum(r) / len(r), 3), sum(r)) if r else (0, 0, 0.0, 0),
            alpha=meta.alpha,
            degradation=meta.degradation,
        )

    @classmethod
    def from_json(cls, data: dict) -> AdapterUse:
        """Read back from a card (KeyError, TypeError or ValueError when it is not one)."""
        r, degradation = data["ranks"], data["degradation"]
        return cls(
            file=str(data["file"]),
            sha256=str(data["sha256"]),
            weight=float(data["weight"]),
            mode=str(data["mode"]),
            scaling=str(data["scaling"]),
            targets=str(data["targets"]),
            sites=int(data["sites"]),
            ranks=(int(r["min"]), int(r["max"]), float(r["mean"]), int(r["total"])),
            alpha=float(r["alpha"]),
            degradation=json.dumps(degradation, sort_keys=True)
            if isinstance(degradation, dict)
            else str(degradation or ""),
        )

    def to_json(self) -> dict:
        low, high, mean, total = self.ranks
        return {
            "file": self.file,
            "sha256": self.sha256,
            "weight": self.weight,
            "mode": self.mode,
            "scaling": self.scaling,
            "targets": self.targets,
            "sites": self.sites,
            "ranks": {"min": low, "max": high, "mean": mean, "total": total, "alpha": self.alpha},
            "degradation": _degradation_json(self.degradation),
        }


def _degradation_json(text: str):
    """A preset's name as it is, a settings table as JSON (None when unrecorded)."""
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


@dataclass(frozen=True)
class OnnxFacts:
    """What the ONNX export checked: its precision and shape, and for a merged export the
    zero-overhead verdict against the base export."""

    precision: str
    opset: int
    dynamic: bool
    tile: tuple[int, int] | None
    parity_max_abs: float
    zero_overhead: str | None  # PASS or FAIL (graph identity); None for a base export
    latency_ratio: float | None  # merged/base, measured beside the proof

    @classmethod
    def of_report(cls, report: ExportReport) -> OnnxFacts:
        z, spec = report.zero_overhead, report.spec
        return cls(
            precision=report.metadata.get("precision", "fp32"),
            opset=spec.opset,
            dynamic=spec.dynamic,
            tile=(spec.tile[0], spec.tile[1]) if spec.tile else None,
            parity_max_abs=report.parity.max_abs,
            zero_overhead=None if z is None else ("PASS" if z.structure.identical else "FAIL"),
            latency_ratio=None if z is None else z.latency.ratio,
        )

    def to_json(self) -> dict:
        return {
            "precision": self.precision,
            "opset": self.opset,
            "dynamic": self.dynamic,
            "tile": list(self.tile) if self.tile else None,
            "parity_max_abs": self.parity_max_abs,
            "zero_overhead": self.zero_overhead,
            "latency_ratio": self.latency_ratio,
        }


@dataclass(frozen=True)
class AdaptsrFacts:
    """The card's `adaptsr` key: what OpenModelDB has no field for."""

    version: str
    base: str  # the base model as given (built-in name or file name)
    base_weights: str  # official, pretrained, random or file
    adapters: tuple[AdapterUse, ...] = ()
    onnx: OnnxFacts | None = None

    def to_json(self) -> dict:
        data = {
            "version": self.version,
            "base": self.base,
            "base_weights": self.base_weights,
            "adapters": [a.to_json() for a in self.adapters],
        }
        if self.onnx is not None:
            data["onnx"] = self.onnx.to_json()
        return data


@dataclass(frozen=True)
class Provenance:
    """Where the weights come from: the base, what its weights are, the adapters folded in and
    the run they were trained in."""

    base: str  # a built-in name, or a checkpoint's file name
    base_weights: str  # official, pretrained, random or file
    pretrained: str | None  # pretrainedModelG: the base's OpenModelDB id or name
    licence: str | None
    adapters: tuple[AdapterUse, ...] = ()
    training: Training = field(default_factory=Training)

    @classmethod
    def of(cls, base: str, blend: Sequence[tuple[AdapterFile, float]]) -> Provenance:
        """The base `base` with `blend` (adapter, weight) folded in."""
        weights, pretrained, licence = base_facts(base)
        name = pretrained if weights == "file" and pretrained else base  # a file by its name
        adapters = tuple(AdapterUse.of(a, w) for a, w in blend)
        training = Training.of_adapter(blend[0][0].path) if len(blend) == 1 else Training()
        return cls(name, weights, pretrained, licence, adapters, training)

    @classmethod
    def beside(cls, checkpoint: str | os.PathLike) -> Provenance | None:
        """What the card `adapt merge` wrote beside `checkpoint` says, while it still describes
        that file (a resource with its sha256); None otherwise (an export of a merged
        checkpoint keeps where its weights came from)."""
        path = Path(checkpoint)
        try:
            data = parse_json(model_card_path(path).read_text(), "", finite=True)
            sha256 = sha256_file(path)
            if not any(r["sha256"] == sha256 for r in data["resources"]):
                return None
            facts = data["adaptsr"]
            adapters = tuple(AdapterUse.from_json(a) for a in facts["adapters"])
            return cls(
                str(facts["base"]), str(facts["base_weights"]), _text(data.get("pretrainedModelG")),
                _text(data.get("license")), adapters, Training.from_card(data),
            )  # fmt: skip
        except (OSError, KeyError, TypeError, ValueError, AttributeError, UserError):
            return None  # no card, or not one adaptsr wrote (NaN: not JSON for its readers)


@dataclass(frozen=True)
class ModelCard:
    """An OpenModelDB model file, as far as adaptsr knows its fields (None: left out)."""

    name: str
    architecture: str
    scale: int
    input_channels: int
    output_channels: int
    date: str  # yyyy-mm-dd
    description: str
    resources: tuple[Resource, ...]
    adaptsr: AdaptsrFacts
    license: str | None = None
    tags: tuple[str, ...] = ()
    size: tuple[str, ...] = ()
    training: Training = field(default_factory=Training)
    pretrained_model_g: str | None = None

    def to_json(self) -> dict:
        t = self.training
        data = {
            "name": self.name,
            "license": self.license,
            "tags": list(self.tags),
            "description": self.description,
            "date": self.date,
            "architecture": self.architecture,
            "size": list(self.size) or None,
            "scale": self.scale,
            "inputChannels": self.input_channels,
            "outputChannels": self.output_channels,
            "resources": [r.to_json() for r in self.resources],
            "trainingIterations": t.iterations,
            "trainingBatchSize": t.batch_size,
            "trainingHRSize": t.hr_size,
            "dataset": t.dataset,
            "pretrainedModelG": self.pretrained_model_g,
            "images": [],
        }
        optional = ("license", "size", "trainingIterations", "trainingBatchSize")
        optional += ("trainingHRSize", "dataset", "pretrainedModelG")
        data = {k: v for k, v in data.items() if v is not None or k not in optional}
        return {**data, "adaptsr": self.adaptsr.to_json()}

    def text(self) -> str:
        return json.dumps(self.to_json(), indent=4) + "\n"


# ---------------------------------------------------------------------------------------------
# building and writing cards


def base_facts(base: str) -> tuple[str, str | None, str | None]:
    """(what the base weights are, their OpenModelDB id or name, their licence)."""
    if random_weights(base):
        return "random", None, None  # a configuration with random weights: no pretrained model
    if base in BUILTIN_MODELS:  # a configuration whose official weights `adapt fetch` fetched
        release = RELEASES[base]
        return "official", Path(release.source).stem, release.licence
    if base in PRETRAINED:
        return "pretrained", base, None
    return "file", Path(base).name, None


def _tags(adapters: Sequence[AdapterUse]) -> tuple[str, ...]:
    """OpenModelDB's `restoration` when an adapter learnt to undo synthetic degradations
    (blur, noise, compression: anything but plain bicubic); subject tags are the author's."""
    kinds = {a.degradation for a in adapters}
    return ("restoration",) if kinds - {"", "bicubic"} else ()


def _description(model: nn.Module, base: str, adapters: Sequence[AdapterUse]) -> str:
    info = model_info(model)
    if not adapters:
        return f"{info.arch} x{info.scale} ({base}), exported by adaptsr {__version__}."
    how = " + ".join(
        f"{a.weight:g} x {a.file} ({a.mode}, {a.sites} sites"
        + (f", rank {a.ranks[0]}-{a.ranks[1]})" if a.ranks[1] else ")")
        for a in adapters
    )
    return (
        f"{info.arch} x{info.scale}: {base} with {how} merged into its weights by adaptsr "
        f"{__version__}; it runs as the base architecture does, at no extra cost."
    )


def make_card(
    model: nn.Module,
    base: str,
    blend: Sequence[tuple[AdapterFile, float]],
    resource: Resource,
    name: str,
    onnx: OnnxFacts | None = None,
) -> ModelCard:
    """The card of `model` (the base with `blend` folded in) written as `resource`; a merged
    checkpoint exported without adapters keeps the provenance its own card records."""
    info = model_info(model)
    origin = (None if blend else Provenance.beside(base)) or Provenance.of(base, blend)
    return ModelCard(
        name=name,
        architecture=openmodeldb_architecture(model),
        scale=info.scale,
        input_channels=info.in_channels,
        output_channels=info.out_channels,
        date=datetime.datetime.now(datetime.timezone.utc).date().isoformat(),
        description=_description(model, origin.base, origin.adapters),
        resources=(resource,),
        adaptsr=AdaptsrFacts(__version__, origin.base, origin.base_weights, origin.adapters, onnx),
        license=origin.licence,
        tags=_tags(origin.adapters),
        size=size_tags(model),
        training=origin.training,
        pretrained_model_g=origin.pretrained,
    )


def write_card(card: ModelCard, path: str | os.PathLike, force: bool = False) -> Path:
    """Write `card` to `path` atomically (an existing card is replaced only with force)."""
    with atomic_output(path, force=force) as tmp:
        tmp.write_text(card.text())
    return Path(path)


def export_card(
    model: nn.Module,
    base: str | None,
    adapter: AdapterFile | None,
    strength: float,
    onnx_file: Path,
    out: Path,
    report: ExportReport,
) -> ModelCard:
    """The card of an ONNX export (`onnx_file`, published as `out`) of `model`: the base
    `base` (None: the model's own name), merged with `adapter` at `strength` when given."""
    blend = [(adapter, strength)] if adapter is not None else []
    resource = Resource.of_file(onnx_file, named=out)
    base = base if base is not None else model_info(model).name
    return make_card(model, base, blend, resource, out.stem, OnnxFacts.of_report(report))
