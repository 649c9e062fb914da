"""Where tensors live and how runs are made repeatable.

``get_device()`` picks CUDA > MPS > CPU; ``autocast(device)`` turns on bf16 autocast on CUDA only (CPU and MPS
run in fp32, where bf16 is slower or unsupported); ``seed_everything(seed)`` seeds Python, NumPy and torch so a
notebook re-run gives the same numbers.
"""
from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch


def get_device(prefer: str | None = None) -> torch.device:
    """The best available device: CUDA, then Apple MPS, then CPU.

    ``prefer`` (or the ``DFS_DEVICE`` environment variable) forces one, e.g. ``"cpu"``; asking for a device
    that is not available raises a ValueError instead of silently falling back.
    """
    prefer = prefer or os.environ.get("DFS_DEVICE")
    if prefer:
        dev = torch.device(prefer)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {prefer!r} was requested but CUDA is not available on this machine")
        if dev.type == "mps" and not torch.backends.mps.is_available():
            raise ValueError(f"device {prefer!r} was requested but MPS is not available on this machine")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def autocast(device: torch.device | str):
    """bf16 autocast on CUDA, a no-op elsewhere. Use as ``with autocast(device): loss = ...``."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def seed_everything(seed: int, deterministic: bool = False) -> torch.Generator:
    """Seed ``random``, NumPy and torch (all devices); return a CPU ``torch.Generator`` seeded the same way.

    With ``deterministic=True`` cuDNN picks deterministic kernels too (slower on GPU, same numbers each run).
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    return torch.Generator().manual_seed(seed)


def describe_device(device: torch.device | str | None = None) -> str:
    """A short human-readable name, e.g. ``"cuda (NVIDIA H100 80GB HBM3)"`` or ``"cpu (2 threads)"``."""
    device = torch.device(device) if device is not None else get_device()
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return device.type


# -- randomness that does not depend on how a batch is split over processes ------------------------------------
# A data-parallel run gives each of W processes B/W of a batch of B examples.  Data callables already build the
# whole batch from the step's seed (dfs.train slices each process's rows); the draws a loss makes per example
# (t, ε, the condition dropout) go through the three functions below, which draw for the whole batch from the
# global RNG (seeded per step, identically in every process) and keep this process's rows.  Example k of a step
# therefore gets the same t and ε whatever W is, and W = 1 draws exactly what torch.randn / randint / rand would.
_shard = {"rank": 0, "world": 1}


@contextlib.contextmanager
def batch_shard(rank: int, world: int):
    """Within this block, :func:`batch_randn` & co. return rows ``rank·n … (rank+1)·n − 1`` of a draw for
    ``world·n`` examples (set by :class:`dfs.train.Trainer` around each step of a multi-process run)."""
    if not 0 <= rank < world:
        raise ValueError(f"rank must be in [0, world), got rank {rank} of {world}")
    old = dict(_shard)
    _shard.update(rank=rank, world=world)
    try:
        yield
    finally:
        _shard.update(old)


def _my_rows(draw: torch.Tensor, n: int) -> torch.Tensor:
    r = _shard["rank"]
    return draw[r * n:(r + 1) * n]


def batch_randn(shape, like: torch.Tensor | None = None) -> torch.Tensor:
    """``torch.randn(shape)`` for this process's ``shape[0]`` examples of the whole batch (see above); on the
    device and dtype of ``like`` when given."""
    shape = tuple(shape)
    x = _my_rows(torch.randn((shape[0] * _shard["world"],) + shape[1:]), shape[0])
    return x.to(like) if like is not None else x


def batch_randint(high: int, n: int, device=None) -> torch.Tensor:
    """``torch.randint(0, high, (n,))`` for this process's n examples of the whole batch."""
    return _my_rows(torch.randint(0, high, (n * _shard["world"],)), n).to(device)


def batch_rand(n: int, device=None) -> torch.Tensor:
    """``torch.rand(n)`` for this process's n examples of the whole batch."""
    return _my_rows(torch.rand(n * _shard["world"]), n).to(device)
