"""Tiny models the tests train, export and serve: each architecture's small configuration
(adapt/archs/), seeded without touching torch's global RNG, loaded the way checkpoints are."""

import torch

from adaptsr.adapt.archs import build_small
from adaptsr.adapt.models import model_from_state_dict, save_model


def _seeded(arch: str, seed: int, overrides: dict) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_small(arch, **overrides)


def tiny_edsr(seed=0, **overrides):
    """EDSR x2, by default 2 blocks of 16 features (receptive field ~8 input pixels)."""
    net = _seeded("EDSR", seed, overrides)
    return model_from_state_dict(net.state_dict(), name="tiny-edsr-x2")


def save_tiny_safmn(path, seed=0):
    """A tiny SAFMN x4 checkpoint (5k parameters) saved at `path`; returns `path`."""
    net = _seeded("SAFMN", seed, {"upscaling_factor": 4})
    save_model(model_from_state_dict(net.state_dict()), path)
    return path
