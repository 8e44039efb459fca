"""`--loss` specs: weighted terms `NAME:WEIGHT,...` or `NAME:WEIGHT+...` (no torch here: the
config checks them)."""

from __future__ import annotations

import math
import re

from adaptsr.core.errors import UserError

TERMS = ("l1", "perceptual", "ldl", "ff", "gan", "dists")
DEFAULT_LOSS = "l1:1"
# Terms are joined by ',' or by '+' (a study's run specs use ',' between runs); only a '+'
# before a term's name joins: one before a digit is a sign (1e+3).
_JOIN = re.compile(r",|\+(?=\s*[A-Za-z])")
# A weight as written in decimal or scientific notation, ASCII digits only: float() alone also
# takes '1_0' (ten) and digits of other scripts.
_PLAIN_WEIGHT = re.compile(r"\+?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def parse_loss(spec: str) -> tuple[tuple[str, float], ...]:
    """`l1:1,perceptual:1,gan:0.1` (or `l1:1+perceptual:1+gan:0.1`) -> (("l1", 1.0),
    ("perceptual", 1.0), ("gan", 0.1)); a term without a weight weighs 1. Unknown or repeated
    terms and weights that are not positive finite numbers are one clear error."""
    if not isinstance(spec, str) or not spec.strip():
        raise UserError(f"--loss is empty: give terms like {DEFAULT_LOSS},perceptual:1")
    terms: dict[str, float] = {}
    for part in _JOIN.split(spec):
        name, sep, value = part.strip().partition(":")
        name = name.strip().lower()
        if name not in TERMS:
            raise UserError(f"--loss: unknown term {name!r} (choose from {', '.join(TERMS)})")
        if name in terms:
            raise UserError(f"--loss: {name} is given twice")
        try:
            weight = float(value) if sep else 1.0
        except ValueError:
            raise UserError(f"--loss: the weight of {name} is not a number ({value!r})") from None
        if not (weight > 0 and math.isfinite(weight)):
            raise UserError(f"--loss: the weight of {name} must be a positive number, got {value}")
        if sep and not _PLAIN_WEIGHT.fullmatch(value.strip()):
            raise UserError(
                f"--loss: the weight of {name} is not a plain number ({value!r}): write digits "
                "0-9 with an optional '.' and exponent (0.1, 1e-3)"
            )
        terms[name] = weight
    return tuple(terms.items())


def loss_text(terms: tuple[tuple[str, float], ...]) -> str:
    """The canonical spelling of parsed terms (as config.json keeps it)."""
    return ",".join(f"{name}:{weight:g}" for name, weight in terms)
