import json
import statistics

import pytest
from fakes.training import study_folder

from adaptsr.adapt import study
from adaptsr.core.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")


def test_run_specs_parse_and_refuse():
    assert study.parse_spec("r4") == study.RunSpec("r4", "lora", rank=4)
    assert study.parse_spec("full").mode == "full"
    ra = study.parse_spec("ra:r8:fisher")
    assert (ra.budget, ra.score, ra.rank_aware, ra.folder) == ("r8", "fisher", True, "ra-r8-fisher")
    assert study.parse_spec("ra:886k").budget == "886k"
    for bad in ("r0", "rx", "ra:", "ra:r8:magic", "lora", "ra:r8:grad:x"):
        with pytest.raises(UserError):
            study.parse_spec(bad)
    with pytest.raises(UserError, match="twice"):
        study.parse_specs("r1,r1")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny SAFMN x4 checkpoint, 6 training and 2 validation textured images."""
    return study_folder(tmp_path_factory.mktemp("study"))


def _settings(setup, **kw):
    root, model = setup
    base = dict(
        model=str(model),
        data=[str(root / "train")],
        val=str(root / "val"),
        runs=["r1", "ra:r2", "full"],
        seeds=2,
        iters=2,
        batch=2,
        patch=32,
        degradation="bicubic",
        allocation=study.study_allocation({"score_batches": 2}, batch=2, patch=32),
        device="cpu",
    )
    return study.StudySettings(**{**base, **kw})


def test_study_grid_table_rerun_and_settings_guard(setup, tmp_path):
    out = tmp_path / "study"
    lines = []
    report = study.run_study(_settings(setup), out, progress=False, say=lines.append)
    assert any("[6/6]" in line for line in lines)
    rows = {r["spec"]: r for r in report["runs"]}
    assert list(rows) == ["r1", "ra:r2", "full"]
    for spec in ("r1", "ra-r2", "full"):
        for seed in (0, 1):
            run = out / f"{spec}-s{seed}"
            assert (run / "eval.json").is_file() and (run / "config.json").is_file()
    # the table is computed from the runs' own scores
    for spec, row in rows.items():
        folder = spec.replace(":", "-")
        per_seed = [json.loads((out / f"{folder}-s{s}" / "eval.json").read_text()) for s in (0, 1)]
        values = [p["psnr_y"] for p in per_seed]
        assert row["psnr_y"] == pytest.approx(statistics.mean(values))
        assert row["psnr_y_std"] == pytest.approx(statistics.stdev(values))
        assert row["gain_db"] == pytest.approx(row["psnr_y"] - report["base"]["psnr_y"])
    assert rows["r1"]["trainable"] < rows["full"]["trainable"]
    assert rows["ra:r2"]["trainable"] > 0
    full_gain = rows["full"]["gain_db"]
    if full_gain > 0:
        assert rows["r1"]["share_of_full_gain"] == pytest.approx(rows["r1"]["gain_db"] / full_gain)
    else:
        assert rows["r1"]["share_of_full_gain"] is None
    # seeds change the runs: two seeds of one spec do not give the same adapter
    a = (out / "r1-s0" / "adapter.safetensors").read_bytes()
    assert a != (out / "r1-s1" / "adapter.safetensors").read_bytes()
    for name in ("study.md", "study.json", "params.png", "curves.png"):
        assert (out / name).stat().st_size > 0
    assert "| ra:r2 |" in (out / "study.md").read_text()

    # a rerun skips finished runs (their files are untouched) and gives the same table
    stamp = (out / "r1-s0" / "eval.json").stat().st_mtime_ns
    again = study.run_study(_settings(setup), out, progress=False, say=lambda _: None)
    assert (out / "r1-s0" / "eval.json").stat().st_mtime_ns == stamp
    assert again["runs"] == report["runs"]

    # other settings in the same folder: refused, unless --force
    with pytest.raises(UserError, match="other settings.*iters"):
        study.run_study(_settings(setup, iters=3), out, progress=False, say=lambda _: None)


def test_interrupted_run_resumes_to_the_same_result(setup, tmp_path):
    """A study stopped by Ctrl-C during a run continues it from its checkpoint on the rerun
    and scores what an uninterrupted study scores."""
    import os
    import signal

    from adaptsr.adapt.train import train
    from adaptsr.adapt.train.callbacks import Callback

    settings = _settings(setup, runs=["r1"], seeds=1, iters=4).checked()
    whole = tmp_path / "whole"
    study.run_study(settings, whole, progress=False, say=lambda _: None)

    class CtrlCAt2(Callback):
        def on_step(self, iteration):
            if iteration == 2:
                os.kill(os.getpid(), signal.SIGINT)

    part = tmp_path / "part"
    part.mkdir()  # the study had started: its settings were written before its first run
    (part / study.SETTINGS_FILE).write_text(json.dumps(settings.comparable()))
    cfg = study.train_config(settings, study.parse_spec("r1"), 0)
    stopped = train(cfg, part / "r1-s0", progress=False, callbacks=[CtrlCAt2()])
    assert stopped.status == "interrupted" and stopped.iteration < 4
    report = study.run_study(settings, part, progress=False, say=lambda _: None)
    assert report["runs"][0]["psnr_y"] == pytest.approx(
        json.loads((whole / "r1-s0" / "eval.json").read_text())["psnr_y"], abs=1e-9
    )


def test_a_failed_start_leaves_no_study_folder(setup, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "study"
    with pytest.raises(UserError, match="no images"):
        study.run_study(_settings(setup, val=str(empty)), out, progress=False, say=lambda _: None)
    assert not out.exists()
    # checked before the settings and base scores are written, so the corrected rerun starts
    with pytest.raises(UserError, match="--patch 3 gives LR crops"):
        study.run_study(_settings(setup, patch=3), out, progress=False, say=lambda _: None)
    with pytest.raises(UserError, match="no images"):
        study.run_study(
            _settings(setup, data=[str(empty)]), out, progress=False, say=lambda _: None
        )
    assert not out.exists()


def test_damaged_study_files_and_an_out_among_the_images_are_user_errors(setup, tmp_path):
    root, _ = setup
    settings = _settings(setup, runs=["r1"], seeds=1)
    with pytest.raises(UserError, match="is inside the input folder"):
        study.run_study(settings, root / "train", force=True, progress=False, say=lambda _: None)
    out = tmp_path / "study"
    study.run_study(settings, out, progress=False, say=lambda _: None)
    base = out / "base-eval.json"
    for damage in (b"garbage", b"\xff\xfe\xfd", b"[1]", b'{"psnr_y": "x"}'):
        base.write_bytes(damage)
        with pytest.raises(UserError, match="base-eval.json is damaged"):
            study.run_study(settings, out, progress=False, say=lambda _: None)
    base.unlink()  # removed: the study redoes that part, and the run's scores stand
    again = study.run_study(settings, out, progress=False, say=lambda _: None)
    assert again["base"]["psnr_y"] > 0
    (out / study.SETTINGS_FILE).write_bytes(b"[1]")
    with pytest.raises(UserError, match="damaged"):
        study.run_study(settings, out, progress=False, say=lambda _: None)
    assert study.run_study(settings, out, force=True, progress=False, say=lambda _: None)["runs"]
