"""The score warm-up of rank-aware allocation (adaptsr.adapt.score_warmup, `--score-warmup N`):
0 is the paper's scores at initialisation; N > 0 (100 by default) scores a warmed, merged copy
and leaves the base model alone."""

import json

import pytest
import torch
import torch.nn.functional as F
from fakes.cli import only_line
from fakes.models import Tiny, tiny_batches
from fakes.training import study_folder, tiny_train_config

import adaptsr.adapt.allocate as allocate_module
from adaptsr.adapt import study
from adaptsr.adapt import train as training
from adaptsr.adapt.allocate import allocate_ranks
from adaptsr.adapt.allocation_settings import AllocationSettings
from adaptsr.adapt.choices import DEFAULT_SCORE_WARMUP
from adaptsr.adapt.rankmap import RankAllocation
from adaptsr.adapt.score_warmup import warmed_copy, warmup_rank
from adaptsr.adapt.site_scores import score_sites
from adaptsr.adapt.study_specs import parse_spec
from adaptsr.core.errors import UserError


def _tiny(seed=0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Tiny()


def _l1(model, batches) -> float:
    with torch.no_grad():
        return sum(F.l1_loss(model(lr), hr).item() for lr, hr in batches) / len(batches)


def test_zero_scores_the_base_and_the_default_warms_up(monkeypatch):
    model, batches = _tiny(), tiny_batches()
    zero = allocate_ranks(model, batches, "r2", score_warmup=0)
    assert zero.scores == score_sites(model, batches).scores  # the base, at initialisation
    assert zero.settings["score_warmup"] == 0
    steps = []

    def record(model, batches, n, rank, targets, seed=0, progress=False):
        steps.append(n)
        return warmed_copy(model, batches, n, rank, targets, seed)

    monkeypatch.setattr(allocate_module, "warmed_copy", record)
    default = allocate_ranks(model, batches, "r2")
    assert steps == [DEFAULT_SCORE_WARMUP] and default.settings["score_warmup"] == 100
    assert default.scores != zero.scores
    # random scores read no model: no warm-up by default, none recorded
    randomly = allocate_ranks(model, None, "r2", score="random")
    assert steps == [DEFAULT_SCORE_WARMUP] and randomly.settings["score_warmup"] == 0
    assert AllocationSettings(score="random").warmup_steps() == 0
    assert AllocationSettings().warmup_steps() == DEFAULT_SCORE_WARMUP


def test_warmup_leaves_the_base_model_and_random_streams_alone():
    model, batches = _tiny(), tiny_batches()
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    rng = torch.get_rng_state()
    allocation = allocate_ranks(model, iter(batches), "r2", score_warmup=3)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert [p.requires_grad for p in model.parameters()] == flags and not model.training
    assert not hasattr(model, "adaptsr_lora")
    assert torch.equal(torch.get_rng_state(), rng)
    assert allocation.settings["score_warmup"] == 3
    assert allocation.settings["batches"] == len(batches)  # a generator, drawn once


def test_warmup_trains_then_scores_the_merged_copy():
    model, batches = _tiny(), tiny_batches()
    warm = warmed_copy(model, batches, 20, 2, "all", seed=0)
    assert type(warm.head) is torch.nn.Conv2d and not hasattr(warm, "adaptsr_lora")  # merged
    assert _l1(warm, batches) < _l1(model, batches) - 1e-4  # Adam steps that lowered the loss
    warmed = allocate_ranks(model, batches, "r2", score_warmup=20, seed=0)
    assert warmed.scores != allocate_ranks(model, batches, "r2").scores
    assert warmed.scores == score_sites(warm, batches).scores  # the warmed copy's scores
    again = allocate_ranks(model, batches, "r2", score_warmup=20, seed=0)
    assert again.scores == warmed.scores and again.ranks == warmed.ranks  # seeded


def test_warmup_rank_is_the_budgets_uniform_rank(monkeypatch):
    assert (warmup_rank("r4"), warmup_rank(" r16 "), warmup_rank("886k")) == (4, 16, 8)
    assert (warmup_rank("8%"), warmup_rank(1000)) == (8, 8)
    seen = []

    def record(model, batches, steps, rank, targets, seed=0, progress=False):
        seen.append((type(batches), steps, rank, targets))
        return warmed_copy(model, batches, steps, rank, targets, seed)

    monkeypatch.setattr(allocate_module, "warmed_copy", record)
    model = _tiny()
    allocate_ranks(model, iter(tiny_batches()), "r3", score_warmup=2, targets="mlp")
    allocate_ranks(model, tiny_batches(), 500, score_warmup=1)
    assert seen == [(list, 2, 3, "mlp"), (list, 1, 8, "all")]


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(score_warmup=-1), "--score-warmup must be in [0, 100000], got -1"),
        (dict(score_warmup=100_001), "--score-warmup must be in [0, 100000], got 100001"),
        (dict(score_warmup=2.5), "--score-warmup must be a whole number"),
        (dict(score_warmup=5, score="random"), "does not apply to random scores"),
    ],
)
def test_bad_warmups_are_refused_in_one_line(kw, message):
    with pytest.raises(UserError) as e:
        AllocationSettings(**kw).checked()
    assert message in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(UserError, match="--score-warmup"):
        allocate_ranks(_tiny(), tiny_batches(), "r2", **kw)
    assert AllocationSettings(score_warmup=100_000).checked().changed() == ["score_warmup"]


def test_train_rank_aware_warms_up_and_records_it(tmp_path):
    root, checkpoint = study_folder(tmp_path)
    data = [str(root / "train")]
    with pytest.raises(UserError, match="--score-warmup applies to --rank-aware"):
        tiny_train_config(checkpoint, data, score_warmup=4).resolved()
    scoring = dict(rank_aware=True, budget="r2", score_batches=2, score_batch=2, score_patch=32)
    cfg = tiny_train_config(checkpoint, data, iters=1, score_warmup=2, **scoring)
    training.train(cfg, tmp_path / "run", progress=False)
    assert RankAllocation.read(tmp_path / "run" / "rank_map.json").settings["score_warmup"] == 2
    # config.json records the steps the default meant, for the score the run used
    default = tiny_train_config(checkpoint, data, **scoring).resolved()
    assert default.allocation.score_warmup == DEFAULT_SCORE_WARMUP
    randomly = tiny_train_config(checkpoint, data, score="random", **scoring).resolved()
    assert randomly.allocation.score_warmup == 0
    assert tiny_train_config(checkpoint, data).resolved().allocation.score_warmup is None


def test_runs_from_before_the_warmup_resume_as_they_were_scored(tmp_path):
    """A rank-aware run's config.json written before the warm-up existed has no score_warmup:
    it scored at initialisation, and resuming it must not read today's default."""
    root, checkpoint = study_folder(tmp_path)
    scoring = dict(rank_aware=True, budget="r2", score_batches=2, score_batch=2, score_patch=32)
    cfg = tiny_train_config(checkpoint, [str(root / "train")], score_warmup=0, **scoring)
    run = tmp_path / "run"
    run.mkdir()
    old = cfg.resolved().to_dict()
    del old["score_warmup"]
    (run / "config.json").write_text(json.dumps(old, default=str))
    assert training.resume_config(run, {}).allocation.score_warmup == 0
    uniform = tiny_train_config(checkpoint, [str(root / "train")]).resolved().to_dict()
    del uniform["score_warmup"]
    (run / "config.json").write_text(json.dumps(uniform, default=str))
    assert training.resume_config(run, {}).resolved().allocation.score_warmup is None


def test_study_spec_warmup():
    spec = parse_spec("ra:r8@warmup=50")
    assert spec.option("score_warmup") == 50 and spec.folder == "ra-r8@warmup=50"
    for text, message in [
        ("r8@warmup=5", "@warmup applies to rank-aware (ra:...) runs"),
        ("difffit@warmup=5", "@warmup applies to rank-aware (ra:...) runs"),
        ("ra:r8@warmup=x", "warmup 'x' is not a whole number in [0, 100000]"),
        ("ra:r8@warmup=-1", "warmup '-1' is not a whole number"),
        ("ra:r8@warmup=100001", "warmup '100001' is not a whole number"),
        ("ra:r8@warmup=²", "warmup '²' is not a whole number"),
    ]:
        with pytest.raises(UserError) as e:
            parse_spec(text)
        assert message in str(e.value) and "\n" not in str(e.value), text
    base = dict(seeds=1, iters=10, batch=4, patch=64, degradation="camera", val="v")
    settings = study.study_settings("m", ["d"], ["ra:r2@warmup=7"], {**base, "val_every": 0})
    config = study.train_config(settings.checked(), parse_spec("ra:r2@warmup=7"), seed=1)
    assert config.rank_aware and config.allocation.score_warmup == 7
    # a study's default is the default's steps; a random-score run there takes none
    settings = study.study_settings("m", ["d"], ["ra:r2"], {**base, "val_every": 0}).checked()
    config = study.train_config(settings, parse_spec("ra:r2:random"), seed=1)
    assert config.resolved().allocation.score_warmup == 0


def test_a_study_from_before_the_warmup_is_not_continued_under_the_default(tmp_path):
    """study-settings.json written before the warm-up had no score_warmup (they scored at
    initialisation): today's default is refused with the way to continue, --score-warmup 0."""
    root, checkpoint = study_folder(tmp_path)
    base = dict(seeds=1, iters=2, batch=2, patch=32, degradation="bicubic", val=str(root / "val"))
    base.update(val_every=0, device="cpu", workers=0)
    out = tmp_path / "study"
    out.mkdir()
    model, data = str(checkpoint), [str(root / "train")]
    paper = study.study_settings(model, data, ["ra:r2"], {**base, "score_warmup": 0}).checked()
    (out / study.SETTINGS_FILE).write_text(json.dumps(paper.comparable()))
    assert "score_warmup" not in paper.comparable()
    today = study.study_settings(model, data, ["ra:r2"], {**base})
    with pytest.raises(UserError) as e:
        study.check_settings(today.checked(), out, force=False)
    assert "(score_warmup) (it scored at initialisation: --score-warmup 0 continues it)" in str(
        e.value
    )
    study.check_settings(paper, out, force=False)  # the same settings continue


def test_cli_allocate_records_the_warmup(tmp_path, run_cli):
    root, checkpoint = study_folder(tmp_path)
    out = tmp_path / "ranks.json"
    args = ["allocate", "--model", checkpoint, "--data", root / "train", "--budget", "r2"]
    args += ["--out", out, "--score-batches", "2", "--score-batch", "2", "--score-patch", "32"]
    args += ["--degradation", "bicubic"]
    code, _, stderr = run_cli(*args, "--score-warmup", "2")
    assert code == 0, stderr
    assert json.loads(out.read_text())["settings"]["score_warmup"] == 2
    code, _, stderr = run_cli(*args, "--force", "--score-warmup", "100001")
    only_line(code, stderr, "--score-warmup must be in [0, 100000]")
    assert "--score-warmup" in run_cli("allocate", "--help")[1]
