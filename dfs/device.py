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
