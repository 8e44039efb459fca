"""Tiny models the tests train, export and serve: each architecture's small configuration
(adapt/archs/), seeded without touching torch's global RNG, loaded the way checkpoints are."""

import torch
import torch.nn.functional as F
from torch import nn

import adaptsr
from adaptsr.adapt.archs import build_small
from adaptsr.adapt.lora import adapter_parameters
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


class Tiny(nn.Module):
    """A x2 SR net with a conv, a fused-qkv attention and an MLP (every kind of site)."""

    def __init__(self, c=8, scale=2):
        super().__init__()
        self.c = c
        self.head = nn.Conv2d(3, c, 3, padding=1)
        self.attn = nn.Module()
        self.attn.qkv = nn.Linear(c, 3 * c)
        self.attn.proj = nn.Linear(c, c)
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(c, 2 * c)
        self.mlp.fc2 = nn.Linear(2 * c, c)
        self.tail = nn.Conv2d(c, 3 * scale * scale, 3, padding=1)
        self.up = nn.PixelShuffle(scale)

    def forward(self, x):
        f = self.head(x)
        t = f.flatten(2).transpose(1, 2)
        q, k, v = self.attn.qkv(t).chunk(3, dim=-1)
        a = torch.softmax(q @ k.transpose(1, 2) / self.c**0.5, dim=-1) @ v
        t = t + self.attn.proj(a)
        t = t + self.mlp.fc2(F.gelu(self.mlp.fc1(t)))
        return self.up(self.tail(t.transpose(1, 2).reshape(f.shape)))


def tiny_batches(n=4, b=2, size=6, seed=0):
    """`n` seeded (LR, HR) batches of random x2 pairs for Tiny."""
    g = torch.Generator().manual_seed(seed)
    return [
        (
            torch.rand(b, 3, size, size, generator=g),
            torch.rand(b, 3, 2 * size, 2 * size, generator=g),
        )
        for _ in range(n)
    ]


def one_block_edsr(seed=0):
    """EDSR x2 with 1 block of 8 features: the smallest EDSR, for tests that need a checkpoint
    to pass around rather than a model to train."""
    return tiny_edsr(seed, n_resblocks=1, n_feats=8)


def write_random_adapter(path, seed, ranks, model="safmn-x4", alpha=1.0, scaling="alpha/r"):
    """An adapter file of `model` (a built-in name or a module) whose A and B are seeded random
    (0.1 x standard normal), so its update is far from zero."""
    net = adaptsr.load_model(model) if isinstance(model, str) else model
    adaptsr.inject_lora(net, ranks, alpha=alpha, scaling=scaling)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter_parameters(net):
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return adaptsr.save_adapter(net, path)
