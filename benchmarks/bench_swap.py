"""The diffusion face swap: dfs Trainer step vs a bare loop on the same model, and sampling seconds per swap.

    python benchmarks/bench_swap.py                         # quick preset (64 px), CPU or CUDA
    python benchmarks/bench_swap.py --threads 1 --repeats 5 # CPU time of one thread (robust on a shared machine)
    python benchmarks/bench_swap.py --config full --batch 16 --sample-batch 8      # a GPU-sized run

Part 1 runs the swap model's training step (``SwapDiffusion.forward``: ε-MSE + identity loss, AdamW, gradient
clipping, EMA) through ``dfs.train.Trainer`` and through the same step written out by hand, interleaved A/B/A/B
over ``--repeats`` runs of ``--steps`` steps, on one constant batch of real training-shaped tensors (random crops,
a real face's landmarks and mask), and prints the Trainer's overhead.  Part 2 times ``sample_swap`` (DDIM,
``--sample-steps`` steps, the preset's classifier-free guidance, i.e. two U-Net branches per step) per swap at batch 1 and
at ``--sample-batch``, with and without identity-gradient guidance.  Weights are untrained: the time does not
depend on them.  With ``--threads 1`` on a CPU the clock is process CPU time; otherwise wall time.
"""
from __future__ import annotations

import argparse
import statistics

import numpy as np
import torch

from dfs.swap import diffusion as D
from dfs.swap.config import load_config
from steptiming import choose_clock, clock, ms_per_step, ms_per_trainer_step, sync


def fake_batch(cfg, B, device):
    """A batch shaped like SwapData's: crops, masks and landmarks of one synthetic face layout, embeddings."""
    S = cfg.image_size
    g = torch.Generator().manual_seed(0)
    t = np.linspace(0, np.pi, 17)
    jaw = np.stack([S / 2 - 0.35 * S * np.cos(t), 0.4 * S + 0.35 * S * np.sin(t)], 1)
    inner = np.stack([np.linspace(0.3 * S, 0.7 * S, 51), np.repeat(np.linspace(0.35 * S, 0.7 * S, 17), 3)], 1)
    lm = torch.from_numpy(np.concatenate([jaw, inner])).float()[None].expand(B, 68, 2).contiguous()
    from dfs.faces.align import face_mask
    mask = face_mask(lm, S, feather=0.02 * S)[:, None].float()
    emb = torch.nn.functional.normalize(torch.randn(B, cfg.id_dim, generator=g), dim=-1)
    crops = torch.rand(B, 3, S, S, generator=g) * 2 - 1
    chip = torch.tensor([[150 / S, 0, 0], [0, 150 / S, 0]]).expand(B, 2, 3).contiguous()
    extra = (torch.rand(B, 3, S, S, generator=g) * 2 - 1,) if cfg.source_pixels else ()   # the warped source
    return tuple(x.to(device) for x in (crops, mask, lm, emb, chip, *extra))


def time_trainer(model, batch, steps, warmup, device):
    return ms_per_trainer_step(model, D.swap_loss, batch, steps, warmup, device)


def time_bare(model, batch, steps, warmup, device):
    """forward (the same loss), backward, clip, AdamW, EMA lerp; no per-step seeding or logging."""
    model.to(device).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    live = [p for p in model.parameters()]
    ema = [p.detach().clone() for p in live]

    def step():
        loss = model(*batch)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        torch._foreach_lerp_(ema, [p.detach() for p in live], 0.001)

    return ms_per_step(step, steps, warmup, device)


def time_sampling(model, cfg, B, steps, id_guidance, device, repeats):
    crops, mask, lm, emb, chip, *ref = fake_batch(cfg, B, device)
    runs = []
    for r in range(repeats + 1):  # the first run warms up
        sync(device)
        t0 = clock()
        D.sample_swap(model, crops, mask, lm, emb, steps, cfg.guidance, id_guidance, chip,
                      reference=ref[0] if ref else None)
        sync(device)
        if r:
            runs.append((clock() - t0) / B)
    return statistics.median(runs)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="quick")
    ap.add_argument("--batch", type=int, default=None, help="training batch (default: the config's)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sample-steps", type=int, default=25)
    ap.add_argument("--sample-batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    clock_name = choose_clock(device)
    cfg = load_config(args.config)
    B = args.batch or cfg.batch_size
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"device: {name}; torch {torch.__version__}; config {args.config!r}: {cfg.image_size} px, widths "
          f"{cfg.block_out_channels}; training batch {B}; clock: "
          f"{clock_name}")

    torch.manual_seed(0)
    batch = fake_batch(cfg, B, device)
    trainer_model, bare_model = D.SwapDiffusion(cfg), D.SwapDiffusion(cfg)
    bare_model.load_state_dict(trainer_model.state_dict())
    runs = {"dfs Trainer": [], "bare loop": []}
    for _ in range(args.repeats):  # interleaved: drifting load hits both alike
        torch.manual_seed(1)
        runs["dfs Trainer"].append(time_trainer(trainer_model, batch, args.steps, args.warmup, device))
        torch.manual_seed(1)
        runs["bare loop"].append(time_bare(bare_model, batch, args.steps, args.warmup, device))
    ms = {k: statistics.median(v) for k, v in runs.items()}
    print(f"\ntraining step (ε-MSE + identity loss, AdamW, clip, EMA), median of {args.repeats} × {args.steps}:")
    for k, v in ms.items():
        print(f"  {k:12s} {v:9.1f} ms/step   (runs: {', '.join(f'{x:.0f}' for x in runs[k])})")
    print(f"  Trainer overhead: {100 * (ms['dfs Trainer'] / ms['bare loop'] - 1):+.1f} %")

    model = D.SwapDiffusion(cfg).eval().to(device)
    print(f"\nsampling: DDIM {args.sample_steps} steps, guidance {cfg.guidance:g} (2 branches), {cfg.image_size} px, "
          f"median of {args.repeats}:")
    for B in (1, args.sample_batch):
        for g in (0.0, 1.0):
            s = time_sampling(model, cfg, B, args.sample_steps, g, device, args.repeats)
            print(f"  batch {B:3d}, identity guidance {'on ' if g else 'off'}: {s:.3f} s per swap")


if __name__ == "__main__":
    main()
