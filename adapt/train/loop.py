"""The step loop: `train(config, run_dir)` sets a run up, trains, validates and checkpoints.

What it reports goes to callbacks (adaptsr.adapt.train.callbacks); what it must restore to
continue goes through TrainState (adaptsr.adapt.train.state).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from adaptsr.adapt.data import derive_seed
from adaptsr.adapt.rankmap import write_rank_map
from adaptsr.adapt.train import graphs
from adaptsr.adapt.train.callbacks import Callback, JsonlLog, ProgressBar, TensorBoard
from adaptsr.adapt.train.config import TrainConfig, clear_previous_run, prepare_run_dir
from adaptsr.adapt.train.distributed import Dist, _any, dist_from_env, resolve_device
from adaptsr.adapt.train.model import (
    build_base,
    make_scheduler,
    make_trainable,
    run_allocation,
    save_outputs,
    train_mode,
    validate,
)
from adaptsr.adapt.train.state import TrainState, new_run_id, read_run_id, seed_all
from adaptsr.core.errors import UserError
from adaptsr.core.fileio import FolderStart, leave_as_found, lock_folder


@dataclass
class Result:
    iteration: int
    status: str  # finished, interrupted
    output: Path | None
    best: dict | None
    message: str


class _StopFlag:
    """Set by Ctrl-C (SIGINT) or SIGTERM: the loop checkpoints and stops; a second signal
    interrupts at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.set = False
        self._previous = {}

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.set:
            raise KeyboardInterrupt
        self.set = True

    def __exit__(self, *exc):
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)


def train(
    config: TrainConfig,
    run_dir: str | os.PathLike,
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
    callbacks: Sequence[Callback] = (),
) -> Result:
    """Train as configured, writing into run_dir; resume continues from its checkpoint.

    `callbacks` are called on the main process after the log, TensorBoard and progress bar.
    """
    import torch.distributed as dist

    cfg = config.resolved()
    run_dir = Path(run_dir)
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
            return _train(cfg, run_dir, resume, progress, d, device, list(callbacks), folder)
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


def _train(
    cfg: TrainConfig,
    run_dir: Path,
    resume: bool,
    progress: bool,
    d: Dist,
    device,
    extra: list[Callback],
    folder: FolderStart,
) -> Result:
    from adaptsr import kernels
    from adaptsr.adapt import data
    from adaptsr.adapt.models import model_info

    graphs.check_device(cfg.cuda_graphs, device)
    model = build_base(cfg).to(device)
    info = model_info(model)
    check_patch(cfg.patch, info)

    found = data.scan(cfg.data, info.scale, cfg.patch, cfg.lr_dir, cfg.hr_dir, cfg.strict)
    train_entries, val_entries = data.split_validation(found, cfg.val_split)
    if cfg.val:
        val_entries = data.validation_entries(cfg.val, info.scale, cfg.strict)
    say = _printer(d, progress)
    held = f", {len(val_entries)} for validation" if val_entries else ""
    say(f"data: {found.summary()}{held}")

    if cfg.rank_aware and not resume and found.mixed:
        raise UserError(
            "--rank-aware scores one kind of data: score one source with `adapt allocate` "
            "and train the mix with --rank-map"
        )
    score_entries = train_entries
    if cfg.rank_aware and not resume and cfg.score_patch < cfg.patch:
        # score the images `adapt allocate` would: those at least the scoring crop (a larger
        # crop needs no scan: entry_batches drops the training images smaller than it)
        scored = data.scan(cfg.data, info.scale, cfg.score_patch, cfg.lr_dir, cfg.hr_dir, False)
        score_entries = data.split_validation(scored, cfg.val_split)[0]
    allocation = run_allocation(
        model, cfg, score_entries, found.paired, run_dir, resume, d, device, progress
    )
    params = make_trainable(model, cfg, allocation.ranks if allocation else None)
    train_mode(model, cfg)

    optimizer = torch.optim.Adam(params, lr=cfg.lr)
    scheduler = make_scheduler(optimizer, cfg)
    degrader = data.run_degrader(
        found, cfg.degradation, info.scale, derive_seed(cfg.seed, 2, d.rank), device
    )
    state = TrainState(model, cfg.mode, optimizer, scheduler, degrader, d, cfg.seed)
    state.run_id = read_run_id(run_dir) if resume else new_run_id()
    ckpt_path = run_dir / "checkpoint.pt"
    if resume:
        state.load(ckpt_path)
        if not state.exact:
            was = state.saved_world
            say(f"note: resumed on {d.world} processes (was {was}): not bit-exact")
        if state.iteration >= cfg.iters:
            done = f"{run_dir} already finished"
            return Result(state.iteration, "finished", None, state.best, done)
    else:
        seed_all(derive_seed(cfg.seed, 1, d.rank))
    start = state.iteration

    log = JsonlLog(run_dir / "log.jsonl")

    val_pairs = []
    if val_entries and d.main:
        val_pairs = data.validation_pairs(
            val_entries, info.scale, cfg.degradation, derive_seed(cfg.seed, 5), device
        )

    net = model
    if d.world > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if cfg.compile or cfg.cuda_graphs:
        net = graphs.CompiledModel(net, cfg.cuda_graphs, say)
    dataset = data.CropDataset(train_entries, cfg.patch, info.scale, cfg.flips, found.mixed)
    weights = data.sampling_weights(train_entries, found)
    plan = data.BatchPlan(len(train_entries), cfg.batch, cfg.seed, start, cfg.iters, d, weights)
    batches = iter(data.loader(dataset, plan, cfg.workers, device.type == "cuda"))
    autocast = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    autocast = autocast and info.supports_bfloat16

    if d.main:  # only now, every check above passed: a failed start costs no previous run
        if not resume:
            clear_previous_run(run_dir)
            if allocation is not None:
                write_rank_map(allocation, run_dir / "rank_map.json", force=True, heatmap=False)
            _write_json(run_dir / "config.json", {**cfg.to_dict(), "run_id": state.run_id})
        log.trim(start)
        folder.keep()
    if allocation is not None and cfg.rank_aware and not resume:
        rank_file = run_dir / "rank_map.json"
        say(f"rank-aware: {len(allocation.adapted)} adapted sites, rank map in {rank_file}")

    callbacks: list[Callback] = []
    if d.main:
        callbacks.append(log)
        board = TensorBoard.create(run_dir / "tensorboard")
        if board is not None:
            callbacks.append(board)
        if progress:
            callbacks.append(ProgressBar(cfg.iters))
        callbacks += extra

    def report(hook: str, *args) -> None:
        for callback in callbacks:
            getattr(callback, hook)(*args)

    last_saved = start if resume else None
    stats = _Stats(device, d, start)

    def check(losses: list[float], first: int) -> None:
        """Stop at a non-finite loss (iteration `first` + index); the checkpoints were
        written before it."""
        for i, value in enumerate(losses):
            if not math.isfinite(value):
                raise _non_finite(f"loss ({value})", first + i, last_saved, ckpt_path)

    def checkpoint(iteration: int) -> None:
        nonlocal last_saved
        stats.read(check)  # no checkpoint after a non-finite loss
        if not all(bool(torch.isfinite(p).all()) for p in params):
            raise _non_finite("weights", iteration, last_saved, ckpt_path)
        state.iteration = iteration
        state.save(ckpt_path)
        if d.main:
            save_outputs(model, cfg, run_dir)
        last_saved = iteration

    it = start
    status = "finished"
    try:
        report(
            "on_start",
            {
                "event": "resume" if resume else "start",
                "iter": start,
                "world": d.world,
                "device": str(device),
                "trainable": sum(p.numel() for p in params),
                "images": len(train_entries),
                "val_images": len(val_entries),
                "skipped_corrupt": len(found.corrupt),
                "skipped_small": len(found.too_small),
            },
        )
        with _StopFlag() as stop, kernels.use_backend(cfg.kernels):
            while it < cfg.iters:
                t0 = time.perf_counter()
                try:
                    batch = next(batches)
                except UserError as e:  # from a loader worker: keep the original last line
                    last = str(e).strip().splitlines()[-1]
                    raise UserError(last.removeprefix("adaptsr.core.errors.UserError: ")) from None
                t1 = time.perf_counter()
                hr = batch["hr"].to(device, non_blocking=True)
                if "lr" in batch:
                    lr = batch["lr"].to(device, non_blocking=True)
                else:
                    with stats.degrading(), torch.no_grad():
                        lr, degraded = data.batch_lr(batch, hr, degrader, device)
                    stats.degraded += degraded
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                    sr = net(lr)
                loss = F.l1_loss(sr.float(), hr)
                it += 1
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                stats.add(loss.detach(), t1 - t0)  # stays on the device: no host sync per step
                report("on_step", it)
                if it % max(1, cfg.log_every) == 0 or it == cfg.iters:
                    lr_now = optimizer.param_groups[0]["lr"]
                    report("on_log", {"iter": it, **stats.flush(check), "lr": lr_now})
                due = cfg.val_every and it % cfg.val_every == 0
                if val_pairs and (due or it == cfg.iters):
                    scores = validate(model, val_pairs, device, autocast)
                    improved = state.best is None or scores["psnr_y"] > state.best["psnr_y"]
                    if improved:
                        state.best = {"iter": it, **scores}
                        save_outputs(model, cfg, run_dir, suffix="-best")
                    record = {"event": "val", "iter": it, **scores, "best": improved}
                    report("on_validate", record)
                if (cfg.save_every and it % cfg.save_every == 0) or it == cfg.iters:
                    checkpoint(it)
                if _any(stop.set, d, device) and it < cfg.iters:
                    if last_saved != it:
                        checkpoint(it)
                    status = "interrupted"
                    break
        report("on_end", {"event": status if status == "interrupted" else "done", "iter": it})
    finally:
        report("close")
    if status == "interrupted":
        message = (
            f"interrupted at iteration {it}: checkpoint saved; continue with "
            f"`adapt train --out {run_dir} --resume`"
        )
        return Result(it, status, None, state.best, message)
    name = "adapter.safetensors" if cfg.mode == "lora" else "model.safetensors"
    return Result(it, status, run_dir / name, state.best, f"wrote {run_dir / name}")


def _non_finite(what: str, it: int, last_saved: int | None, path: Path) -> UserError:
    kept = (
        f"the last good checkpoint (iteration {last_saved}) is kept in {path}"
        if last_saved is not None
        else "no checkpoint had been written yet"
    )
    return UserError(
        f"{what} is not finite at iteration {it}: training stopped; {kept} (try a lower --lr)"
    )


class _Stats:
    """Loss and data-path timings over one logging interval.

    The losses stay on the device as they come (and the degradation is timed with CUDA
    events), so a step never waits for the GPU: they are copied to the host in one transfer
    when read, at a log interval or before a checkpoint.
    """

    def __init__(self, device: torch.device, d: Dist, start: int):
        self.device, self.dist = device, d
        self.events = device.type == "cuda"
        self.iteration = start  # of the last loss added
        self.reset()

    def reset(self):
        self.pending, self.losses, self.wait, self.degrade, self.degraded = [], [], 0.0, 0.0, 0
        self.marks = []
        self.t0 = time.perf_counter()

    def add(self, loss: torch.Tensor, wait: float):
        self.pending.append(loss)
        self.wait += wait
        self.iteration += 1

    @contextlib.contextmanager
    def degrading(self):
        """Time one degradation: CUDA events on the GPU, the wall clock elsewhere (the caller
        adds the number of images degraded to `degraded`)."""
        if self.events:
            start, end = (torch.cuda.Event(enable_timing=True) for _ in range(2))
            start.record()
            yield
            end.record()
            self.marks.append((start, end))
        else:
            t = time.perf_counter()
            yield
            self.degrade += time.perf_counter() - t

    def read(self, check) -> None:
        """Bring the pending losses to the host (the mean over processes under DDP) and give
        them to `check(losses, first_iteration)`."""
        if not self.pending:
            return
        values = torch.stack(self.pending)
        if self.dist.world > 1:
            import torch.distributed as dist

            dist.all_reduce(values)
            values /= self.dist.world
        first = self.iteration - len(self.pending) + 1
        self.pending = []
        host = values.tolist()  # the one host sync of the interval
        self.losses += host
        check(host, first)

    def flush(self, check) -> dict:
        self.read(check)
        n = len(self.losses)
        elapsed = time.perf_counter() - self.t0
        degrade = self.degrade + sum(s.elapsed_time(e) for s, e in self.marks) / 1000
        record = {
            "loss": sum(self.losses) / n,
            "it_s": n / elapsed if elapsed > 0 else None,
            "data_wait_s": self.wait / n,
        }
        if self.degraded and degrade > 0:
            record["degrade_per_s"] = self.degraded / degrade
        self.reset()
        return record


def _write_json(path: Path, values: dict) -> None:
    from adaptsr.core.fileio import atomic_output

    with atomic_output(path, force=True) as tmp:
        tmp.write_text(json.dumps(values, indent=2) + "\n")


def _printer(d: Dist, enabled: bool):
    def say(text: str) -> None:
        if d.main and enabled:
            print(text, file=sys.stderr)

    return say
