"""The one set-up call at the top of every notebook (after its ``parameters`` cell)."""
from __future__ import annotations

import os

import torch

from . import figures, labels
from .device import describe_device, get_device, seed_everything


def setup(notebook: str, quick: bool, seed: int = 0, device: str | None = None) -> torch.device:
    """Seed everything, pick the device, tell ``dfs.figures`` which notebook/mode the figures belong to.

    Prints one line so a reader sees what the run is doing, e.g.
    ``01_ddpm_forward_reverse · QUICK mode · cpu (2 threads) · seed 0``. Returns the device. An unknown
    ``DFS_LANG`` (the figure language, :mod:`dfs.labels`) stops the notebook here, before it computes anything.
    """
    labels.language()
    seed_everything(seed)
    dev = get_device(device)
    figures.set_context(notebook=notebook, quick=bool(quick), seed=seed, device=describe_device(dev))
    os.environ.setdefault("DFS_NOTEBOOK", notebook)
    print(f"{notebook} · {'QUICK' if quick else 'FULL'} mode · {describe_device(dev)} · seed {seed}")
    return dev
