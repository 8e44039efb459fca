"""The step loop: `train(config, run_dir)` runs a `Trainer`, which sets a run up, trains,
validates and checkpoints.

What it reports goes to callbacks (adaptsr.adapt.train.callbacks); what it must restore to
continue goes through TrainState (adaptsr.adapt.train.state).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from adaptsr import kernels
from adaptsr.adapt import data, lr_batches
from adaptsr.adapt.data import derive_seed
from adaptsr.adapt.gan import GanTraining
from adaptsr.adapt.losses.objective import build_objective
from adaptsr.adapt.losses.spec import parse_loss
from adaptsr.adapt.models import model_info
from adaptsr.adapt.rankmap import write_rank_map
from adaptsr.adapt.train import data_record, graphs, val_images
from adaptsr.adapt.train.batches import training_batches
from adaptsr.adapt.train.callbacks import Callback, Callbacks, JsonlLog, ProgressBar, TensorBoard
from adaptsr.adapt.train.config import TrainConfig, clear_previous_run, prepare_run_dir
from adaptsr.adapt.train.distributed import Dist, _any, dist_from_env, resolve_device
from adaptsr.adapt.train.ema import WeightEMA
from adaptsr.adapt.train.model import (
    build_base,
    make_scheduler,
    make_trainable,
    save_outputs,
    train_mode,
    training_ranks,
    validate,
)
from adaptsr.adapt.train.signals import StopFlag
from adaptsr.adapt.train.state import TrainState, new_run_id, read_run_id, seed_all
from adaptsr.adapt.train.step_stats import StepStats
from adaptsr.core.errors import UserError
from adaptsr.core.fileio import (
    FolderStart,
    atomic_output,
    check_outside_inputs,
    leave_as_found,
)
from adaptsr.core.folder_lock import lock_folder


@dataclass
class Result:
    iteration: int
    status: str  # finished, interrupted
    output: Path | None
    best: dict | None
    message: str


def train(
    config: TrainConfig,
    run_dir: str | os.PathLike,
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
    callbacks: Sequence[Callback] = (),
    resume_changed_data: bool = False,
) -> Result:
    """Train as configured, writing into run_dir; resume continues from its checkpoint, and
    refuses training data changed since the run started unless `resume_changed_data`.

    `callbacks` are called on the main process after the log, TensorBoard and progress bar.
    """
    cfg = config.resolved()
    run_dir = Path(run_dir)
    if resume_changed_data and not resume:
        raise UserError(f"{data_record.ACCEPT_FLAG} goes with --resume")
    folders = [data.parse_source(s).path for s in cfg.data] + [cfg.lr_dir, cfg.hr_dir, cfg.val]
    check_outside_inputs(run_dir, folders, "--out")  # its files would be read as training data
    d = dist_from_env()
    device = resolve_device(cfg.device, d)
    own_group = d.world > 1 and not dist.is_initialized()
    if own_group:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        with contextlib.ExitStack() as stack:
            folder = FolderStart(run_dir)  # non-main processes write nothing
            if d.main:  # a failed start leaves the folder as found; one run at a time
                folder = stack.enter_context(leave_as_found(run_dir))
                stack.enter_context(lock_folder(run_dir, "training run"))
                prepare_run_dir(run_dir, resume, force)
            if d.world > 1:
                dist.barrier()
            trainer = Trainer(cfg, run_dir, resume, progress, d, device, callbacks, folder)
            trainer.accept_changed_data = resume_changed_data
            return trainer.run()
    finally:
        if own_group:
            dist.destroy_process_group()


def check_patch(patch: int, info) -> None:
    """Refuse an HR crop size whose LR crops the model cannot take."""
    lr_patch, step = patch // info.scale, max(1, info.multiple_of)
    least = max(info.min_size, step, 1)
    if patch % info.scale or lr_patch < least or lr_patch % step:
        rule = f"LR crops of at least {least} px" + (f", a multiple of {step}" if step > 1 else "")
        raise UserError(
            f"--patch {patch} gives LR crops of {patch / info.scale:g} px; {info.arch} "
            f"x{info.scale} needs {rule} (--patch {least * info.scale}, for example)"
        )


class Trainer:
    """One run on one process: `setup` checks the inputs and builds the model, data and state
    (writing the run's first files only once every check passed), `step` trains one
    iteration (reporting to the callbacks, validating and checkpointing when due), and `run`
    steps to the end or to a stop signal."""

    def __init__(
        self,
        cfg: TrainConfig,
        run_dir: Path,
        resume: bool,
        progress: bool,
        d: Dist,
        device: torch.device,
        extra: Sequence[Callback] = (),
        folder: FolderStart | None = None,
    ):
        self.cfg, self.run_dir, self.resume, self.progress = cfg, run_dir, resume, progress
        self.d, self.device, self.extra = d, device, list(extra)
        self.folder = folder if folder is not None else FolderStart(run_dir)
        self.say = _printer(d, progress)
        self.ckpt_path = run_dir / "checkpoint.pt"
        self.callbacks = Callbacks([])
        self.last_saved: int | None = None  # the iteration of the last checkpoint written
        self.accept_changed_data = False  # --resume-changed-data

    # -- setup ---------------------------------------------------------------------------------

    def setup(self) -> Result | None:
        """Everything the steps need; a Result when a resumed run has nothing left to do."""
        cfg, d = self.cfg, self.d
        graphs.check_device(cfg.cuda_graphs, self.device)
        self.model = build_base(cfg).to(self.device)
        self.info = model_info(self.model)
        check_patch(cfg.patch, self.info)
        score_entries = self._scan()
        self.data_files = data_record.fingerprint(self.found, self.val_entries)
        self.record_data = not self.resume or data_record.check_resumed_data(
            self.run_dir, self.data_files, self.accept_changed_data, self.say
        )
        allocation = training_ranks(
            self.model, cfg, score_entries, self.found.paired, self.run_dir, self.resume, d,
            self.device, self.progress,
        )  # fmt: skip
        self.params = make_trainable(self.model, cfg, allocation.ranks if allocation else None)
        train_mode(self.model, cfg)
        self.optimizer = torch.optim.Adam(self.params, lr=cfg.lr)
        self.scheduler = make_scheduler(self.optimizer, cfg)
        self._objective()
        seed = derive_seed(cfg.seed, 2, d.rank)
        self.degrader = lr_batches.run_degrader(
            self.found, cfg.degradation, self.info.scale, seed, self.device
        )
        finished = self._state()
        if finished is not None:
            return finished
        self._loader()
        self._start_files(allocation)
        self._callbacks()
        self.stats = StepStats(self.device, d, self.iteration)
        return None

    def _objective(self) -> None:
        """--loss: its objective, the discriminator of a gan term, and the --ema average."""
        cfg, device = self.cfg, self.device
        gan = "gan" in dict(parse_loss(cfg.loss))
        self.gan = GanTraining(device, derive_seed(cfg.seed, 7), self.d.world) if gan else None
        self.objective = build_objective(
            cfg.loss, cfg.vgg_weights, cfg.gan_start, self.gan, device, cfg.dists_weights
        )
        self.ema = WeightEMA(self.params, cfg.ema) if cfg.ema else None

    def _averaged(self):
        """The --ema weights in the model for a block (validation, saved outputs)."""
        return self.ema.swapped() if self.ema is not None else contextlib.nullcontext()

    def _scan(self) -> list:
        """The training and validation images; returns the ones a --rank-aware run scores."""
        cfg, scale = self.cfg, self.info.scale
        found = data.scan(cfg.data, scale, cfg.patch, cfg.lr_dir, cfg.hr_dir, cfg.strict)
        self.found = found
        self.train_entries, self.val_entries = data.split_validation(found, cfg.val_split)
        if cfg.val:
            self.val_entries = data.validation_entries(cfg.val, scale, cfg.strict)
        held = f", {len(self.val_entries)} for validation" if self.val_entries else ""
        self.say(f"data: {found.summary()}{held}")
        scoring = cfg.rank_aware and not self.resume
        if scoring and found.mixed:
            raise UserError(
                "--rank-aware scores one kind of data: score one source with `adapt allocate` "
                "and train the mix with --rank-map"
            )
        score_patch = cfg.allocation.score_patch
        if scoring and score_patch < cfg.patch:
            # score the images `adapt allocate` would: those at least the scoring crop (a
            # larger crop needs no scan: entry_batches drops the training images smaller)
            scored = data.scan(cfg.data, scale, score_patch, cfg.lr_dir, cfg.hr_dir, False)
            return data.split_validation(scored, cfg.val_split)[0]
        return self.train_entries

    def _state(self) -> Result | None:
        """The TrainState, fresh or read back from the checkpoint."""
        cfg, d = self.cfg, self.d
        state = TrainState(
            self.model, cfg.mode, self.optimizer, self.scheduler, self.degrader, d, cfg.seed
        )
        state.extras = {k: v for k, v in (("gan", self.gan), ("ema", self.ema)) if v is not None}
        self.state = state
        state.run_id = read_run_id(self.run_dir) if self.resume else new_run_id()
        if self.resume:
            state.load(self.ckpt_path)
            if not state.exact:
                was = state.saved_world
                self.say(f"note: resumed on {d.world} processes (was {was}): not bit-exact")
            if state.iteration >= cfg.iters:
                done = f"{self.run_dir} already finished"
                return Result(state.iteration, "finished", None, state.best, done)
            self.last_saved = state.iteration
        else:
            seed_all(derive_seed(cfg.seed, 1, d.rank))
        self.iteration = state.iteration
        return None

    def _loader(self) -> None:
        """Validation pairs, the network the steps run (DDP, compiled) and the batches."""
        cfg, d, device, info = self.cfg, self.d, self.device, self.info
        self.val_pairs = []
        if self.val_entries and d.main:
            self.val_pairs = data.validation_pairs(
                self.val_entries, info.scale, cfg.degradation, derive_seed(cfg.seed, 5), device
            )
        net = self.model
        if d.world > 1:
            ids = [device.index] if device.type == "cuda" else None
            net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        if cfg.compile or cfg.cuda_graphs:
            net = graphs.CompiledModel(net, cfg.cuda_graphs, self.say)
        self.net = net
        entries, found = self.train_entries, self.found
        dataset = data.CropDataset(entries, cfg.patch, info.scale, cfg.flips, found.mixed)
        weights = data.sampling_weights(entries, found)
        # micro-batches of --batch: the samples of an optimizer step are those one batch of
        # batch * accumulate takes (the same data order)
        parts = cfg.accumulate
        start, stop = self.iteration * parts, cfg.iters * parts
        plan = data.BatchPlan(len(entries), cfg.batch, cfg.seed, start, stop, d, weights)
        self.batches = training_batches(dataset, plan, cfg.workers, device.type == "cuda")
        autocast = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
        self.autocast = autocast and info.supports_bfloat16

    def _start_files(self, allocation) -> None:
        """Only now, every check above passed: a failed start costs no previous run."""
        cfg, run_dir = self.cfg, self.run_dir
        self.log = JsonlLog(run_dir / "log.jsonl")
        if self.d.main:
            if not self.resume:
                clear_previous_run(run_dir)
                if allocation is not None:
                    write_rank_map(allocation, run_dir / "rank_map.json", force=True, heatmap=False)
                facts = {"run_id": self.state.run_id}
                sources = data_record.source_degradations(cfg.data)
                if sources:  # the settings of --data DIR:FILE, not only the file's path
                    facts["data_degradations"] = sources
                _write_json(run_dir / "config.json", {**cfg.to_dict(), **facts})
            if self.record_data:
                data_record.write_record(run_dir, self.data_files)
            damaged = self.log.trim(self.iteration)
            if damaged:
                self.say(f"note: {self.log.path}: left out {damaged} damaged line(s)")
            self.folder.keep()
        if allocation is not None and cfg.rank_aware and not self.resume:
            sites = len(allocation.adapted)
            self.say(f"rank-aware: {sites} adapted sites, rank map in {run_dir / 'rank_map.json'}")

    def _callbacks(self) -> None:
        """The log, TensorBoard and progress bar, then the caller's: main process only."""
        if not self.d.main:
            return
        callbacks: list[Callback] = [self.log]
        board = TensorBoard.create(self.run_dir / "tensorboard")
        if board is not None:
            callbacks.append(board)
        if self.cfg.val_save_images:
            callbacks.append(val_images.ValImages(self.run_dir))
        if self.progress:
            callbacks.append(ProgressBar(self.cfg.iters))
        self.callbacks = Callbacks(callbacks + self.extra)

    # -- steps ---------------------------------------------------------------------------------

    def step(self) -> None:
        """One optimizer step over --accumulate micro-batches of --batch (each loss scaled by
        1/accumulate, so the step is the mean over all of them), its reports, and the
        validation and checkpoint when due. The schedule, the EMA and the discriminator step
        once per optimizer step; an iteration is one optimizer step."""
        cfg, stats, parts = self.cfg, self.stats, self.cfg.accumulate
        self.iteration += 1
        it = self.iteration
        gan = self.gan if self.objective.gan_active(it) else None
        loss, wait = None, 0.0
        for part in range(parts):
            t0 = time.perf_counter()
            batch = next(self.batches)
            wait += time.perf_counter() - t0
            with self._gradient_sync(part == parts - 1):
                value = self._backward(batch, it, part, gan)
            loss = value if loss is None else loss + value
        self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update()
        if gan is not None:
            gan.apply()
        stats.add(loss / parts if parts > 1 else loss, wait)  # on the device: no host sync
        self.callbacks.on_step(it)
        if it % max(1, cfg.log_every) == 0 or it == cfg.iters:
            lr_now = self.optimizer.param_groups[0]["lr"]
            self.callbacks.on_log({"iter": it, **stats.flush(self._check), "lr": lr_now})
        due = cfg.val_every and it % cfg.val_every == 0
        if self.val_pairs and (due or it == cfg.iters):
            self._validate(it)
        if (cfg.save_every and it % cfg.save_every == 0) or it == cfg.iters:
            self.checkpoint(it)

    def _backward(self, batch: dict, it: int, part: int, gan) -> torch.Tensor:
        """The gradients of one micro-batch, added to those of the step's earlier ones (and the
        discriminator's, when its term is active); returns the micro-batch's loss."""
        device, parts = self.device, self.cfg.accumulate
        hr = batch["hr"].to(device, non_blocking=True)
        if "lr" in batch:
            lr = batch["lr"].to(device, non_blocking=True)
        else:
            with self.stats.degrading(), torch.no_grad():
                lr, degraded = lr_batches.batch_lr(batch, hr, self.degrader, device)
            self.stats.degraded += degraded
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.autocast)
        reference = None
        if self.objective.needs_reference:  # the EMA model's output (ldl), before the graph
            with torch.no_grad(), self.ema.swapped(), autocast:
                reference = self.net(lr).float()
        with autocast:
            sr = self.net(lr)
        loss = self.objective(sr.float(), hr, it, reference)
        if part == 0:  # after the first forward: a compiled model's trial leaves gradients
            self.optimizer.zero_grad(set_to_none=True)
        (loss / parts if parts > 1 else loss).backward()
        if gan is not None:
            gan.backward(sr.detach().float(), hr, 1 / parts)
        return loss.detach()

    def _gradient_sync(self, last: bool):
        """Under DDP, the processes average gradients once per optimizer step: at the backward
        of its last micro-batch (a compiled model syncs at every one: slower, the same sum)."""
        ddp = self.net if isinstance(self.net, nn.parallel.DistributedDataParallel) else None
        return ddp.no_sync() if ddp is not None and not last else contextlib.nullcontext()

    def _validate(self, it: int) -> None:
        keep, pictures = self.cfg.val_save_images, []

        def show(index: int, sr: torch.Tensor) -> None:  # --val-save-images: the first N
            if index < keep:
                name, lr, hr = self.val_pairs[index]
                pictures.append(val_images.picture(name, lr, sr, hr))

        with self._averaged():
            scores = validate(self.model, self.val_pairs, self.device, self.autocast, show)
            state = self.state
            improved = state.best is None or scores["psnr_y"] > state.best["psnr_y"]
            if improved:
                state.best = {"iter": it, **scores}
                save_outputs(self.model, self.cfg, self.run_dir, suffix="-best")
        self.callbacks.on_validate({"event": "val", "iter": it, **scores, "best": improved})
        if pictures:
            self.callbacks.on_val_images(it, pictures)

    def _check(self, losses: list[float], first: int) -> None:
        """Stop at a non-finite loss (iteration `first` + index); the checkpoints were
        written before it."""
        for i, value in enumerate(losses):
            if not math.isfinite(value):
                raise _non_finite(f"loss ({value})", first + i, self.last_saved, self.ckpt_path)

    def checkpoint(self, iteration: int) -> None:
        self.stats.read(self._check)  # no checkpoint after a non-finite loss
        if not all(bool(torch.isfinite(p).all()) for p in self.params):
            raise _non_finite("weights", iteration, self.last_saved, self.ckpt_path)
        self.state.iteration = iteration
        self.state.save(self.ckpt_path)
        if self.d.main:
            with self._averaged():
                save_outputs(self.model, self.cfg, self.run_dir)
        self.last_saved = iteration

    # -- the run -------------------------------------------------------------------------------

    def run(self) -> Result:
        """Set up, then step to cfg.iters or to Ctrl-C / SIGTERM (checkpointed first)."""
        finished = self.setup()
        if finished is not None:
            return finished
        cfg, d = self.cfg, self.d
        status = "finished"
        try:
            self.callbacks.on_start(self._start_record())
            with StopFlag() as stop, kernels.use_backend(cfg.kernels):
                while self.iteration < cfg.iters:
                    self.step()
                    if _any(stop.set, d, self.device) and self.iteration < cfg.iters:
                        if self.last_saved != self.iteration:
                            self.checkpoint(self.iteration)
                        status = "interrupted"
                        break
            event = status if status == "interrupted" else "done"
            self.callbacks.on_end({"event": event, "iter": self.iteration})
        finally:
            self.callbacks.close()
        return self._result(status)

    def _start_record(self) -> dict:
        return {
            "event": "resume" if self.resume else "start",
            "iter": self.iteration,
            "world": self.d.world,
            "device": str(self.device),
            "trainable": sum(p.numel() for p in self.params),
            "images": len(self.train_entries),
            "val_images": len(self.val_entries),
            "skipped_corrupt": len(self.found.corrupt),
            "skipped_small": len(self.found.too_small),
        }

    def _result(self, status: str) -> Result:
        it, best, run_dir = self.iteration, self.state.best, self.run_dir
        if status == "interrupted":
            message = (
                f"interrupted at iteration {it}: checkpoint saved; continue with "
                f"`adapt train --out {run_dir} --resume`"
            )
            return Result(it, status, None, best, message)
        adapters = self.cfg.mode in ("lora", "difffit")
        name = "adapter.safetensors" if adapters else "model.safetensors"
        return Result(it, status, run_dir / name, best, f"wrote {run_dir / name}")


def _non_finite(what: str, it: int, last_saved: int | None, path: Path) -> UserError:
    kept = (
        f"the last good checkpoint (iteration {last_saved}) is kept in {path}"
        if last_saved is not None
        else "no checkpoint had been written yet"
    )
    return UserError(
        f"{what} is not finite at iteration {it}: training stopped; {kept} (try a lower --lr)"
    )


def _write_json(path: Path, values: dict) -> None:
    with atomic_output(path, force=True) as tmp:
        tmp.write_text(json.dumps(values, indent=2) + "\n")


def _printer(d: Dist, enabled: bool):
    def say(text: str) -> None:
        if d.main and enabled:
            print(text, file=sys.stderr)

    return say


_Stats = StepStats  # the name tests patch
