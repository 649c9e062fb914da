"""The one set-up call at the top of every notebook (after its ``parameters`` cell)."""
from __future__ import annotations

import os

import torch

from . import figures, labels
from .device import describe_device, get_device, seed_everything
from .smoke import smoke_caps


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
    mode = "QUICK" if quick else "SMOKE (full mode at toy length: dfs.smoke)" if smoke_caps() else "FULL"
    print(f"{notebook} · {mode} mode · {describe_device(dev)} · seed {seed}")
    return dev


BUDGETS = "benchmarks/compute_budgets.json"


def compute_budget(model: str, path: str | os.PathLike | None = None) -> str:
    """One line on a full preset's compute budget, read from ``benchmarks/compute_budgets.json`` (written by
    ``benchmarks/bench_compute_budget.py``: FLOPs counted on the CPU, not a GPU run), for a notebook's opening
    paragraph, e.g. ``compute_budget("diffusion swap (full)")``."""
    import json
    from pathlib import Path

    from .paths import repo_root

    path = Path(path) if path is not None else repo_root() / BUDGETS
    if not path.is_file():
        return f"{model}: no compute-budget estimate here ({path} is missing; benchmarks/bench_compute_budget.py makes it)"
    budgets = json.loads(path.read_text())
    rows = {r["model"]: r for r in budgets["rows"]}
    if model not in rows:
        raise ValueError(f"{path} has no row {model!r}; its rows: {sorted(rows)}")
    r, a = rows[model], budgets["assumptions"]
    return (f"{model}: {r['resolution']} px, {r['parameters'] / 1e6:.0f} M parameters, batch {r['batch']} × "
            f"{r['steps']:,} steps ({r['mixed_precision']}): {r['train_flops_per_step'] / 1e12:.1f} TFLOP per training "
            f"step, {r['train_flops_total'] / 1e18:.2f} EFLOP in all ≈ {r['h100_hours_at_40pct_mfu']:.1f} H100-hours at "
            f"{a['mfu']:.0%} of {a['gpu_flops'] / 1e12:.0f} TFLOP/s, {r['memory_gib_fp32']:.0f} GiB of activations and "
            f"state in fp32 — an estimate from FLOPs counted on the CPU ({BUDGETS}), not a GPU run")
