"""One training run of tests/test_distributed.py, launched by ``accelerate launch`` on 1 or 2 processes.

    accelerate launch --multi_gpu --num_processes 2 tests/distributed_worker.py MODEL OUT STEPS [BATCH]

MODEL: ``toy`` (notebook 02's MLP ε-model with L_simple), ``swap`` (a tiny diffusion swap), ``faceshifter``
(a tiny AEI-Net + discriminator: two optimisers; ``faceshifter-nobn``: the same with its attribute encoder's
BatchNorm layers left out, whose per-process statistics are the one thing a CPU run cannot share) or ``epoch`` (a DataLoader-like list of batches of example
indices, to see which process got which example).  The run checkpoints into OUT/run (resuming from what is there)
and the main process writes OUT/history.json: the logged losses, the world size, whether every process ended with
the same weights, and (``epoch``) the examples each process saw.  DFS_TEST_DIE_AT=k kills the last process at
step k (a crash in the middle of a run)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)
SHARED_PEOPLE = ("Adrien_Brody", "Amelie_Mauresmo")


def face_data(batch_size: int):
    """Six aligned 32-px photos of two people of the shared LFW subset (DFS_DATA)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from shared_data import shared_lfw_photos

    from dfs.swap import diffusion as D
    from dfs.swap.pipeline import SourcePasted, SwapPipeline
    pipe = SwapPipeline(SourcePasted(), crop_size=32)
    photos = shared_lfw_photos()
    aligned = [pipe.align(photos / p / f"{p}_{i:04d}.jpg") for p in SHARED_PEOPLE for i in (1, 2, 3)]
    return D.SwapData.from_aligned(aligned, [p for p in SHARED_PEOPLE for _ in range(3)], batch_size=batch_size)


def dies(loss_fn):
    """``loss_fn`` that kills the last process at step DFS_TEST_DIE_AT (no Python clean-up: like a kill -9)."""
    die_at = int(os.environ.get("DFS_TEST_DIE_AT", "-1"))

    def wrapped(model, batch, step):
        if step == die_at and int(os.environ.get("RANK", "0")) == int(os.environ.get("WORLD_SIZE", "1")) - 1:
            os._exit(3)
        return loss_fn(model, batch, step)
    return wrapped


def main(model: str, out: Path, steps: int, batch: int) -> None:
    from dfs.train import Trainer, TrainConfig
    run = out / "run"
    seen = []
    if model == "epoch":     # 3 batches of 4 example indices, cycled: one epoch every 3 steps
        net = torch.nn.Linear(1, 1)
        cfg = TrainConfig(steps=steps, lr=1e-2, ema_decay=None, progress=False, log_every=1)

        def loss(m, idx, step):
            seen.extend(idx.tolist())
            return (m(idx.float()[:, None]) ** 2).mean()
        trainer = Trainer(net, loss, [torch.arange(k * 4, k * 4 + 4) for k in range(3)], cfg)
        trainer.fit()
    elif model == "toy":
        from dfs import toy
        from dfs.diffusion import NoiseSchedule, loss_simple
        sched = NoiseSchedule.from_name("linear", 1000)
        torch.manual_seed(0)
        net = toy.MLPEpsModel(hidden=32, layers=2)
        cfg = TrainConfig(steps=steps, batch_size=batch, lr=2e-3, ema_decay=0.9, progress=False, log_every=1,
                          checkpoint_dir=str(run), checkpoint_every=2)
        trainer = Trainer(net, dies(lambda m, x, step: loss_simple(m, sched, x)),
                          lambda step, g: toy.make_toy("gmm", batch, g), cfg)
        trainer.fit()
    elif model == "swap":
        from dfs.swap import diffusion as D
        from dfs.swap.config import SwapConfig
        cfg = SwapConfig(image_size=32, block_out_channels=[16, 32], norm_num_groups=8, attention_head_dim=8,
                         id_tokens=2, token_dim=16, T=100, id_t_max=100, steps=steps, batch_size=batch,
                         checkpoint_every=2, log_every=1, warmup_steps=0, lr=1e-3, ema_decay=0.9, sample_steps=3,
                         p_uncond=0.5)
        trainer = D.train_swap(cfg, data=face_data(batch), progress=False, checkpoint_dir=run)
    elif model.startswith("faceshifter"):
        if model == "faceshifter-nobn":
            torch.nn.BatchNorm2d = lambda channels: torch.nn.Identity()    # read when the encoder is built
        from dfs.swap import faceshifter_train as FT
        from dfs.swap.faceshifter import FaceShifterConfig
        cfg = FaceShifterConfig(image_size=32, enc_channels=[8, 8, 8, 8], gen_channels=[8, 8, 8, 8], disc_channels=8,
                                disc_layers=2, disc_scales=2, hear_channels=[8, 8], steps=steps, hear_steps=0,
                                batch_size=batch, checkpoint_every=2, log_every=1, ema_decay=0.9)
        trainer = FT.train_faceshifter(cfg, data=face_data(batch), progress=False, checkpoint_dir=run,
                                       stages=("aei",))["aei"]
    else:
        raise SystemExit(f"unknown model {model!r}")
    acc = trainer.accelerator
    flat = torch.cat([p.detach().reshape(-1) for p in trainer.raw_model.parameters()])
    checksums = acc.gather(torch.stack([flat.sum(), (flat * torch.arange(len(flat))).sum()])[None])
    per_rank = acc.gather_for_metrics([seen], use_gather_object=True) if trainer.world > 1 else [seen]
    if acc.is_main_process:
        (out / "history.json").write_text(json.dumps({
            "world": trainer.world, "history": trainer.history, "seen": per_rank,
            "ranks_agree": bool((checksums == checksums[0]).all())}))
    acc.end_training()      # close the process group: exiting with it open can abort a process (SIGABRT)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 8)
    # Everything is written and the process group is closed.  Leave without the interpreter's finalisation: on this
    # CPU/gloo set-up a C++ thread left joinable at static destruction sometimes aborts the process after its work
    # is done ("terminate called without an active exception", no Python frame), which would fail a correct run.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
