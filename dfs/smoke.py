"""Smoke mode: every notebook's *full* mode executed at toy length (``dfs reproduce --smoke``, run in CI).

Full mode takes branches quick mode never takes (the 128-px v-prediction swap, the 256-px FaceShifter, the U-Net
ELBO study, the full latent recipe, bf16 autocast); a bug there would otherwise wait for a GPU to be found.  With
``DFS_SMOKE=1`` (which ``dfs reproduce --smoke`` sets) :func:`smoke_caps` returns the caps below, and each place that
loops applies them once, where the loop's length is decided:

* training steps: :meth:`dfs.train.Trainer.fit`;
* the face models' batch size, steps and photos per person: the preset loader of the diffusion swap and
  FaceShifter (:func:`dfs.swap.config.load_yaml_config`), whose runs also go to a folder of their own
  (:func:`run_root`, :func:`dfs.swap.config.resolve_checkpoint_dir`) so that a smoke run never resumes from, or
  overwrites, a real run;
* the swap sampler's DDIM steps: :func:`dfs.swap.diffusion.sample_swap` (the latent digits' sampler is not capped:
  its source is hashed into the shipped latent weights, and 20 steps on 4 × 4 latents cost little);
* evaluation pairs and gallery photos: :func:`dfs.evaluate.evaluate`;
* the studies' grids (seeds, evaluation points, samples, data rows, batches, the ELBO study's chain length T):
  :func:`dfs.elbo_study.study_config` and :func:`dfs.elbo_study.digits_8bit`, :class:`dfs.gan_study.StudyConfig`,
  :func:`dfs.latent_study.recipe`;
* the swap models' identity scores on aligned crops: :func:`dfs.swap.diffusion.swap_identity_score`,
  :func:`dfs.swap.faceshifter_train.identity_score` and ``reference_scores``.

Without ``DFS_SMOKE`` nothing changes.  Numbers a smoke run prints or records measure nothing: they exist to prove
that the code ran.  Its tables carry ``mode: "smoke"`` and live in a folder of their own (``<out>/smoke/``).

This module imports nothing from dfs: any layer may ask it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ENV = "DFS_SMOKE"            # "1": smoke mode
DIR_ENV = "DFS_SMOKE_DIR"    # where a smoke run keeps its checkpoints (dfs reproduce --smoke sets it)


@dataclass(frozen=True)
class SmokeCaps:
    """The upper bounds of a smoke run (one source of truth)."""
    max_train_steps: int = 2       # optimiser steps of any training run (each stage of a two-stage model)
    max_batch: int = 1             # examples per training step
    max_sampler_steps: int = 1     # DDIM / respaced sampling steps
    max_eval_pairs: int = 2        # (source, target) pairs of an evaluation, self-swap pairs, swaps of a sweep
    max_per_identity: int = 3      # face photos per person (training faces and the evaluation gallery; >= 2)
    max_data_items: int = 16       # rows of a study's data set or sample set (digits, samples, probe batches)
    max_seeds: int = 2             # seeds of a study over seeds (>= 2: intervals need two)
    max_grid: int = 2              # points of a study's grid (checkpoints, numbers of steps K, guidance scales)
    max_chain: int = 50            # T of a chain a study trains, bounds and samples step by step (the ELBO study's)
    max_bound_steps: int = 2       # steps of a chain bounded with a swap-size network (the face rate-distortion;
                                   # a 128-px U-Net pass costs ~7 s of the CI's CPU per face)


def smoke_caps() -> SmokeCaps | None:
    """The caps when ``DFS_SMOKE=1``, else None (``DFS_SMOKE`` unset, empty or ``0``)."""
    value = os.environ.get(ENV, "").strip()
    if value in ("", "0"):
        return None
    if value != "1":
        raise ValueError(f"{ENV}={value!r}: set it to 1 (smoke mode: full mode at toy length) or leave it unset")
    return SmokeCaps()


def cap(value: int, limit_name: str) -> int:
    """``value``, or ``min(value, caps.<limit_name>)`` in smoke mode."""
    caps = smoke_caps()
    return value if caps is None else min(value, getattr(caps, limit_name))


def run_root() -> Path:
    """The folder a smoke run's relative run folders (``checkpoints/swap-full``) are resolved against instead of
    the repository root: ``DFS_SMOKE_DIR`` (``dfs reproduce --smoke`` sets it to ``<out>/smoke``), else
    ``build/smoke`` below the current directory."""
    return Path(os.environ.get(DIR_ENV) or Path("build") / "smoke").resolve()
