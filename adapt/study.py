"""`adapt study`: one grid of training runs, the same data for all, compared on one table.

Run specs (`--runs r1,r4,ra:r8,difffit,full`, with @key=value options such as `r8@rs`):
adaptsr.adapt.study_specs.

Every run is an ordinary `adapt train` run in DIR/<spec>-s<seed>/ (':' written as '-'), with the
same data, crops, degradation, iterations and evaluation; the seed changes only the run's own
randomness (crops, degradation draws, adapter initialisation). A rerun of the study skips the
runs that finished and resumes the ones that did not. Each finished run is scored on the
validation folder by adaptsr.adapt.evaluate and the score kept in its folder (eval.json).
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from adaptsr.adapt import data, layouts
from adaptsr.adapt.allocate import allocate, parse_budget
from adaptsr.adapt.allocation_settings import AllocationSettings
from adaptsr.adapt.choices import MAX_SEEDS
from adaptsr.adapt.degradation_file import settings_of
from adaptsr.adapt.evaluate import evaluate, find_pairs, make_degrade
from adaptsr.adapt.lora import load_adapter
from adaptsr.adapt.losses.objective import check_loss_files
from adaptsr.adapt.losses.spec import DEFAULT_LOSS, loss_text, parse_loss
from adaptsr.adapt.metrics import PERCEPTUAL_NAMES, perceptual_metrics
from adaptsr.adapt.models import check_base_weights, load_model, model_info
from adaptsr.adapt.sites import parse_targets, target_sites
from adaptsr.adapt.study_report import STUDY_FILE, RunOutcome, duration, summarise, write_outputs
from adaptsr.adapt.study_specs import RunSpec, parse_spec, parse_specs  # noqa: F401 (public)
from adaptsr.adapt.train import TrainConfig, train
from adaptsr.adapt.train.loop import check_patch
from adaptsr.core.errors import UserError
from adaptsr.core.fileio import atomic_output, check_outside_inputs, leave_as_found, parse_json

SETTINGS_FILE = "study-settings.json"
# not written when so: studies made before these settings existed continue
RUN_DEFAULTS = {"lr": None, "scaling": "alpha/r", "targets": "all", "loss": DEFAULT_LOSS}
RUN_DEFAULTS.update(ema=0.0, gan_start=0, vgg_weights=None, dists_weights=None)
RUN_DEFAULTS["allow_random_base"] = False
EVAL_FILE = "eval.json"  # in a run folder: written once the run is trained and scored


@dataclass
class StudySettings:
    """What every run shares. A rerun into the same folder must give the same settings."""

    model: str
    data: list[str]
    val: str
    runs: list[str]
    seeds: int = 3
    iters: int = 1000
    batch: int = 8
    patch: int = 128
    degradation: str = "camera"  # for HR-only training (and validation) folders: name or file
    # rank-aware runs: how they score and allocate (a run spec's budget and score win);
    # None: study_allocation's defaults (scoring crops as the training crops)
    allocation: AllocationSettings | None = None
    val_every: int = 0  # 0: iters / 5
    # LoRA and DiffFit runs (a run spec's @lr, @scaling, @targets win); lr None: the mode's
    lr: float | None = None
    scaling: str = "alpha/r"
    targets: str = "all"
    # every run's loss (a run spec's @loss, @ema, @ganstart win): adapt train's options
    loss: str = DEFAULT_LOSS
    ema: float = 0.0
    gan_start: int = 0
    vgg_weights: str | None = None  # a file's place, not a setting of the numbers
    dists_weights: str | None = None  # a folder's place (the dists term's weights), likewise
    device: str = "auto"
    workers: int = 0
    allow_random_base: bool = False  # a configuration with random weights as the base

    def checked(self) -> StudySettings:
        s = replace(self, data=list(self.data), runs=list(self.runs))
        if s.allocation is None:
            s.allocation = study_allocation({}, s.batch, s.patch)
        s.allocation = s.allocation.checked()
        for name in ("seeds", "iters", "batch", "patch"):
            if getattr(s, name) < 1:
                raise UserError(f"--{name} must be at least 1, got {getattr(s, name)}")
        if s.seeds > MAX_SEEDS:
            raise UserError(f"--seeds {s.seeds} is more than {MAX_SEEDS} runs per spec")
        if s.val_every < 0:
            raise UserError(f"--val-every must be >= 0, got {s.val_every}")
        settings_of(s.degradation)  # a preset name or a degradation file
        if not s.data:
            raise UserError("no training data: give --data")
        if s.val_every == 0:
            s.val_every = max(1, s.iters // 5)
        if s.lr is not None and not (s.lr > 0 and math.isfinite(s.lr)):
            raise UserError(f"--lr must be a positive number, got {s.lr}")
        s.targets = parse_targets(s.targets)
        s.loss = loss_text(parse_loss(s.loss))
        parse_specs(",".join(s.runs))
        return s

    def flat(self) -> dict:
        """The settings as study.json and study-settings.json hold them: score_batches in its
        old place, then the allocation settings that differ from study_allocation's defaults
        (lr, scaling and targets only where not their defaults: earlier studies continue). The
        score warm-up is written as its steps unless none: studies from before it scored at
        initialisation, and continuing one under today's default is refused, not mixed."""
        allocation = self.allocation or study_allocation({}, self.batch, self.patch)
        implied = study_allocation({}, self.batch, self.patch)
        d = {}
        for key, value in asdict(self).items():
            if key in RUN_DEFAULTS and value == RUN_DEFAULTS[key]:
                continue
            if key != "allocation":
                d[key] = value
                continue
            d["score_batches"] = allocation.score_batches
            for name in AllocationSettings.names():
                if name in ("score_batches", "score_warmup"):
                    continue
                if getattr(allocation, name) != getattr(implied, name):
                    d[name] = getattr(allocation, name)
            if allocation.warmup_steps():
                d["score_warmup"] = allocation.warmup_steps()
        return d

    def comparable(self) -> dict:
        """Settings that change the numbers (runs, seeds, device and workers may change)."""
        d = self.flat()
        for key in (
            "runs",
            "seeds",
            "device",
            "workers",
            "vgg_weights",
            "dists_weights",
            "allow_random_base",
        ):
            d.pop(key, None)
        return d


def study_allocation(given: dict, batch: int, patch: int) -> AllocationSettings:
    """A study's allocation settings: those `given` (None: not given), the scoring crops
    otherwise the study's own training crops (--batch, --patch), the rest their defaults."""
    values = {k: v for k, v in given.items() if v is not None}
    return AllocationSettings.from_values({"score_batch": batch, "score_patch": patch, **values})


# ---------------------------------------------------------------------------------------------
# running


def train_config(settings: StudySettings, spec: RunSpec, seed: int) -> TrainConfig:
    kw: dict = {}
    if spec.mode == "lora" and spec.rank_aware:
        chosen = {"budget": spec.budget, **({"score": spec.score} if spec.score else {})}
        chosen.update((k, v) for k, v in spec.options if k in AllocationSettings.names())
        kw = {"rank_aware": True, "allocation": replace(settings.allocation, **chosen)}
    elif spec.mode == "lora":
        kw = {"rank": spec.rank}
    if spec.mode == "lora":
        kw["scaling"] = spec.option("scaling", settings.scaling)
    if spec.mode in ("lora", "difffit"):
        kw["targets"] = spec.option("targets", settings.targets)
        kw["lr"] = spec.option("lr", settings.lr)
    for name in ("loss", "ema", "gan_start"):
        kw[name] = spec.option(name, getattr(settings, name))
    if "perceptual" in kw["loss"]:
        kw["vgg_weights"] = settings.vgg_weights
    if "dists" in kw["loss"]:
        kw["dists_weights"] = settings.dists_weights
    return TrainConfig(
        model=settings.model,
        data=list(settings.data),
        val=settings.val,
        val_every=settings.val_every,
        mode=spec.mode,
        iters=settings.iters,
        batch=settings.batch,
        patch=settings.patch,
        degradation=settings.degradation,
        seed=seed,
        device=settings.device,
        workers=settings.workers,
        save_every=max(1, settings.iters // 10),
        log_every=max(1, min(50, settings.iters // 10)),
        allow_random_base=settings.allow_random_base,
        **kw,
    )


def _read_log(run_dir: Path) -> list[dict]:
    path = run_dir / "log.jsonl"
    records = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a kill: the records before it stand
    return records


def _train_seconds(records: list[dict]) -> float:
    """Wall time of the training itself: log intervals summed over every (resumed) segment."""
    total, start = 0.0, None
    for r in records:
        if r.get("event") == "start":
            start = r.get("time")
        elif start is not None and "time" in r:
            total += r["time"] - start
            start = r["time"]
    return total


def _outcome_from(run_dir: Path, spec: RunSpec, seed: int, scores: dict) -> RunOutcome:
    records = _read_log(run_dir)
    starts = [r for r in records if r.get("event") == "start"]
    curve = [(int(r["iter"]), float(r["psnr_y"])) for r in records if r.get("event") == "val"]
    done = [r for r in records if r.get("event") == "done"]
    return RunOutcome(
        spec=spec.text,
        seed=seed,
        folder=run_dir.name,
        trainable=int(starts[-1]["trainable"]) if starts else 0,
        psnr_y=float(scores["psnr_y"]),
        ssim_y=float(scores["ssim_y"]),
        perceptual={k: float(scores[k]) for k in PERCEPTUAL_NAMES if k in scores},
        train_seconds=_train_seconds(records),
        iters=int(done[-1]["iter"]) if done else 0,
        curve=curve,
    )


@functools.cache
def study_metrics(device: str) -> tuple[dict, tuple[str, ...]]:
    """The perceptual metrics every run is scored with (built once): LPIPS and DISTS where
    their weights are, HaarPSI and MS-GMSD where piq is; the notes on those left out."""
    fns, notes = perceptual_metrics(PERCEPTUAL_NAMES, device)
    return fns, tuple(notes)


def _evaluate_run(settings: StudySettings, adapter: Path | None, full: Path | None) -> dict:
    """Mean PSNR/SSIM-Y and the perceptual metrics of one trained run on the validation
    folder (no baselines)."""

    model = load_model(full if full is not None else settings.model)
    if adapter is not None:
        load_adapter(model, adapter)
    scale = model_info(model).scale
    pairs, degrade = validation_pairs(settings, scale)
    result = evaluate(
        model,
        pairs,
        scale,
        degrade=degrade,
        device=settings.device,
        baselines=False,
        perceptual=study_metrics(settings.device)[0],
        progress=False,
    )
    return result.means()["model"]


def validation_pairs(settings: StudySettings, scale: int):
    """The validation pairs: a paired folder as it is, an HR-only one degraded (seed 10000)."""

    _, items = layouts.detect(settings.val, scale)
    if all(lr is not None for _, lr in items):
        return find_pairs(settings.val, settings.val, scale), None
    return find_pairs(settings.val, None, scale), make_degrade(
        settings.degradation, scale, seed=10_000
    )


SCORE_KEYS = ("psnr_y", "ssim_y")


def _read_json(path: Path, keys: tuple[str, ...] = ()) -> dict:
    """A study file written earlier, with `keys`; a damaged one is named, not a traceback."""
    what = "remove it (the study redoes that part) or use --force"
    try:
        data = parse_json(path.read_bytes(), "its JSON")
    except (OSError, UserError) as e:
        raise UserError(f"{path} is damaged ({e}); {what}") from e
    if not isinstance(data, dict) or not all(isinstance(data.get(k), (int, float)) for k in keys):
        raise UserError(f"{path} is damaged (not the scores or settings it should hold); {what}")
    return data


def base_scores(settings: StudySettings, out: Path) -> dict:
    path = out / "base-eval.json"
    if path.is_file():
        return _read_json(path, SCORE_KEYS)
    scores = _evaluate_run(settings, None, None)
    with atomic_output(path, force=True) as tmp:
        tmp.write_text(json.dumps(scores, indent=2) + "\n")
    return scores


def run_one(settings: StudySettings, spec: RunSpec, seed: int, run_dir: Path, progress: bool):
    """Train (or resume, or skip) one run and score it; returns its outcome."""

    eval_path = run_dir / EVAL_FILE
    if eval_path.is_file():
        return _outcome_from(run_dir, spec, seed, _read_json(eval_path, SCORE_KEYS))
    cfg = train_config(settings, spec, seed)
    resume = (run_dir / "checkpoint.pt").is_file()
    result = train(cfg, run_dir, resume=resume, force=not resume, progress=progress)
    if result.status == "interrupted":  # checkpointed: the same command continues the study
        raise UserError(
            f"{run_dir.name}: {result.message.split(':')[0]}; rerun the study to continue"
        )
    adapters = spec.mode != "full"  # lora, difffit: an adapter file
    trained = run_dir / ("adapter.safetensors" if adapters else "model.safetensors")
    scores = _evaluate_run(settings, trained if adapters else None, None if adapters else trained)
    with atomic_output(eval_path, force=True) as tmp:
        tmp.write_text(json.dumps(scores, indent=2) + "\n")
    return _outcome_from(run_dir, spec, seed, scores)


def check_run(settings: StudySettings, spec: RunSpec) -> None:
    """The run's training settings as `adapt train` checks them, its spec named on failure."""
    try:
        config = train_config(settings, spec, 0).resolved()
        check_loss_files(config.loss, config.vgg_weights, config.dists_weights)
    except UserError as e:
        raise UserError(f"run spec {spec.text!r}: {e}") from None


def check_budget(settings: StudySettings, spec: RunSpec, model) -> None:
    """A rank-aware run's budget as its allocation would take it (the budget parsed, then
    shared among unscored sites), its spec named on failure: refused before any run trains."""
    if not spec.rank_aware:
        return
    config = train_config(settings, spec, 0)
    a = config.allocation
    try:
        params, _ = parse_budget(a.budget, model, config.targets)
        sites = target_sites(model, config.targets)
        scores = dict.fromkeys((s.name for s in sites), 0.0)
        allocate(sites, scores, params, a.r_min, a.r_max, a.allocator)
    except UserError as e:
        raise UserError(f"run spec {spec.text!r}: {e}") from None


def checked_model(settings: StudySettings, specs: list[RunSpec]):
    """The base model's facts, once every rank-aware spec's budget is checked against it."""
    model = load_model(settings.model)
    for spec in specs:
        check_budget(settings, spec, model)
    return model_info(model)


def check_settings(settings: StudySettings, out: Path, force: bool) -> None:
    """A folder holds one study: the same settings, or --force to start it over."""
    path = out / SETTINGS_FILE
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file; a study writes a folder")
    check_outside_inputs(out, [*settings.data, settings.val], "--out")  # plots, runs: not images
    if path.is_file():
        old = _read_json(path) if not force else {}
        if old != settings.comparable() and not force:
            changed = sorted(
                k for k in settings.comparable() if old.get(k) != settings.comparable()[k]
            )
            hint = ""
            if changed == ["score_warmup"] and "score_warmup" not in old:
                hint = " (it scored at initialisation: --score-warmup 0 continues it)"
            raise UserError(
                f"{out} holds a study with other settings ({', '.join(changed) or 'unknown'})"
                f"{hint}; give the same settings to continue it, or --force to start over"
            )
    elif out.is_dir() and any(out.iterdir()) and not force:
        raise UserError(f"{out} is not empty and holds no study (use --force to use it anyway)")


def _clear(out: Path) -> None:
    """--force on a study with other settings: remove the study's own files only."""

    for name in (STUDY_FILE, "study.md", "base-eval.json", "params.png", "curves.png"):
        (out / name).unlink(missing_ok=True)
    for child in out.iterdir():
        if child.is_dir() and (child / "config.json").is_file() and "-s" in child.name:
            shutil.rmtree(child)


def run_study(
    settings: StudySettings,
    out: str | os.PathLike,
    force: bool = False,
    progress: bool = True,
    say: Callable[[str], None] = print,
) -> dict:
    """Run (or continue) the grid and write study.json, study.md and the plots."""
    settings = settings.checked()
    specs = parse_specs(",".join(settings.runs))
    out = Path(out)
    check_settings(settings, out, force)
    check_base_weights(settings.model, settings.allow_random_base)  # named once, not per run
    for spec in specs:  # a run's loss options that do not fit are named before any run
        check_run(settings, spec)

    info = checked_model(settings, specs)  # a bad model fails before anything is written
    check_patch(settings.patch, info)  # so do crops the model cannot take and empty folders
    data.scan(settings.data, info.scale, settings.patch, None, None, False)

    with leave_as_found(out) as start:  # bad data or validation folders leave no trace
        out.mkdir(parents=True, exist_ok=True)
        path = out / SETTINGS_FILE
        try:
            old = _read_json(path) if path.is_file() else None
        except UserError:  # damaged: check_settings let it through only with --force
            old = {}
        if old is not None and old != settings.comparable():
            _clear(out)
        with atomic_output(path, force=True) as tmp:
            tmp.write_text(json.dumps(settings.comparable(), indent=2) + "\n")
        for note in study_metrics(settings.device)[1]:
            say(f"note: {note}")
        base = base_scores(settings, out)
        start.keep()
    jobs = [(s, seed) for s in specs for seed in range(settings.seeds)]
    outcomes: list[RunOutcome] = []
    spent, trained_iters = 0.0, 0
    for i, (spec, seed) in enumerate(jobs):
        run_dir = out / f"{spec.folder}-s{seed}"
        left = (len(jobs) - i) * settings.iters
        eta = f", about {duration(left * spent / trained_iters)} left" if trained_iters else ""
        say(f"[{i + 1}/{len(jobs)}] {spec.text} seed {seed} -> {run_dir}{eta}")
        t0 = time.perf_counter()
        done_before = (run_dir / EVAL_FILE).is_file()
        outcomes.append(run_one(settings, spec, seed, run_dir, progress))
        if not done_before:
            spent += time.perf_counter() - t0
            trained_iters += settings.iters
    report = summarise(settings, specs, base, outcomes)
    write_outputs(out, report, outcomes)
    say(f"wrote {out / 'study.md'} and {out / STUDY_FILE}")
    return report


def study_settings(model: str, data: list[str], runs: list[str], options: dict) -> StudySettings:
    """The StudySettings of `adapt study`'s parsed options (the allocation options among them,
    None where not given)."""
    given = {k: options.pop(k) for k in AllocationSettings.names() if k in options}
    allocation = study_allocation(given, options["batch"], options["patch"])
    for name in ("scaling", "targets"):  # not given: the StudySettings default
        if options.get(name) is None:
            options.pop(name, None)
    return StudySettings(model=model, data=data, runs=runs, allocation=allocation, **options)
