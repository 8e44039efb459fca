"""The allocation settings are one thing: the same flags, types, defaults and help in `adapt
allocate`, `adapt train` and `adapt study`, and one AllocationSettings behind them."""

import click
import pytest
from click.testing import CliRunner

from adaptsr.adapt.allocation_settings import AllocationSettings
from adaptsr.adapt.choices import (
    DEFAULT_BATCHES,
    DEFAULT_PATCH,
    DEFAULT_R_MAX,
    DEFAULT_SCORE_WARMUP,
)
from adaptsr.cli.commands._options import allocation_settings
from adaptsr.cli.commands.allocate import allocate
from adaptsr.cli.commands.study import study
from adaptsr.cli.commands.train import train
from adaptsr.core.errors import UserError

COMMANDS = {"allocate": allocate, "train": train, "study": study}
SHARED = [n for n in AllocationSettings.names() if n != "budget"]  # study's budget: its specs


def _params(command: click.Command) -> dict:
    return {p.name: p for p in command.params if p.name in SHARED}


def test_the_three_commands_take_the_same_allocation_flags_and_defaults():
    described = {}
    for name, command in COMMANDS.items():
        params = _params(command)
        assert sorted(params) == sorted(SHARED), name
        described[name] = {
            n: (tuple(p.opts), repr(p.type), p.default, p.help, p.hidden) for n, p in params.items()
        }
        help_text = CliRunner().invoke(command, ["--help"], terminal_width=200).output
        for n in SHARED:
            assert f"--{n.replace('_', '-')}" in help_text, (name, n)
        assert f"[default: {DEFAULT_BATCHES}]" in help_text and "\n  --batches " not in help_text
    assert described["allocate"] == described["train"] == described["study"]
    for command in COMMANDS.values():  # not given: None, the settings' default
        ctx = command.make_context(command.name, [], resilient_parsing=True)
        assert all(ctx.params[n] is None for n in SHARED)


def test_unset_options_are_the_settings_defaults_and_old_spellings_still_work():
    def parse(command, args):
        ctx = command.make_context(command.name, args, resilient_parsing=True)
        return dict(ctx.params)

    base = ["--model", "m", "--budget", "r2", "--out", "r.json"]
    assert allocation_settings(parse(allocate, base), budget="r2") == AllocationSettings(
        budget="r2"
    )
    old = allocation_settings(parse(allocate, [*base, "--batches", "3", "--patch", "32"]))
    assert (old.score_batches, old.score_patch, old.score_batch) == (3, 32, 8)
    both = parse(allocate, [*base, "--batches", "3", "--score-batches", "5"])
    assert allocation_settings(both).score_batches == 5  # the canonical spelling wins
    given = parse(train, ["--out", "run", "--r-max", "4"])
    assert allocation_settings(given) == AllocationSettings(r_max=4)
    assert given["batch"] is None  # train's own --batch is the training batch, untouched


def test_settings_are_checked_with_the_flag_names():
    assert AllocationSettings().checked() == AllocationSettings()
    for kw, message in [
        (dict(r_min=5, r_max=4), "--r-min 5 is above --r-max 4"),
        (dict(score_batches=0), "--score-batches must be at least 1"),
        (dict(score_patch=2**16), "--score-patch 65536 is absurd"),
        (dict(score="magic"), "unknown score 'magic'"),
        (dict(r_max=0), "--r-max must be at least 1"),
    ]:
        with pytest.raises(UserError, match=message):
            AllocationSettings(**kw).checked()
    assert AllocationSettings(r_max=DEFAULT_R_MAX + 1).changed() == ["r_max"]


def test_study_settings_files_keep_their_keys_and_name_changed_allocation_settings():
    from adaptsr.adapt import study

    def settings(**options):
        base = dict(seeds=3, iters=10, batch=4, patch=64, degradation="camera", val="v")
        base.update(val_every=0, device="cpu", workers=0)
        return study.study_settings("m", ["d"], ["ra:r2"], {**base, **options})

    plain = settings()
    assert (plain.allocation.score_batch, plain.allocation.score_patch) == (4, 64)
    assert list(plain.comparable()) == [
        "model", "data", "val", "iters", "batch", "patch", "degradation", "score_batches",
        "score_warmup", "val_every",
    ]  # fmt: skip
    assert plain.comparable()["score_warmup"] == DEFAULT_SCORE_WARMUP  # the steps, not "default"
    paper = settings(score_warmup=0)  # as studies from before the warm-up: no key
    without = {k: v for k, v in plain.comparable().items() if k != "score_warmup"}
    assert paper.comparable() == without
    changed = settings(r_max=4, score_patch=DEFAULT_PATCH)
    assert changed.comparable() == {**plain.comparable(), "score_patch": DEFAULT_PATCH, "r_max": 4}
    aware = study.train_config(changed.checked(), study.parse_spec("ra:r2:fisher"), seed=1)
    assert aware.allocation == AllocationSettings(
        budget="r2", score="fisher", r_max=4, score_batch=4, score_patch=DEFAULT_PATCH
    )
    uniform = study.train_config(changed.checked(), study.parse_spec("r2"), seed=1)
    assert uniform.allocation == AllocationSettings() and not uniform.rank_aware
