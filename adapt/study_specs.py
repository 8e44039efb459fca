"""Run specs of `adapt study` (`--runs r1,r8@rs,ra:r8@rmin=0,difffit,full`).

    rK          LoRA, uniform rank K
    ra:rK       rank-aware LoRA at the parameter count of uniform rank K
    ra:886k     rank-aware LoRA at a parameter budget (886k, 1.2m, 8%)
    ra:rK:S     ... scored by S (grad, fisher, activation, random)
    difffit     DiffFit: a learned scale per output channel (and shift) on every layer
    full        full fine-tuning

Any spec but full may end in options, each `@key=value` (or the shorthand `@rs`), which win over
the study's own settings for that run:

    @targets=attn+mlp   site families (conv, attn, mlp, linear; `+` joins them)
    @scaling=rs         alpha/sqrt(r) (rank-stabilised; `@rs` for short); scaling=r: alpha/r
    @lr=5e-3            start learning rate
    @rmin=0 @rmax=16    rank-aware: lowest / highest rank of a site
    @allocator=marginal rank-aware: paper or marginal
    @normalise=size     rank-aware: none or size
    @warmup=0           rank-aware: Adam steps of uniform LoRA before scoring (0: the paper's
                        scores at initialisation; default 100)
    @loss=l1:1+gan:0.1  weighted loss terms (adapt train --loss), `+` between terms (as
                        --loss takes too): `,` separates runs, so `r8@loss=l1:1,gan:0.1` is
                        refused
    @ema=0.999          moving average of the adapter weights (adapt train --ema)
    @ganstart=500       pixel-only iterations before the gan term (adapt train --gan-start)

Full fine-tuning takes the loss options only. A spec's folder is its text with ':' written as
'-' (`ra-r8@rmin=0-s0`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from adaptsr.adapt.allocation_settings import MAX_SCORE_WARMUP
from adaptsr.adapt.choices import ALLOCATORS, NORMALISATIONS, SCORES
from adaptsr.adapt.losses.spec import TERMS, loss_text, parse_loss
from adaptsr.adapt.sites import parse_targets
from adaptsr.core.errors import UserError

SCALING_NAMES = {"r": "alpha/r", "rs": "alpha/sqrt(r)", "sqrt": "alpha/sqrt(r)"}
# spec key -> the setting it sets (AllocationSettings' name for the rank-aware ones)
RANK_AWARE_KEYS = {"rmin": "r_min", "rmax": "r_max", "allocator": "allocator"}
RANK_AWARE_KEYS["normalise"] = "normalise"
RANK_AWARE_KEYS["warmup"] = "score_warmup"
RUN_KEYS = ("targets", "scaling", "lr")
LOSS_KEYS = {"loss": "loss", "ema": "ema", "ganstart": "gan_start"}  # spec key -> setting


@dataclass(frozen=True)
class RunSpec:
    text: str
    mode: str  # lora, difffit or full
    rank: int | None = None  # uniform rank
    budget: str | None = None  # rank-aware budget ("r8", "886k", "8%")
    score: str | None = None  # rank-aware site score
    options: tuple[tuple[str, object], ...] = ()  # (setting, value): targets, scaling, lr, ...

    @property
    def rank_aware(self) -> bool:
        return self.budget is not None

    @property
    def folder(self) -> str:
        return self.text.replace(":", "-")

    def option(self, name: str, default=None):
        return dict(self.options).get(name, default)


def _option(text: str, part: str, rank_aware: bool) -> tuple[str, object]:
    key, sep, value = part.partition("=")
    if not sep and key == "rs":
        return "scaling", SCALING_NAMES["rs"]
    where = f"run spec {text!r}"
    if not sep or not value:
        raise UserError(f"{where}: option {part!r} is not key=value (e.g. @targets=attn, @rs)")
    if key == "targets":
        return "targets", parse_targets(value)
    if key == "scaling":
        if value not in SCALING_NAMES:
            raise UserError(f"{where}: scaling {value!r} (choose r or rs)")
        return "scaling", SCALING_NAMES[value]
    if key == "lr":
        try:
            lr = float(value)
        except ValueError:
            lr = math.nan
        if not (lr > 0 and math.isfinite(lr)):
            raise UserError(f"{where}: lr {value!r} is not a positive number")
        return "lr", lr
    if key in LOSS_KEYS:
        return LOSS_KEYS[key], _loss_value(where, key, value)
    if key in RANK_AWARE_KEYS:
        if not rank_aware:
            raise UserError(f"{where}: @{key} applies to rank-aware (ra:...) runs")
        return RANK_AWARE_KEYS[key], _allocation_value(where, key, value)
    keys = ", ".join([*RUN_KEYS, *LOSS_KEYS, *RANK_AWARE_KEYS])
    raise UserError(f"{where}: unknown option {key!r} (choose {keys})")


def _whole(text: str) -> bool:
    """0-9 only: str.isdigit() also takes digits int() refuses (superscripts such as '²')."""
    return text.isascii() and text.isdigit()


def _loss_value(where: str, key: str, value: str):
    if key == "loss":
        if "," in value:
            raise UserError(f"{where}: join loss terms with '+' ({value.replace(',', '+')})")
        try:
            return loss_text(parse_loss(value))
        except UserError as e:
            raise UserError(f"{where}: {e}") from None
    if key == "ganstart":
        if not _whole(value):
            raise UserError(f"{where}: ganstart {value!r} is not a whole number")
        return int(value)
    try:
        ema = float(value)
    except ValueError:
        ema = math.nan
    if not 0 <= ema < 1:
        raise UserError(f"{where}: ema {value!r} must be in [0, 1) (e.g. 0.999)")
    return ema


def _allocation_value(where: str, key: str, value: str):
    if key in ("rmin", "rmax"):
        if not _whole(value):
            raise UserError(f"{where}: {key} {value!r} is not a whole number")
        return int(value)
    if key == "warmup":
        if not (value.isascii() and value.isdigit() and int(value) <= MAX_SCORE_WARMUP):
            bounds = f"[0, {MAX_SCORE_WARMUP}]"
            raise UserError(f"{where}: warmup {value!r} is not a whole number in {bounds}")
        return int(value)
    choices = ALLOCATORS if key == "allocator" else NORMALISATIONS
    if value not in choices:
        raise UserError(f"{where}: {key} {value!r} (choose {', '.join(choices)})")
    return value


def _base(text: str, t: str) -> RunSpec:
    if t == "full":
        return RunSpec(t, "full")
    if t == "difffit":
        return RunSpec(t, "difffit")
    if t.startswith("r") and _whole(t[1:]) and int(t[1:]) >= 1:
        return RunSpec(t, "lora", rank=int(t[1:]))
    parts = t.split(":")
    if parts[0] == "ra" and len(parts) in (2, 3) and parts[1]:
        score = parts[2] if len(parts) == 3 else None
        if score is not None and score not in SCORES:
            raise UserError(
                f"run spec {text!r}: unknown score {score!r} (choose {', '.join(SCORES)})"
            )
        return RunSpec(t, "lora", budget=parts[1], score=score)
    raise UserError(
        f"unknown run spec {text!r}: use rK (uniform rank), ra:rK or ra:886k (rank-aware), "
        "ra:rK:fisher (with a score), difffit or full, each optionally with @key=value options"
    )


def parse_spec(text: str) -> RunSpec:
    t = text.strip().lower()
    base, *suffixes = t.split("@")
    spec = _base(text, base)
    if not suffixes:
        return spec
    keys = ["scaling" if part == "rs" else part.partition("=")[0] for part in suffixes]
    twice = next((k for i, k in enumerate(keys) if k in keys[:i]), None)
    if twice is not None:  # one value per option: a second would silently win
        raise UserError(f"run spec {text!r}: @{twice} is given twice")
    options = dict(_option(text, part, spec.rank_aware) for part in suffixes)
    if spec.mode == "full" and set(options) - set(LOSS_KEYS.values()):
        raise UserError(f"run spec {text!r}: full fine-tuning takes the loss options only")
    if spec.mode == "difffit" and "scaling" in options:
        raise UserError(f"run spec {text!r}: scaling applies to LoRA runs")
    return RunSpec(t, spec.mode, spec.rank, spec.budget, spec.score, tuple(options.items()))


def parse_specs(text: str) -> list[RunSpec]:
    parts = [t for t in text.split(",") if t.strip()]
    for t in parts:
        if t.strip().lower().partition(":")[0] in TERMS:  # a loss spec's comma split the runs
            raise UserError(
                f"--runs: {t.strip()!r} is a loss term, not a run: ',' separates runs, so join "
                "a run's loss terms with '+' (r8@loss=l1:1+gan:0.1)"
            )
    specs = [parse_spec(t) for t in parts]
    if not specs:
        raise UserError("--runs is empty: give run specs such as r1,r8,ra:r8,full")
    seen = set()
    for s in specs:
        if s.text in seen:
            raise UserError(f"run spec {s.text!r} is given twice")
        seen.add(s.text)
    return specs
