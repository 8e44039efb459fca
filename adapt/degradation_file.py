"""Degradation settings as a file a user can write, copy and share: TOML or JSON with the keys the
Real-ESRGAN ecosystem uses (traiNNer-redux, neosr and BasicSR spell them the same way) and the
`camera` preset's keys, under a `type` key. docs/degradations.md lists every key.

    settings_of("camera")            # a preset: BicubicConfig, RealESRGANConfig or CameraConfig
    settings_of("my_camera.toml")    # a file, checked key by key
    settings_of({"type": "camera", "blur_sigma": 1.2})   # a table (a run's config.json)
    to_toml(settings)                # the file of these settings (`adapt degrade --show`)

The key tables below are the one place each key is spelled. A realesrgan file's missing keys
take the published defaults; a camera file lists the steps the camera takes (a missing
blur_sigma or noise_sigma is 0, a missing jpeg_quality means no JPEG). Unknown keys, wrong
types and impossible values are refused in one line naming the key.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from adaptsr.adapt.blur import KERNEL_TYPES, PAD_TO
from adaptsr.adapt.choices import DEGRADATIONS
from adaptsr.adapt.degradation_params import (
    BICUBIC,
    CAMERA,
    REALESRGAN,
    BicubicConfig,
    CameraConfig,
    RealESRGANConfig,
)
from adaptsr.core.errors import UserError
from adaptsr.core.fileio import check_readable, loads_toml

Settings = BicubicConfig | RealESRGANConfig | CameraConfig
PRESETS: dict[str, Settings] = {"bicubic": BICUBIC, "realesrgan": REALESRGAN, "camera": CAMERA}
TYPES = {BicubicConfig: "bicubic", RealESRGANConfig: "realesrgan", CameraConfig: "camera"}
DEFAULT_TYPE = "camera"  # `adapt calibrate` writes one camera's file
MIXED = "mixed"  # adapter metadata of a run whose --data sources have their own settings
NOTES = "calibration"  # a table of notes (how the settings were found): kept out of the settings
BLUR_TYPES = KERNEL_TYPES[:6]  # kernel_list's names; sinc has its own probability (sinc_prob)

# file key (stage 1; stage 2 adds "2") -> (StageConfig field, kind of value)
STAGE_KEYS = {
    "kernel_prob": ("kernel_prob", "kernel_prob"),
    "sinc_prob": ("sinc_prob", "prob"),
    "blur_sigma": ("blur_sigma", "sigma_range"),
    "betag_range": ("betag", "beta_range"),
    "betap_range": ("betap", "beta_range"),
    "resize_prob": ("resize_prob", "resize_prob"),
    "resize_range": ("resize_range", "resize_range"),
    "gaussian_noise_prob": ("gaussian_noise_prob", "prob"),
    "noise_range": ("noise_sigma", "level_range"),
    "poisson_scale_range": ("poisson_scale", "level_range"),
    "gray_noise_prob": ("gray_noise_prob", "prob"),
    "jpeg_range": ("jpeg_quality", "jpeg_range"),
}
# file key -> RealESRGANConfig field, for the keys outside the stages
PIPELINE_KEYS = {
    "kernel_range": "kernel_sizes",
    "second_blur_prob": "second_blur_prob",
    "final_sinc_prob": "final_sinc_prob",
    "final_resize_first_prob": "resize_first_prob",
}
CAMERA_KEYS = ("blur_sigma", "noise_sigma", "jpeg_quality")


def settings_of(value: str | os.PathLike | Mapping | Settings, where: str = "--degradation"):
    """The settings named, written in a file or given as a table (see the module doc)."""
    if isinstance(value, (BicubicConfig, RealESRGANConfig, CameraConfig)):
        return value
    if isinstance(value, Mapping):
        return from_table(value, where)
    if str(value) in PRESETS:
        return PRESETS[str(value)]
    path = Path(value)
    if path.suffix.lower() not in (".toml", ".json") and not path.exists():
        raise UserError(
            f"{where}: unknown degradation {str(value)!r} (choose {', '.join(DEGRADATIONS)}, "
            "or give a .toml or .json file)"
        )
    return read_file(path)


def read_file(path: str | os.PathLike) -> Settings:
    path = check_readable(path, "degradation file")
    if path.suffix.lower() not in (".toml", ".json"):
        raise UserError(f"{path}: a degradation file is .toml or .json")
    try:
        text = path.read_bytes().decode()
        table = loads_toml(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise UserError(f"cannot parse degradation file {path}: {e}") from e
    except OSError as e:
        raise UserError(f"cannot read degradation file {path}: {e.strerror or e}") from e
    if not isinstance(table, dict):
        raise UserError(f"degradation file {path} must hold a table of settings")
    return from_table(table, str(path))


def recorded(value) -> str | dict:
    """What a run records: a preset's name as it is, other settings as their table."""
    if isinstance(value, str) and value in PRESETS:
        return value
    return to_table(settings_of(value))


def metadata_text(value, sources: Mapping[str, str | dict] | None = None) -> str:
    """`recorded` as one line of text (adapter metadata): the name, or the table as JSON.
    With `sources` (--data sources with a degradation of their own: spec -> its record, as
    `recorded` gives it) the JSON table {"type": "mixed", "default": ..., "sources": {...}}."""
    record = recorded(value)
    if sources:
        return json.dumps({"type": MIXED, "default": record, "sources": dict(sources)})
    return record if isinstance(record, str) else json.dumps(record)


def describe(value) -> str:
    """A short label: the preset's name, or the type of settings a file holds."""
    settings = settings_of(value)
    for name, preset in PRESETS.items():
        if settings == preset:
            return name
    return f"{TYPES[type(settings)]} (own settings)"


# ---------------------------------------------------------------------------------------------
# table -> settings


def from_table(table: Mapping, where: str) -> Settings:
    table = {k: v for k, v in table.items() if k != NOTES or not isinstance(v, Mapping)}
    kind = table.pop("type", DEFAULT_TYPE)
    if kind not in DEGRADATIONS:
        raise UserError(f"{where}: key 'type' is {kind!r}; choose {', '.join(DEGRADATIONS)}")
    if kind == "bicubic":
        _refuse_unknown(table, (), where, kind)
        return BICUBIC
    if kind == "camera":
        return _camera(table, where)
    return _realesrgan(table, where)


def _refuse_unknown(table: Mapping, known, where: str, kind: str) -> None:
    for key in table:
        if key not in known:
            hint = "" if "type" in table else f' (the default type; set type = "{kind}"?)'
            raise UserError(f"{where}: unknown key {key!r} for type {kind!r}{hint}")


def _camera(table: Mapping, where: str) -> CameraConfig:
    _refuse_unknown(table, CAMERA_KEYS, where, "camera")
    blur = _number(table.get("blur_sigma", 0.0), "blur_sigma", where, lo=0.0)
    noise = _number(table.get("noise_sigma", 0.0), "noise_sigma", where, lo=0.0)
    quality = table.get("jpeg_quality")
    if quality is not None:
        quality = _jpeg(quality, "jpeg_quality", where)
    return CameraConfig(blur_sigma=blur, noise_sigma=noise, jpeg_quality=quality)


def _realesrgan(table: Mapping, where: str) -> RealESRGANConfig:
    known = [k + s for k in STAGE_KEYS for s in ("", "2")]
    known += ["kernel_list", "kernel_list2", *PIPELINE_KEYS]
    _refuse_unknown(table, known, where, "realesrgan")
    stages = []
    for suffix, stage in (("", REALESRGAN.stage1), ("2", REALESRGAN.stage2)):
        values = {}
        for key, (name, kind) in STAGE_KEYS.items():
            if key + suffix in table:
                values[name] = _value(table, key + suffix, kind, suffix, where)
        stages.append(replace(stage, **values))
    values = {}
    for key, name in PIPELINE_KEYS.items():
        if key in table:
            kind = "kernel_range" if key == "kernel_range" else "prob"
            values[name] = _value(table, key, kind, "", where)
    return replace(REALESRGAN, stage1=stages[0], stage2=stages[1], **values)


def _value(table: Mapping, key: str, kind: str, suffix: str, where: str):
    value = table[key]
    if kind == "prob":
        return _number(value, key, where, lo=0.0, hi=1.0)
    if kind == "kernel_prob":
        return _kernel_prob(value, table.get("kernel_list" + suffix, list(BLUR_TYPES)), key, where)
    if kind == "resize_prob":
        return _probs(value, 3, key, where)
    if kind == "jpeg_range":
        lo, hi = _pair(value, key, where, integers=True)
        return (_jpeg(lo, key, where), _jpeg(hi, key, where))
    if kind == "kernel_range":
        lo, hi = _pair(value, key, where, integers=True)
        if lo % 2 == 0 or hi % 2 == 0 or lo < 3 or hi > PAD_TO:
            raise UserError(f"{where}: key {key!r} holds odd kernel sizes from 3 to {PAD_TO}")
        return tuple(range(lo, hi + 1, 2))
    lo, hi = _pair(value, key, where)
    bounds = {  # (lowest allowed lo, what must lie in the range, rule in words)
        "sigma_range": (math.ulp(0.0), None, "sigmas above 0"),
        "beta_range": (math.ulp(0.0), 1.0, "a range above 0 around 1 (half the draws each side)"),
        "resize_range": (math.ulp(0.0), 1.0, "a down scale up to 1 and an up scale from 1"),
        "level_range": (0.0, None, "levels of 0 or more"),
    }[kind]
    low, inside, rule = bounds
    if lo < low or (inside is not None and not lo <= inside <= hi):
        raise UserError(f"{where}: key {key!r} is [{lo:g}, {hi:g}]; it needs {rule}")
    return (lo, hi)


def _kernel_prob(value, names, key: str, where: str) -> tuple[float, ...]:
    list_key = "kernel_list" + key.removeprefix("kernel_prob")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise UserError(f"{where}: key {list_key!r} must be a list of kernel names")
    for name in names:
        if name not in BLUR_TYPES:
            extra = " (sinc has its own sinc_prob)" if name == "sinc" else ""
            raise UserError(
                f"{where}: key {list_key!r} names {name!r}{extra}; choose from "
                f"{', '.join(BLUR_TYPES)}"
            )
    if len(set(names)) != len(names):
        raise UserError(f"{where}: key {list_key!r} names a kernel twice")
    probs = _probs(value, len(names), key, where)
    return tuple(probs[names.index(n)] if n in names else 0.0 for n in BLUR_TYPES)


def _probs(value, n: int, key: str, where: str) -> tuple[float, ...]:
    if not isinstance(value, list) or len(value) != n:
        raise UserError(f"{where}: key {key!r} must be a list of {n} probabilities")
    probs = tuple(_number(v, key, where, lo=0.0, hi=1.0) for v in value)
    if abs(sum(probs) - 1) > 1e-6:
        raise UserError(f"{where}: key {key!r} must sum to 1, sums to {sum(probs):g}")
    return probs


def _pair(value, key: str, where: str, integers: bool = False) -> tuple:
    if not isinstance(value, list) or len(value) != 2:
        raise UserError(f"{where}: key {key!r} must be a [low, high] pair")
    lo, hi = (_number(v, key, where, integer=integers) for v in value)
    if lo > hi:
        raise UserError(f"{where}: key {key!r} is [{lo:g}, {hi:g}]: low above high")
    return lo, hi


def _number(value, key: str, where: str, lo=None, hi=None, integer: bool = False):
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        what = "a whole number" if integer else "a number"
        raise UserError(f"{where}: key {key!r} must be {what}, got {value!r}")
    if not math.isfinite(value):
        raise UserError(f"{where}: key {key!r} must be finite, got {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f"from {lo:g}" + (f" to {hi:g}" if hi is not None else "")
        raise UserError(f"{where}: key {key!r} is {value!r}; it must be {bounds}")
    return value if integer else float(value)


def _jpeg(value, key: str, where: str) -> int:
    return _number(value, key, where, lo=1, hi=100, integer=True)


# ---------------------------------------------------------------------------------------------
# settings -> table and file


def to_table(settings: Settings) -> dict:
    """The file's keys for `settings` (every key, so the file says everything it does)."""
    kind = TYPES[type(settings)]
    table: dict = {"type": kind}
    if isinstance(settings, CameraConfig):
        for key in CAMERA_KEYS:
            if getattr(settings, key) is not None:
                table[key] = getattr(settings, key)
        return table
    if isinstance(settings, BicubicConfig):
        return table
    for suffix, stage in (("", settings.stage1), ("2", settings.stage2)):
        table["kernel_list" + suffix] = list(BLUR_TYPES)
        for key, (name, _) in STAGE_KEYS.items():
            value = getattr(stage, name)
            table[key + suffix] = list(value) if isinstance(value, tuple) else value
    for key, name in PIPELINE_KEYS.items():
        value = getattr(settings, name)
        table[key] = [min(value), max(value)] if key == "kernel_range" else value
    sizes = settings.kernel_sizes
    if sizes != tuple(range(min(sizes), max(sizes) + 1, 2)):  # kernel_range cannot say it
        raise UserError(f"kernel sizes {sizes} are not every odd size of a range")
    return table


HEADER = {
    "bicubic": "MATLAB bicubic downsampling by the scale (antialiased), nothing else.",
    "realesrgan": "Real-ESRGAN's second-order pipeline (keys as in traiNNer-redux and neosr; "
    "a missing key takes the published default).",
    "camera": "One fixed camera: Gaussian blur in HR pixels before the MATLAB bicubic "
    "downsample, Gaussian noise in 8-bit levels on the LR image, JPEG (libjpeg quality, 4:2:0). "
    "A missing key: that step is off.",
}


def to_toml(settings: Settings) -> str:
    """The settings as a TOML file `--degradation` reads back to equal settings."""
    table = to_table(settings)
    lines = [f"# {HEADER[table['type']]}", "# Keys: docs/degradations.md."]
    lines += [f"{key} = {_toml_value(value)}" for key, value in table.items()]
    return "\n".join(lines) + "\n"


def _toml_value(value) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, (str, bool)):
        return json.dumps(value)  # a TOML basic string for the names used here; true, false
    return repr(value)
