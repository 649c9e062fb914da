"""Timing shared by the benchmarks: one clock, a device sync, and ms per step of a step function or a Trainer.

On a CPU with one torch thread the clock is process CPU time, which other jobs on the machine barely disturb;
elsewhere it is wall time with CUDA synchronised around the timed region.
"""
from __future__ import annotations

import time

import torch

from dfs.train import TrainConfig, Trainer

_clock = {"fn": time.perf_counter}


def choose_clock(device: torch.device) -> str:
    """Process CPU time for a single-threaded CPU run, wall time otherwise; returns the clock's name."""
    single_cpu = device.type == "cpu" and torch.get_num_threads() == 1
    _clock["fn"] = time.process_time if single_cpu else time.perf_counter
    return "process CPU time" if single_cpu else "wall time"


def clock() -> float:
    return _clock["fn"]()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def ms_per_step(step, steps: int, warmup: int, device: torch.device) -> float:
    """Milliseconds per call of ``step()`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        step()
    sync(device)
    t0 = clock()
    for _ in range(steps):
        step()
    sync(device)
    return 1000 * (clock() - t0) / steps


def ms_per_trainer_step(model, loss_fn, batch, steps: int, warmup: int, device: torch.device,
                        ema_decay: float | None = 0.999, grad_clip: float | None = 1.0) -> float:
    """Milliseconds per step of ``Trainer.fit`` over a constant batch (the data callable returns it)."""
    cfg = TrainConfig(steps=warmup, lr=1e-4, ema_decay=ema_decay, grad_clip=grad_clip, progress=False,
                      log_every=10**9, device="cpu" if device.type == "cpu" else None)
    tr = Trainer(model, loss_fn, lambda step, g: batch, cfg)
    tr.fit(warmup)
    sync(device)
    t0 = clock()
    tr.fit(warmup + steps)
    sync(device)
    return 1000 * (clock() - t0) / steps
