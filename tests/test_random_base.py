"""Random bases: train, allocate, merge, export (and study, demo) refuse a built-in
configuration whose weights are random (none ship, none fetched) unless --allow-random-base is
given; a fetched release, a pretrained name and a checkpoint count as weights."""

import json
from dataclasses import replace

import pytest
import torch

from adaptsr.adapt import releases, study
from adaptsr.adapt.fetch import cache_dir
from adaptsr.adapt.lora import inject_lora, save_adapter
from adaptsr.adapt.models import (
    build_model,
    check_base_weights,
    load_model,
    random_base_message,
    random_weights,
    save_model,
)
from adaptsr.adapt.study_specs import parse_spec
from adaptsr.adapt.train import TrainConfig
from adaptsr.adapt.train.config import config_from_dict
from adaptsr.core.errors import UserError
from adaptsr.export.plan import plan_export

RANDOM = "safmn-x4"  # a configuration without shipped weights or a recorded release
RELEASED = "swinir-light-x2"  # a configuration with a recorded release
FLAG = "--allow-random-base"


def refused(code, err, name=RANDOM):
    """The refusal: one line naming the model and where weights are, no traceback."""
    lines = err.strip().splitlines()
    assert code != 0 and "Traceback" not in err and len(lines) == 1, err
    assert f"{name} has random weights" in lines[0]
    assert "`adapt models`" in lines[0] and "`adapt fetch" in lines[0] and FLAG in lines[0]


def fetched(monkeypatch, tmp_path, name=RELEASED, seed=3):
    """Weights of configuration `name` in a cache of the test's own, as `adapt fetch` leaves
    them (the release's file name; the release table records the file's size)."""
    monkeypatch.setenv("ADAPTSR_CACHE", str(tmp_path / "cache"))
    release = releases.RELEASES[name]
    path = cache_dir() / release.file
    path.parent.mkdir(parents=True)
    save_model(build_model(name, seed=seed), path)
    monkeypatch.setitem(releases.RELEASES, name, replace(release, size=path.stat().st_size))
    return path


@pytest.fixture
def adapter(tmp_path):
    """A rank-2 adapter of RANDOM (as load_model builds it) with non-zero updates."""
    adapted = inject_lora(build_model(RANDOM), 2)
    with torch.no_grad():
        for name, p in adapted.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.01)
    return save_adapter(adapted, tmp_path / "adapter.safetensors")


def test_the_line_names_the_model_and_where_its_weights_are():
    line = random_base_message("swinir-m-x4")
    assert "run `adapt fetch swinir-m-x4`" in line and "`adapt models`" in line
    assert releases.RELEASES["swinir-m-x4"].file in line and FLAG in line
    line = random_base_message(RANDOM)
    assert "no official release is recorded" in line and "`adapt fetch NAME`" in line
    assert "`adapt models`" in line and FLAG in line and "\n" not in line


def test_what_counts_as_weights(tmp_path, monkeypatch):
    checkpoint = save_model(build_model(RANDOM), tmp_path / "base.safetensors")
    assert random_weights(RANDOM) and random_weights(RELEASED)
    assert not random_weights("adaptsr-safmn-x4")  # pretrained: weights ship
    assert not random_weights(checkpoint) and not random_weights(str(checkpoint))
    assert not random_weights("no-such-model")  # load_model names that one
    with pytest.raises(UserError, match=f"{RANDOM} has random weights"):
        check_base_weights(RANDOM)
    assert check_base_weights(RANDOM, allow_random=True) is True
    assert check_base_weights(checkpoint) is False
    path = fetched(monkeypatch, tmp_path)
    assert not random_weights(RELEASED) and check_base_weights(RELEASED) is False
    expected = build_model(RELEASED, seed=3).state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in load_model(RELEASED).state_dict().items())
    path.unlink()  # gone from the cache: random again
    assert random_weights(RELEASED)


def test_train_refuses_a_random_base_and_records_the_permission(train_hr, tmp_path, run_cli):
    run = tmp_path / "run"
    args = ["train", "--model", RANDOM, "--data", train_hr, "--out", run, "--iters", "1"]
    args += ["--batch", "2", "--patch", "32", "--workers", "0", "--device", "cpu"]
    args += ["--degradation", "bicubic", "--rank", "2", "--quiet"]
    code, _, err = run_cli(*args)
    refused(code, err)
    assert not run.exists()
    code, _, err = run_cli(*args, FLAG)
    assert code == 0, err
    saved = json.loads((run / "config.json").read_text())
    assert saved["allow_random_base"] is True and saved["random_base"] is True
    code, out, err = run_cli("train", "--out", run, "--resume", "--quiet")  # kept by the run
    assert code == 0 and "already finished" in out, err


def test_train_config_records_whether_the_base_was_random(tmp_path):
    checkpoint = save_model(build_model(RANDOM), tmp_path / "base.safetensors")
    with pytest.raises(UserError, match=f"{RANDOM} has random weights"):
        TrainConfig(model=RANDOM).resolved()
    assert TrainConfig(model=RANDOM, allow_random_base=True).resolved().random_base
    assert not TrainConfig(model=str(checkpoint)).resolved().random_base
    # pretraining starts from random weights by design: no permission needed
    assert TrainConfig(model=RANDOM, mode="pretrain").resolved().random_base
    # a run's config.json records the fact; read back, it is not a setting
    read = config_from_dict({"model": str(checkpoint), "random_base": True})
    assert not read.random_base and not read.resolved().random_base


def test_allocate_refuses_a_random_base(tmp_path, monkeypatch, run_cli):
    out = tmp_path / "maps"
    args = ["--budget", "r1", "--score", "random", "--device", "cpu"]
    code, _, err = run_cli("allocate", "--model", RANDOM, *args, "--out", out / "r.json")
    refused(code, err)
    assert not out.exists()
    code, _, err = run_cli("allocate", "--model", RANDOM, *args, "--out", out / "r.json", FLAG)
    assert code == 0, err
    assert json.loads((out / "r.json").read_text())["settings"]["random_base"] is True
    checkpoint = save_model(build_model(RANDOM), tmp_path / "base.safetensors")
    code, _, err = run_cli("allocate", "--model", checkpoint, *args, "--out", out / "c.json")
    assert code == 0, err
    assert json.loads((out / "c.json").read_text())["settings"]["random_base"] is False
    fetched(monkeypatch, tmp_path)  # a fetched release counts as weights
    code, _, err = run_cli("allocate", "--model", RELEASED, *args, "--out", out / "f.json")
    assert code == 0, err
    assert json.loads((out / "f.json").read_text())["settings"]["random_base"] is False


def test_merge_refuses_a_random_base(adapter, tmp_path, run_cli):
    out = tmp_path / "out"
    out.mkdir()
    for given in (["--out", out / "m.safetensors"], ["--blend-out", out / "b.safetensors"]):
        code, _, err = run_cli("merge", "--model", RANDOM, "--adapter", adapter, *given)
        refused(code, err)
        assert not list(out.iterdir())
    code, stdout, err = run_cli(
        "merge", "--model", RANDOM, "--adapter", adapter, "--out", out / "m.safetensors", FLAG
    )
    assert code == 0 and "merged" in stdout, err
    merged = load_model(out / "m.safetensors")
    assert not all(  # the adapter's update is in the weights
        torch.equal(v, build_model(RANDOM).state_dict()[k]) for k, v in merged.state_dict().items()
    )


def test_export_refuses_a_random_base(adapter, tmp_path, run_cli):
    out = tmp_path / "out"
    out.mkdir()
    for extra in ([], ["--adapter", adapter, "--merged"]):
        code, _, err = run_cli(
            "export", "onnx", "--model", RANDOM, *extra, "--out", out / "m.onnx", "--tile", 16, 16
        )
        refused(code, err)
        assert not list(out.iterdir())
    # with the flag the command goes on to its next check (an opset too old: a quick refusal)
    args = ["--out", out / "m.onnx", "--tile", 16, 16, "--opset", 17, FLAG]
    code, _, err = run_cli("export", "onnx", "--model", RANDOM, *args)
    assert code == 1 and "opset 17 is too old" in err, err
    with pytest.raises(UserError, match=f"{RANDOM} has random weights"):
        plan_export(out / "m.onnx", model=RANDOM, tile=(16, 16))
    plan = plan_export(out / "m.onnx", model=RANDOM, tile=(16, 16), allow_random_base=True)
    assert plan.model == RANDOM
    assert plan_export(out / "m.onnx", model="adaptsr-safmn-x4", tile=(16, 16)).model


def test_study_and_demo_refuse_a_random_base(train_hr, tmp_path, run_cli):
    out = tmp_path / "study"
    args = ["--model", RANDOM, "--data", train_hr, "--val", train_hr, "--runs", "r1"]
    args += ["--seeds", 1, "--iters", 1, "--out", out]
    code, _, err = run_cli("study", *args)
    refused(code, err)
    assert not out.exists()
    # with the flag the study goes on to its next check (crops the model cannot take)
    code, _, err = run_cli("study", *args, "--patch", 4, FLAG)
    assert code == 1 and "random weights" not in err and "--patch" in err, err
    settings = study.StudySettings(
        model=RANDOM, data=[str(train_hr)], val=str(train_hr), runs=["r1"], allow_random_base=True
    ).checked()
    config = study.train_config(settings, parse_spec("r1"), 0)
    assert config.allow_random_base and config.resolved().random_base
    plain = replace(settings, allow_random_base=False)
    assert settings.comparable() == plain.comparable()  # a permission, not a setting
    assert "allow_random_base" not in plain.flat()  # earlier studies' files stay the same
    code, _, err = run_cli("demo", "--out", tmp_path / "demo", "--model", RANDOM)
    refused(code, err)
    assert not (tmp_path / "demo").exists()
