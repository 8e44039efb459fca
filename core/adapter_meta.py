"""AdapterMeta: the metadata of an adapter file (no torch). Safetensors keeps string values
only, so every value is written as text and checked when read back, refused in one line
naming the file and the key.

An adapter file is one of two kinds (its `mode` key):
- lora: `ranks` (site -> rank), `alpha` and the `scaling` rule of the updates s * B A;
- difffit: a learned scale per output channel (and a shift where the layer has a bias) on the
  `layers` listed; `ranks` is empty.
Both record the site families they were placed on (`targets`). Files written before `mode`,
`targets` and `layers` existed are LoRA files on every family.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adaptsr.core.errors import UserError

ADAPTER_FORMAT = "adaptsr-lora-1"  # an adapter file's version, in its `format` key
SCALING_RULE = "alpha/r"
RANK_STABILISED = "alpha/sqrt(r)"  # rsLoRA
SCALINGS = (SCALING_RULE, RANK_STABILISED)  # the one list of scaling rules this adaptsr applies
ADAPTER_MODES = ("lora", "difffit")
REQUIRED_KEYS = ("ranks", "alpha", "scaling", "arch", "scale", "base_fingerprint")


@dataclass(frozen=True)
class AdapterMeta:
    """What an adapter file records besides its tensors: enough to reload and check them."""

    ranks: dict[str, int]  # site -> rank (sites without an adapter absent; {} for difffit)
    alpha: float
    arch: str  # the base model's architecture ("" when unknown)
    scale: int | None  # the base model's upscaling factor
    base_fingerprint: str  # adaptsr.adapt.lora.base_fingerprint of the base weights
    adaptsr_version: str
    scaling: str = SCALING_RULE
    mode: str = "lora"  # or difffit
    targets: str = "all"  # site families (adaptsr.adapt.sites.parse_targets spelling)
    layers: tuple[str, ...] = ()  # difffit: the module paths carrying a scale and shift
    # what the training LR was made with: a preset name, or a degradation file's settings as
    # a JSON table (adapt/degradation_file.py); "" when not recorded (pairs, older files)
    degradation: str = ""

    def rank_summary(self) -> dict:
        """Sites, min/max/mean/total rank and alpha (a merged export's `rank_summary`)."""
        r = list(self.ranks.values())
        return {
            "sites": len(r),
            "min": min(r) if r else 0,
            "max": max(r) if r else 0,
            "mean": round(sum(r) / len(r), 3) if r else 0.0,
            "total": int(sum(r)),
            "alpha": self.alpha,
        }

    def to_json(self) -> dict[str, str]:
        """The safetensors metadata: every value a string (`format` is the version)."""
        data = {
            "format": ADAPTER_FORMAT,
            "mode": self.mode,
            "ranks": json.dumps(self.ranks, sort_keys=True),
            "alpha": repr(self.alpha),
            "scaling": self.scaling,
            "targets": self.targets,
            "arch": self.arch,
            "scale": "" if self.scale is None else str(self.scale),
            "base_fingerprint": self.base_fingerprint,
            "adaptsr_version": self.adaptsr_version,
        }
        if self.mode == "difffit":
            data["layers"] = json.dumps(list(self.layers))
        if self.degradation:
            data["degradation"] = self.degradation
        return data

    @classmethod
    def from_json(cls, data: Any, where: str | Path) -> AdapterMeta:
        if not isinstance(data, dict) or data.get("format") != ADAPTER_FORMAT:
            raise UserError(
                f"{where} is not an adaptsr adapter file (no {ADAPTER_FORMAT} metadata)"
            )
        damaged = f"cannot read adapter {where}: damaged metadata"
        text = {}
        for key in REQUIRED_KEYS:
            if not isinstance(data.get(key), str):
                raise UserError(f"{damaged} (key {key!r} is missing)")
            text[key] = data[key]
        ranks = _json_key(text["ranks"], "ranks", damaged)
        if not isinstance(ranks, dict) or not all(type(r) is int for r in ranks.values()):
            raise UserError(f"{damaged} (key 'ranks' is not a map of site names to whole numbers)")
        try:
            alpha = float(text["alpha"])
        except ValueError:
            alpha = math.nan
        if not (alpha > 0 and math.isfinite(alpha)):
            raise UserError(f"{damaged} (key 'alpha' {text['alpha']} is not a positive number)")
        scale = text["scale"]
        if scale and not (scale.isascii() and scale.isdigit() and int(scale) > 0):
            raise UserError(f"{damaged} (key 'scale' {scale!r} is not a positive whole number)")
        if text["scaling"] not in SCALINGS:  # merged weights would be scaled by another rule
            raise UserError(
                f"cannot read adapter {where}: key 'scaling' is {text['scaling']!r}; this "
                f"adaptsr applies adapters scaled by {' or '.join(map(repr, SCALINGS))} only"
            )
        mode, targets, layers = _kind(data, where, damaged)
        if not isinstance(data.get("degradation", ""), str):
            raise UserError(f"{damaged} (key 'degradation' is not text)")
        if not _finite_json(data.get("degradation", "")):  # model cards carry it as JSON
            raise UserError(f"{damaged} (key 'degradation' holds NaN or infinite numbers)")
        return cls(
            ranks=ranks,
            alpha=alpha,
            arch=text["arch"],
            scale=int(scale) if scale else None,
            base_fingerprint=text["base_fingerprint"],
            adaptsr_version=str(data.get("adaptsr_version", "")),
            scaling=text["scaling"],
            mode=mode,
            targets=targets,
            layers=layers,
            degradation=data.get("degradation", ""),
        )


class _NotFinite(Exception):
    pass


def _finite_number(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotFinite
    return value


def _refuse(_constant: str):
    raise _NotFinite


def _finite_json(text: str) -> bool:
    """False when `text` is JSON holding NaN, Infinity or a number past float's range (a
    preset's name, or text that is not JSON, is fine)."""
    try:
        json.loads(text, parse_constant=_refuse, parse_float=_finite_number)
    except _NotFinite:
        return False
    except (ValueError, RecursionError):
        pass
    return True


def _json_key(text: str, key: str, damaged: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise UserError(f"{damaged} (key {key!r} is not JSON)") from None


def _kind(data: dict, where: str | Path, damaged: str) -> tuple[str, str, tuple[str, ...]]:
    """mode, targets and (difffit) layers; absent in files of earlier releases: lora, all."""
    mode, targets = data.get("mode", "lora"), data.get("targets", "all")
    if mode not in ADAPTER_MODES:
        raise UserError(
            f"cannot read adapter {where}: key 'mode' is {mode!r}; this adaptsr reads "
            f"{' or '.join(ADAPTER_MODES)} adapters"
        )
    if not isinstance(targets, str) or not targets:
        raise UserError(f"{damaged} (key 'targets' is not text)")
    if mode != "difffit":
        return mode, targets, ()
    if not isinstance(data.get("layers"), str):
        raise UserError(f"{damaged} (key 'layers' is missing)")
    layers = _json_key(data["layers"], "layers", damaged)
    if not isinstance(layers, list) or not layers or not all(isinstance(x, str) for x in layers):
        raise UserError(f"{damaged} (key 'layers' is not a list of module paths)")
    return mode, targets, tuple(layers)
