"""How a rank-aware allocation scores the sites and shares a budget: one frozen dataclass that
`adapt allocate`, `adapt train --rank-aware` and `adapt study` (its ra:... runs) all take,
spelled the same on all three command lines (cli/commands/_options.py: allocation_options).

Torch-free: the command line reads its defaults to show them in --help.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from adaptsr.adapt.choices import (
    ALLOCATORS,
    DEFAULT_ALLOCATOR,
    DEFAULT_BATCH,
    DEFAULT_BATCHES,
    DEFAULT_NORMALISE,
    DEFAULT_PATCH,
    DEFAULT_R_MAX,
    DEFAULT_R_MIN,
    DEFAULT_SCORE,
    DEFAULT_SCORE_WARMUP,
    NORMALISATIONS,
    SCORES,
)
from adaptsr.core.errors import UserError

# upper bounds on sizes: far beyond any real run, low enough that nothing tries to build a
# plan of 10^12 crops before failing
LIMITS = {"score_batch": 2**16, "score_patch": 2**15, "score_batches": 2**20}
MAX_SCORE_WARMUP = 100_000  # Adam steps before scoring


@dataclass(frozen=True)
class AllocationSettings:
    budget: str | None = None  # parameters ("886k"), percent of the base ("8%") or "r8"
    score_batches: int = DEFAULT_BATCHES  # mini-batches the scores are averaged over
    score_batch: int = DEFAULT_BATCH  # crops per scoring batch
    score_patch: int = DEFAULT_PATCH  # HR crop size of the scoring batches
    score: str = DEFAULT_SCORE  # site importance: grad, fisher, activation, random
    normalise: str = DEFAULT_NORMALISE  # size: per-element scores
    allocator: str = DEFAULT_ALLOCATOR  # paper or marginal
    r_min: int = DEFAULT_R_MIN
    r_max: int = DEFAULT_R_MAX
    # Adam steps of uniform LoRA before scoring (0: the paper's scores at initialisation);
    # None: the default for the score (score_warmup_steps)
    score_warmup: int | None = None

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_values(cls, values: dict) -> AllocationSettings:
        """The settings among `values` (unknown keys and None values ignored: defaults)."""
        known = {k: v for k, v in values.items() if k in cls.names() and v is not None}
        return cls(**known)

    def changed(self) -> list[str]:
        """The names of the settings that differ from the defaults."""
        default = AllocationSettings()
        return [n for n in self.names() if getattr(self, n) != getattr(default, n)]

    def checked(self) -> AllocationSettings:
        """Every value checked (the budget is parsed against a model, in adapt/allocate.py)."""
        for name in ("score_batches", "score_batch", "score_patch"):
            value = getattr(self, name)
            if value < 1:
                raise UserError(f"--{_flag(name)} must be at least 1, got {value}")
            if value > LIMITS[name]:
                raise UserError(f"--{_flag(name)} {value} is absurd (at most {LIMITS[name]})")
        for name, value, choices in (
            ("score", self.score, SCORES),
            ("normalise", self.normalise, NORMALISATIONS),
            ("allocator", self.allocator, ALLOCATORS),
        ):
            if value not in choices:
                raise UserError(f"unknown {name} {value!r} (choose {', '.join(choices)})")
        if self.r_min < 0:
            raise UserError(f"--r-min must be >= 0, got {self.r_min}")
        if self.r_max < 1:
            raise UserError(f"--r-max must be at least 1, got {self.r_max}")
        if self.r_min > self.r_max:
            raise UserError(f"--r-min {self.r_min} is above --r-max {self.r_max}")
        check_score_warmup(self.score_warmup, self.score)
        return replace(self)

    def warmup_steps(self) -> int:
        """The warm-up steps these settings mean (the default resolved for the score)."""
        return score_warmup_steps(self.score_warmup, self.score)


def score_warmup_steps(steps: int | None, score: str) -> int:
    """`steps` checked, or for None the default: DEFAULT_SCORE_WARMUP, none for random scores."""
    if steps is None:
        return 0 if score == "random" else DEFAULT_SCORE_WARMUP
    check_score_warmup(steps, score)
    return steps


def check_score_warmup(steps: int | None, score: str) -> None:
    """--score-warmup: a whole number of steps in [0, MAX_SCORE_WARMUP], and only for scores
    that read the model's gradients or activations (random scores read neither); None: the
    default."""
    if steps is None:
        return
    if isinstance(steps, bool) or not isinstance(steps, int):
        raise UserError(f"--score-warmup must be a whole number, got {steps!r}")
    if not 0 <= steps <= MAX_SCORE_WARMUP:
        raise UserError(f"--score-warmup must be in [0, {MAX_SCORE_WARMUP}], got {steps}")
    if steps and score == "random":
        raise UserError("--score-warmup does not apply to random scores (they read no model)")


def _flag(name: str) -> str:
    return name.replace("_", "-")
