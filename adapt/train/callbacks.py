"""What the training loop reports, and to whom: the JSONL log, TensorBoard and the progress bar
are callbacks, and `train(..., callbacks=[...])` adds more.

The loop calls, on the main process only:

- on_start(record): once, with the `start` or `resume` event (iteration, world, image counts);
- on_step(iteration): after every optimizer step;
- on_log(record): every --log-every iterations and at the last one, with the interval's mean
  loss, lr, it/s and data-path timings;
- on_validate(record): after each validation, the `val` event (psnr_y, ssim_y, best);
- on_val_images(iteration, pictures): after a validation, with --val-save-images N, the first N
  validation images as LR | SR | HR pictures (adaptsr.adapt.train.val_images.ValPicture);
- on_end(record): the `done` or `interrupted` event, when the loop ends without an error;
- close(): always, last, errors included.

Every record has "iter". The base class's methods do nothing, so a callback defines only the
ones it needs. The loop holds its callbacks as one `Callbacks`, which calls each method on every
callback in order: a typed call per event, no event named by a string.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from adaptsr.core.errors import UserError
from adaptsr.core.progress import progress_bar


class Callback:
    def on_start(self, record: dict) -> None:
        """The start or resume event."""

    def on_step(self, iteration: int) -> None:
        """An optimizer step finished; `iteration` counts from 1."""

    def on_log(self, record: dict) -> None:
        """Training statistics of the last interval."""

    def on_validate(self, record: dict) -> None:
        """A validation result."""

    def on_val_images(self, iteration: int, pictures: list) -> None:
        """Pictures of a validation (--val-save-images)."""

    def on_end(self, record: dict) -> None:
        """The done or interrupted event."""

    def close(self) -> None:
        """The loop is over (also after an error)."""


class Callbacks(Callback):
    """Several callbacks as one: each event goes to every callback, in the order given."""

    def __init__(self, callbacks: list[Callback]):
        self.callbacks = list(callbacks)

    def on_start(self, record: dict) -> None:
        for callback in self.callbacks:
            callback.on_start(record)

    def on_step(self, iteration: int) -> None:
        for callback in self.callbacks:
            callback.on_step(iteration)

    def on_log(self, record: dict) -> None:
        for callback in self.callbacks:
            callback.on_log(record)

    def on_validate(self, record: dict) -> None:
        for callback in self.callbacks:
            callback.on_validate(record)

    def on_val_images(self, iteration: int, pictures: list) -> None:
        for callback in self.callbacks:
            callback.on_val_images(iteration, pictures)

    def on_end(self, record: dict) -> None:
        for callback in self.callbacks:
            callback.on_end(record)

    def close(self) -> None:
        for callback in self.callbacks:
            callback.close()


class JsonlLog(Callback):
    """RUN_DIR/log.jsonl: every record, one JSON object per line, with a wall-clock time."""

    def __init__(self, path: Path):
        self.path = path

    def trim(self, iteration: int) -> int:
        """Drop lines written after the checkpoint being resumed (and a line cut short by a
        kill), so the log reads as if the run had never stopped. Damaged lines (not UTF-8,
        not JSON, not a record with an iteration) are dropped too; returns how many."""
        if not self.path.exists():
            return 0
        try:
            text = self.path.read_bytes()
        except OSError as e:
            raise UserError(f"cannot read {self.path}: {e.strerror or e}") from e
        *lines, last = text.split(b"\n")  # `last`: empty, or a line cut short by a kill
        keep, damaged = [], 0
        for line in lines:
            step = _iteration(line)
            if step is None:
                damaged += 1
            elif step <= iteration:
                keep.append(line.decode())
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text("".join(f"{line}\n" for line in keep))
        os.replace(tmp, self.path)
        return damaged

    def write(self, record: dict) -> None:
        record = {**record, "time": round(time.time(), 3)}
        try:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as e:
            raise UserError(f"cannot write {self.path}: {e.strerror or e}") from e

    on_start = on_log = on_validate = on_end = write


def _iteration(line: bytes) -> int | float | None:
    """The iteration of one log line; None for a damaged line."""
    try:
        record = json.loads(line.decode())
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    step = record.get("iter", 0) if isinstance(record, dict) else None
    return step if isinstance(step, (int, float)) and not isinstance(step, bool) else None


class TensorBoard(Callback):
    """The numbers of the log as TensorBoard scalars (val/... for validations, else train/...),
    and --val-save-images pictures as images (val_images/...), step = iteration. `create`
    returns None when the tensorboard package is not installed."""

    def __init__(self, writer):
        self.writer = writer

    @classmethod
    def create(cls, folder: Path) -> TensorBoard | None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional
            return None
        return cls(SummaryWriter(str(folder)))

    def _scalars(self, record: dict, group: str) -> None:
        for key, value in record.items():
            if key != "iter" and type(value) in (int, float):
                self.writer.add_scalar(f"{group}/{key}", value, record["iter"])
        self.writer.flush()

    def on_start(self, record: dict) -> None:
        self._scalars(record, "train")

    def on_log(self, record: dict) -> None:
        self._scalars(record, "train")

    def on_validate(self, record: dict) -> None:
        self._scalars(record, "val")

    def on_val_images(self, iteration: int, pictures: list) -> None:
        for index, pic in enumerate(pictures):  # LR | SR | HR, in validation order
            tag = f"val_images/{index:02d}-{pic.name}"
            self.writer.add_image(tag, pic.rgb, iteration, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class ProgressBar(Callback):
    """A tqdm bar on stderr: it/s, loss, lr and the ETA (plain lines when stderr is a file)."""

    def __init__(self, total: int):
        self.total = total
        self.bar = None

    def on_start(self, record: dict) -> None:
        self.bar = progress_bar(total=self.total, initial=record["iter"], desc="train", unit="it")

    def on_step(self, iteration: int) -> None:
        self.bar.update(1)

    def on_log(self, record: dict) -> None:
        self.bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
