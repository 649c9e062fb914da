"""Data-parallel training through accelerate, on 2 CPU processes (gloo): a run on 2 processes with B/2 examples
each follows the 1-process run with batch B, checkpoints move between world sizes, a crash loses only the steps
since the last checkpoint, and every example of an epoch goes to exactly one process.

Each run is ``tests/distributed_worker.py`` launched as a user would (``accelerate launch --multi_gpu
--num_processes 2``; on a machine without CUDA dfs.train picks accelerate's MULTI_CPU mode with gloo).

Tolerances.  The two runs compute the same per-example losses on the same examples with the same noise
(dfs.device.batch_randn & co.); what differs is the order of floating-point sums (a 2-way all-reduce of gradient
means against one sum over B).  Those ~1e-7 relative differences reach the weights through Adam, whose step
lr · m̂/(√v̂ + ε) turns them into at most a fraction of one step for weights whose gradient is near 0.  So: losses
equal to 1e-5 (relative), weights to a tenth of one step (lr/10) after a few steps.  FaceShifter's attribute
encoder has BatchNorm, whose statistics each CPU process takes over its own half of the batch (SyncBatchNorm,
which dfs.train uses on GPUs, needs CUDA): without those layers its 2-process run follows the 1-process one; with
them the first losses differ by the per-half normalisation, bounded below.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dfs.train import latest_checkpoint

WORKER = Path(__file__).resolve().parent / "distributed_worker.py"
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(out: Path, model: str, steps: int, batch: int = 8, world: int = 1, die_at: int | None = None,
           check: bool = True) -> dict | None:
    out.mkdir(parents=True, exist_ok=True)
    args = [str(WORKER), model, str(out), str(steps), str(batch)]
    if world == 1:
        cmd = [sys.executable, *args]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(world),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(free_port()), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DFS_TEST_DIE_AT": str(die_at if die_at is not None else -1)}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    (out / f"launch_{world}.log").write_text(run.stdout + run.stderr)     # the whole of it, for a failure
    if not check:
        return None
    assert run.returncode == 0, f"{' '.join(cmd)} failed:\n{run.stderr[-3000:]}"
    return json.loads((out / "history.json").read_text())


def weights(out: Path, stage: str = "") -> dict[str, torch.Tensor]:
    ckpt = latest_checkpoint(out / "run" / stage)
    return {k: v.float() for k, v in load_file(ckpt / "model.safetensors").items()}


def losses(h: dict, key: str = "loss") -> torch.Tensor:
    return torch.tensor([r[key] for r in h["history"]], dtype=torch.float64)


def max_difference(a: dict, b: dict, skip=("_u", "_v")) -> float:
    """Largest |a − b| over the parameters (spectral norm's power-iteration vectors u, v are not trained)."""
    return max((a[k] - b[k]).abs().max().item() for k in a if not k.endswith(skip))


def test_toy_two_processes_follow_one_and_checkpoints_cross_world_sizes(tmp_path):
    one = launch(tmp_path / "one", "toy", steps=4, batch=16)
    two = launch(tmp_path / "two", "toy", steps=4, batch=16, world=2)
    assert (one["world"], two["world"]) == (1, 2) and two["ranks_agree"]
    torch.testing.assert_close(losses(two), losses(one), rtol=1e-5, atol=0)
    theta = weights(tmp_path / "one")
    assert max_difference(weights(tmp_path / "two"), theta) < 2e-3 / 10          # lr / 10
    # 2 steps on 2 processes, resumed on 1 to step 4; and the other way round: the same trajectory
    launch(tmp_path / "2then1", "toy", steps=2, batch=16, world=2)
    h21 = launch(tmp_path / "2then1", "toy", steps=4, batch=16, world=1)
    launch(tmp_path / "1then2", "toy", steps=2, batch=16, world=1)
    h12 = launch(tmp_path / "1then2", "toy", steps=4, batch=16, world=2)
    for h, name in ((h21, "2then1"), (h12, "1then2")):
        torch.testing.assert_close(losses(h), losses(one), rtol=1e-5, atol=0)
        assert max_difference(weights(tmp_path / name), theta) < 2e-3 / 10


def test_a_crash_of_one_process_loses_only_the_steps_since_the_last_checkpoint(tmp_path):
    one = launch(tmp_path / "one", "toy", steps=6, batch=16)
    out = tmp_path / "crash"
    launch(out, "toy", steps=6, batch=16, world=2, die_at=3, check=False)     # rank 1 dies in step 3
    ckpt = latest_checkpoint(out / "run")
    assert ckpt is not None and ckpt.name == "step_0000002"                   # checkpoints every 2 steps
    assert not (out / "history.json").exists()
    resumed = launch(out, "toy", steps=6, batch=16, world=2)
    torch.testing.assert_close(losses(resumed), losses(one), rtol=1e-5, atol=0)
    assert max_difference(weights(out), weights(tmp_path / "one")) < 2e-3 / 10


def test_every_example_of_an_epoch_goes_to_exactly_one_process(tmp_path):
    h = launch(tmp_path, "epoch", steps=6, world=2)
    first, second = h["seen"]
    assert len(first) == len(second) == 12                                     # 6 steps of 2 examples each
    for epoch in (slice(0, 6), slice(6, 12)):
        got = first[epoch] + second[epoch]
        assert sorted(got) == list(range(12))                                  # all 12, none twice


def test_diffusion_swap_two_processes_follow_one(tmp_path):
    one = launch(tmp_path / "one", "swap", steps=4, batch=4)
    two = launch(tmp_path / "two", "swap", steps=4, batch=4, world=2)
    assert two["ranks_agree"]
    for key in ("loss", "mse", "id_loss"):
        torch.testing.assert_close(losses(two, key), losses(one, key), rtol=1e-5, atol=1e-7)
    assert max_difference(weights(tmp_path / "two"), weights(tmp_path / "one")) < 1e-3 / 10


def test_faceshifter_two_optimisers_on_two_processes(tmp_path):
    # without BatchNorm the 2-process GAN follows the 1-process one
    one = launch(tmp_path / "one", "faceshifter-nobn", steps=4, batch=4)
    two = launch(tmp_path / "two", "faceshifter-nobn", steps=4, batch=4, world=2)
    assert two["ranks_agree"]
    for key in ("loss_g", "loss_d"):
        torch.testing.assert_close(losses(two, key)[:2], losses(one, key)[:2], rtol=1e-5, atol=0)
        torch.testing.assert_close(losses(two, key), losses(one, key), rtol=1e-3, atol=0)
    # with the encoder's BatchNorm (each CPU process normalises its own half): the same weights on every process,
    # and the first generator loss within 5 % of the 1-process run's
    bn_one = launch(tmp_path / "bn_one", "faceshifter", steps=2, batch=4)
    bn_two = launch(tmp_path / "bn_two", "faceshifter", steps=2, batch=4, world=2)
    assert bn_two["ranks_agree"]
    first = losses(bn_two, "loss_g")[0] / losses(bn_one, "loss_g")[0]
    assert abs(first - 1) < 0.05
