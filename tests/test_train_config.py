"""Training settings (adapt.train.config): files, flags and their ranges."""

import json

import pytest
from fakes.cli import one_line
from fakes.models import one_block_edsr
from fakes.training import train_cli_args

from adaptsr.core.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")


def test_damaged_settings_and_absurd_sizes_are_user_errors(edsr_files, train_hr, tmp_path, run_cli):
    from adaptsr.adapt.train.callbacks import JsonlLog

    hr = train_hr
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    hostile = tmp_path / "hostile.toml"
    hostile.write_text("a = " + "[" * 100_000)
    for config in (deep, hostile):
        code, _, err = run_cli(
            *train_cli_args(edsr_files["ckpt"], hr, tmp_path / "r", "--config", config)
        )
        one_line(code, err, "nested too deeply")
    code, _, err = run_cli(
        *train_cli_args(edsr_files["ckpt"], hr, tmp_path / "r", "--rank-map", deep)
    )
    one_line(code, err, "rank map")
    for flag, value in (
        ("--batch", "999999999999"),
        ("--patch", "99999999"),
        ("--rank", "1000000000"),
    ):
        code, _, err = run_cli(*train_cli_args(edsr_files["ckpt"], hr, tmp_path / "r", flag, value))
        one_line(code, err)
    # a damaged run log: lines that are not records, cut short, or with a foreign iteration
    log = tmp_path / "log.jsonl"
    log.write_text('{"iter": 1, "loss": 0.5}\n[1, 2]\n7\n{"iter": "x"}\n{"iter": 2}\n{"it')
    JsonlLog(log).trim(1)
    assert log.read_text() == '{"iter": 1, "loss": 0.5}\n'


def test_seeds_and_budgets_out_of_range_are_refused(edsr_files, train_hr, tmp_path, run_cli):
    from adaptsr.adapt.allocate import parse_budget

    hr = train_hr
    for seed in ("-1", str(2**64)):
        code, _, err = run_cli(
            *train_cli_args(edsr_files["ckpt"], hr, tmp_path / f"run{seed}", "--seed", seed)
        )
        assert code == 2 and "--seed" in err and "Traceback" not in err
        assert not (tmp_path / f"run{seed}").exists()
    config = tmp_path / "seed.json"
    config.write_text(json.dumps({"seed": -1}))
    code, _, err = run_cli(
        *train_cli_args(edsr_files["ckpt"], hr, tmp_path / "cfg", "--config", config)
    )
    one_line(code, err, "--seed must be in 0..")
    model = one_block_edsr()
    for budget in ("r" + "9" * 5000, "1" + "0" * 400, "1" + "0" * 20 + "k"):
        with pytest.raises(UserError, match="not understood"):
            parse_budget(budget, model)
    assert parse_budget("r999999", model)[0] == parse_budget("r1000", model)[0]  # capped ranks
