"""Training settings (adapt.train.config): files, flags and their ranges."""

import json
import os

import pytest
from fakes.cli import one_line
from fakes.models import one_block_edsr
from fakes.training import tiny_train_config, train_cli_args

from adaptsr.adapt import train as training
from adaptsr.adapt.allocation_settings import AllocationSettings
from adaptsr.adapt.lora import lora_sites
from adaptsr.adapt.models import load_model
from adaptsr.core.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _config(safmn_setup, **kw):
    _, model, hr = safmn_setup
    return tiny_train_config(model, **{"data": [str(hr)], **kw})


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


def test_cli_config_file_precedence_and_run_dir_rules(safmn_setup, tmp_path, run_cli):
    root, model, hr = safmn_setup
    conf = tmp_path / "train.toml"
    conf.write_text(
        f'model = "{model}"\ndata = "{hr}"\niters = 2\nbatch = 2\npatch = 32\nworkers = 0\n'
        'device = "cpu"\ndegradation = "bicubic"\nrank = 2\nlr = 0.5\n'
    )
    run = tmp_path / "run"
    code, out, err = run_cli("train", "--config", conf, "--out", run, "--lr", "0.01", "--quiet")
    assert code == 0, err
    saved = json.loads((run / "config.json").read_text())
    assert saved["lr"] == 0.01 and saved["rank"] == 2 and saved["iters"] == 2
    code, _, err = run_cli("train", "--config", conf, "--out", run, "--quiet")
    assert code == 1 and "already holds a run" in err and "--resume" in err
    code, _, err = run_cli("train", "--out", run, "--resume", "--lr", "0.1")
    assert code == 1 and "--lr differs from the run being resumed" in err
    code, out, err = run_cli("train", "--out", run, "--resume", "--quiet")
    assert code == 0 and "already finished" in out
    code, _, err = run_cli("train", "--out", tmp_path / "none", "--resume")
    assert code == 1 and "nothing to resume" in err
    bad = tmp_path / "bad.json"
    bad.write_text('{"itters": 3}')
    code, _, err = run_cli("train", "--config", bad, "--out", tmp_path / "x")
    assert code == 1 and "unknown setting 'itters'" in err
    code, _, err = run_cli(
        "train", "--model", model, "--data", hr, "--out", tmp_path / "y", "--patch", "36"
    )
    assert code == 1 and "LR crops of 9 px" in err


def test_bad_inputs_never_cost_the_previous_run(safmn_setup, tmp_path, run_cli):
    root, model, hr = safmn_setup
    run = tmp_path / "run"
    common = ["--model", model, "--out", run, "--iters", 2, "--batch", 2, "--patch", 32,
              "--workers", 0, "--device", "cpu", "--degradation", "bicubic", "--quiet"]  # fmt: skip
    sites = [s.name for s in lora_sites(load_model(model))]
    ranks = tmp_path / "ranks.json"
    ranks.write_text(json.dumps({"ranks": {sites[0]: 2, sites[1]: 1}}))
    code, _, err = run_cli("train", "--data", hr, "--rank-map", ranks, *common)
    assert code == 0, err
    adapter = (run / "adapter.safetensors").read_bytes()
    # --force with a typo in --data: one line, and the finished run is still there
    code, _, err = run_cli("train", "--data", tmp_path / "typo", "--force", *common)
    assert code == 1 and "no such folder" in err
    assert (run / "adapter.safetensors").read_bytes() == adapter
    # the run keeps its own copy of the rank map: editing the original cannot break a resume
    assert json.loads((run / "rank_map.json").read_text())["ranks"] == {sites[0]: 2, sites[1]: 1}
    ranks.write_text(json.dumps({"ranks": {sites[0]: 8}}))
    code, out, err = run_cli("train", "--out", run, "--resume", "--quiet")
    assert code == 0 and "already finished" in out, err
    # one clear line each: a bad device, --val with --val-split, a wrong type in a config file
    for args, message in [
        (["--data", hr, "--device", "tpu", "--force"], "device"),
        (["--data", hr, "--val", hr, "--val-split", 1, "--force"], "not both"),
    ]:
        code, _, err = run_cli("train", *common[:-3], *args)
        assert code == 1 and message in err and len(err.strip().splitlines()) == 1, err
    conf = tmp_path / "c.json"
    conf.write_text(json.dumps({"model": str(model), "data": str(hr), "iters": "many"}))
    code, _, err = run_cli("train", "--config", conf, "--out", tmp_path / "c")
    assert code == 1 and "iters has the wrong type" in err
    # a damaged config.json in a run folder is one line too
    (run / "config.json").write_text("{broken")
    code, _, err = run_cli("train", "--out", run, "--resume")
    assert code == 1 and "cannot parse config" in err


def test_rank_aware_options_are_checked(safmn_setup):
    for kw, message in [
        (dict(score="fisher"), "--score applies to --rank-aware"),
        (dict(r_max=4), "--r-max applies to --rank-aware"),
        (dict(rank_aware=True, budget="r2", r_min=5, r_max=4), "--r-min 5 is above --r-max 4"),
        (dict(rank_aware=True, budget="r2", score_patch=0), "--score-patch must be at least 1"),
        (dict(rank_aware=True, budget="r2", allocator="x"), "unknown allocator 'x'"),
    ]:
        with pytest.raises(UserError, match=message):
            _config(safmn_setup, **kw).resolved()
    values = {"score": "activation", "r_min": 0, "score_batch": 4, "rank_aware": True}
    cfg = training.config_from_dict({**values, "budget": "r2", "model": "m"})
    assert cfg.resolved().allocation.score == "activation"
    assert cfg.allocation == AllocationSettings(
        budget="r2", score="activation", r_min=0, score_batch=4
    )
    # the same settings as a nested table; config.json keeps them flat, in their old places
    nested = {"rank_aware": True, "model": "m", "allocation": {**values, "budget": "r2"}}
    nested["allocation"].pop("rank_aware")
    assert training.config_from_dict(nested) == cfg
    flat = cfg.to_dict()
    assert "allocation" not in flat and flat["r_min"] == 0 and flat["budget"] == "r2"
    keys = list(flat)
    assert keys[keys.index("rank_aware") + 1 : keys.index("alpha")] == [
        "budget", "score_batches", "score_batch", "score_patch", "score", "normalise",
        "allocator", "r_min", "r_max", "score_warmup",
    ]  # fmt: skip
    assert training.config_from_dict(flat) == cfg
    with pytest.raises(UserError, match="unknown setting 'allocation'"):
        training.config_from_dict({"allocation": 3})
    with pytest.raises(UserError, match="r_min has the wrong type"):
        training.config_from_dict({"r_min": "0"})
