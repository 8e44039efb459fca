"""The resumable state of a run (TrainState) and its checkpoint file.

A checkpoint holds the trainable tensors (adapters, or the whole model), the optimizer and
scheduler, the run's extras (a GAN's discriminator and its optimizer, a moving average of the
weights), every random state (python, numpy, torch CPU and CUDA) and the degrader's generators
of every process, the iteration and the best validation result. Everything a resumed run
depends on is in it, which is what makes a resumed run replay an uninterrupted one exactly.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import secrets
import shutil
from pathlib import Path

import numpy as np
import torch
from torch import nn

from adaptsr.adapt.data import derive_seed
from adaptsr.adapt.models import torch_load_error
from adaptsr.adapt.train.config import ADAPTER_MODES
from adaptsr.adapt.train.distributed import Dist, _gather
from adaptsr.core.errors import UserError

CHECKPOINT_FORMAT = "adaptsr-train-1"


def new_run_id() -> str:
    """A random identity for a new run: written in its config.json and every checkpoint, so a
    checkpoint copied in from another run is refused on --resume."""
    return secrets.token_hex(8)


def read_run_id(run_dir: Path) -> str | None:
    """The run id in RUN_DIR/config.json (None for runs made before run ids)."""
    try:
        value = json.loads((run_dir / "config.json").read_text()).get("run_id")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def rng_state() -> dict:
    """This process's global random states, as tensors and numbers (weights_only loadable)."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": list(random.getstate()[1]),
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    random.setstate((3, tuple(state["python"]), None))


def write_checkpoint(state: dict, path: Path) -> None:
    """torch.save to a temporary file, fsync, rename: a crash or a full disk at any point leaves
    the previous checkpoint intact."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        # torch.save reports a full disk as a RuntimeError of its zip writer, without an errno
        full = getattr(e, "errno", None) == errno.ENOSPC or _disk_full(path.parent)
        if isinstance(e, RuntimeError) and not full:
            raise
        reason = "the disk is full" if full else (getattr(e, "strerror", None) or str(e))
        kept = "the previous checkpoint is intact" if path.exists() else "no checkpoint kept"
        raise UserError(f"cannot write checkpoint {path}: {reason}; {kept}") from e


def _disk_full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < 1 << 20
    except OSError:
        return False


def read_checkpoint(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise torch_load_error(path, e) from e
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path} is not an adaptsr training checkpoint")
    return state


def _describe(t: torch.Tensor) -> str:
    return f"{str(t.dtype).removeprefix('torch.')}{list(t.shape)}"


class TrainState:
    """What a run must restore to continue exactly: the one way checkpoints are made and read.

    `state_dict()` gathers the RNG and degrader states of every process (a collective under
    DDP: every process calls it); `save` writes it from rank 0. `load_state_dict` restores this
    process's streams when the number of processes is unchanged; otherwise it reseeds them from
    (seed, iteration, rank) and sets `exact` to False.
    """

    def __init__(
        self,
        model: nn.Module,
        mode: str,
        optimizer,
        scheduler,
        degrader=None,
        dist: Dist | None = None,
        seed: int = 0,
    ):
        self.model, self.mode = model, mode
        self.optimizer, self.scheduler, self.degrader = optimizer, scheduler, degrader
        self.dist = dist or Dist()
        self.seed = seed
        self.iteration = 0
        self.best: dict | None = None  # {"iter", "psnr_y", "ssim_y"} of the best validation
        self.saved_world: int | None = None  # the checkpoint's process count, once loaded
        self.exact = True
        self.run_id: str | None = None  # the run's identity (config.json), checked on load
        # more state to save and restore, by name: objects with state_dict / load_state_dict
        # (the discriminator and its optimizer, the weights' moving average)
        self.extras: dict[str, object] = {}

    def _own_tensors(self) -> dict[str, torch.Tensor]:
        if self.mode in ADAPTER_MODES:
            return {n: p for n, p in self.model.named_parameters() if p.requires_grad}
        return self.model.state_dict()

    def state_dict(self) -> dict:
        rngs = _gather(rng_state(), self.dist)
        degraders = _gather(self.degrader.state_dict() if self.degrader else None, self.dist)
        return {
            "format": CHECKPOINT_FORMAT,
            "run_id": self.run_id,
            "iteration": self.iteration,
            "mode": self.mode,
            "world": self.dist.world,
            "trainable": {n: t.detach().cpu().clone() for n, t in self._own_tensors().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rngs,
            "degraders": degraders,
            "best": self.best,
            "extras": {name: part.state_dict() for name, part in self.extras.items()},
        }

    def check(self, trainable: dict[str, torch.Tensor], mode: str) -> None:
        """A UserError naming the first tensor whose name, shape or dtype does not fit."""
        if mode != self.mode:
            raise UserError(f"the checkpoint is from a --mode {mode} run, not {self.mode}")
        own = self._own_tensors()
        what = "adapters" if self.mode in ADAPTER_MODES else "weights"
        missing = [n for n in own if n not in trainable]
        if missing:
            raise UserError(
                f"checkpoint {what} do not match this model's {what}: {missing[0]} is missing"
            )
        extra = [n for n in trainable if n not in own]
        if extra:
            raise UserError(
                f"checkpoint {what} do not match this model's {what}: {extra[0]} is not in it"
            )
        for name, tensor in own.items():
            saved = trainable[name]
            if saved.shape != tensor.shape or saved.dtype != tensor.dtype:
                raise UserError(
                    f"checkpoint {what} do not match this model's {what}: {name} is "
                    f"{_describe(saved)} in the checkpoint, {_describe(tensor)} here "
                    "(another rank map or model?)"
                )

    def check_optimizer(self, saved: dict) -> None:
        """The optimizer's saved moments must have the shapes of the parameters they follow
        (Adam would broadcast a 1-element moment over a matrix without a word)."""
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        groups = saved.get("param_groups", [])
        count = sum(len(g.get("params", [])) for g in groups)
        if count != len(params):
            raise UserError(
                f"checkpoint optimizer state follows {count} tensors, this run trains {len(params)}"
            )
        for index, values in saved.get("state", {}).items():
            if not (isinstance(index, int) and 0 <= index < len(params)):
                raise UserError(f"checkpoint optimizer state is damaged (entry {index!r})")
            for key, value in values.items():
                tensor = isinstance(value, torch.Tensor) and value.dim() > 0
                if tensor and value.shape != params[index].shape:
                    raise UserError(
                        f"checkpoint optimizer state does not match this run: {key} of "
                        f"tensor {index} is {_describe(value)}, the tensor is "
                        f"{_describe(params[index])}"
                    )

    def check_identity(self, state: dict) -> None:
        saved = state.get("run_id")
        if saved != self.run_id:
            raise UserError(
                f"the checkpoint belongs to another run (run id {saved or 'none'}; this run's "
                f"config.json says {self.run_id or 'none'}): was it copied from elsewhere?"
            )

    def load_state_dict(self, state: dict) -> None:
        self.check(state["trainable"], state["mode"])
        self.check_optimizer(state["optimizer"])
        self.check_identity(state)  # after the shapes, which say more when they differ
        if self.mode in ADAPTER_MODES:
            own = self._own_tensors()
            with torch.no_grad():
                for name, tensor in state["trainable"].items():
                    own[name].copy_(tensor)
        else:
            self.model.load_state_dict(state["trainable"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        saved_extras = state.get("extras", {})
        for name, part in self.extras.items():
            if name not in saved_extras:
                raise UserError(f"the checkpoint holds no {name} state (made by another run?)")
            part.load_state_dict(saved_extras[name])
        self.iteration, self.best = state["iteration"], state["best"]
        d = self.dist
        self.saved_world = state["world"]
        self.exact = self.saved_world == d.world
        if self.exact:
            set_rng_state(state["rng"][d.rank])
            if self.degrader is not None and state["degraders"][d.rank] is not None:
                self.degrader.load_state_dict(state["degraders"][d.rank])
        else:  # another process count: other slices of the data, so fresh streams
            seed_all(derive_seed(self.seed, self.iteration, d.rank))

    def save(self, path: Path) -> None:
        state = self.state_dict()
        if self.dist.main:
            write_checkpoint(state, path)

    def load(self, path: Path) -> None:
        state = read_checkpoint(path)
        try:
            self.load_state_dict(state)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as e:
            # the format tag matched but the contents do not: damaged or made by hand
            raise UserError(f"checkpoint {path} is damaged ({type(e).__name__}: {e})") from e
