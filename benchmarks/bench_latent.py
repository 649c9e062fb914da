"""Latent vs pixel diffusion training steps, and the dfs Trainer's overhead over a bare PyTorch loop.

    python benchmarks/bench_latent.py                      # CPU (or CUDA when present), tiny U-Nets, 16×16 digits
    python benchmarks/bench_latent.py --threads 1 --steps 30 --repeats 5
    python benchmarks/bench_latent.py --size 64 --preset small --batch 64    # a GPU-sized run

Part 1 times one training step of the *same* U-Net configuration learning 1×S×S pixels or the 4×(S/4)×(S/4)
latents of a KL f=4 autoencoder (precomputed latents, and latents encoded afresh every step), all in one run, and
prints the ratios. Part 2 runs the same diffusers UNet2DModel step (L_simple, AdamW, gradient clipping, optionally
EMA) through ``dfs.train.Trainer`` and through a bare loop, interleaved A/B/A/B, and prints the Trainer's overhead.
Timings are medians over ``--repeats`` runs of ``--steps`` steps after ``--warmup`` steps. With ``--threads 1`` on
a CPU the clock is the process's CPU time (``time.process_time``), which other jobs sharing the machine barely
disturb; otherwise it is wall time (with CUDA synchronised before reading it).
"""
from __future__ import annotations

import argparse
import statistics

import torch

from dfs.diffusion import NoiseSchedule
from dfs.latent import LatentDiffusion, module_loss
from dfs.nets import build_autoencoder, build_unet, n_params
from steptiming import choose_clock, ms_per_step, ms_per_trainer_step



def time_trainer(model, loss_fn, batch, steps, warmup, device, ema, clip=1.0):
    """ms per step of Trainer.fit over a constant batch (the data callable returns it)."""
    return ms_per_trainer_step(model, loss_fn, batch, steps, warmup, device, 0.999 if ema else None, clip)


def time_bare(model, loss_fn, batch, steps, warmup, device, ema, clip=1.0, item=False, seed=False):
    """The same step written out: forward, backward, clip, AdamW, (EMA lerp); no per-step seeding, no .item().
    ``item`` adds a ``loss.item()`` per step (a host-device sync on CUDA, as the Trainer's logging and finite
    check do); ``seed`` adds a ``torch.manual_seed`` per step (as the Trainer does for exact resume)."""
    model.to(device).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ema_p = [p.detach().clone() for p in model.parameters()] if ema else None
    live_p = [p for p in model.parameters()]
    batch = batch.to(device)

    def step():
        if seed:
            torch.manual_seed(1234)
        loss = loss_fn(model, batch, 0)
        if item:
            loss.item()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        if ema_p is not None:
            torch._foreach_lerp_(ema_p, [p.detach() for p in live_p], 0.001)

    return ms_per_step(step, steps, warmup, device)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=16)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave the default)")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    ap.add_argument("--loop-only", action="store_true", help="skip part 1 (latent vs pixel)")
    ap.add_argument("--attribute", action="store_true", help="also time the bare loop plus each Trainer addition")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    clock_name = choose_clock(device)
    torch.manual_seed(0)
    S, B = args.size, args.batch
    sched = NoiseSchedule.from_name("linear", 1000)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"device: {name}; torch {torch.__version__}; images 1×{S}×{S}, batch {B}, U-Net preset {args.preset!r}; "
          f"median of {args.repeats} × {args.steps} steps; clock: "
          f"{clock_name}")

    pixel = LatentDiffusion(build_unet(S, 1, preset=args.preset), sched)
    x = torch.rand(B, 1, S, S, device=device) * 2 - 1
    if not args.loop_only:
        part1(args, device, sched, pixel, x)
    part2(args, device, pixel, x)


def part1(args, device, sched, pixel, x):
    """One training step of the same U-Net on pixels and on KL f=4 latents."""
    S = args.size
    ae = build_autoencoder("kl", 4, sample_size=S, preset="tiny" if args.preset == "tiny" else "small").to(device)
    lat = LatentDiffusion(build_unet(S // 4, 4, preset=args.preset), sched, autoencoder=ae)
    z = lat.to(device).encode(x)
    encode_each_step = lambda m, b, s: m(m.encode(b))  # noqa: E731  the cost of E(x) included
    rows = {
        "pixel (1×S×S)": lambda: time_trainer(pixel, module_loss, x, args.steps, args.warmup, device, ema=True),
        "latent (z precomputed)": lambda: time_trainer(lat, module_loss, z, args.steps, args.warmup, device, ema=True),
        "latent (+ E(x) every step)": lambda: time_trainer(lat, encode_each_step, x, args.steps, args.warmup, device,
                                                           ema=True),
    }
    runs = {k: [] for k in rows}
    for _ in range(args.repeats):  # interleaved, so drifting machine load hits every row alike
        for k, fn in rows.items():
            runs[k].append(fn())
    ms = {k: statistics.median(v) for k, v in runs.items()}
    print(f"\n{'model':28s} {'ms/step':>9s} {'U-Net params':>13s}")
    for k, v in ms.items():
        print(f"{k:28s} {v:9.2f} {n_params((pixel if k.startswith('pixel') else lat).unet):13d}")
    base = ms["pixel (1×S×S)"]
    print(f"pixel / latent step time: {base / ms['latent (z precomputed)']:.2f}× (precomputed z), "
          f"{base / ms['latent (+ E(x) every step)']:.2f}× (encoding every step)")


def part2(args, device, pixel, x):
    """Trainer vs bare loop over the same diffusers UNet2DModel step."""
    print(f"\n{'loop over the pixel UNet2DModel':34s} {'bare ms':>9s} {'Trainer ms':>11s} {'overhead':>9s}")
    for ema in (False, True):
        bare, trainer = [], []
        for _ in range(args.repeats):  # interleaved, so drifting machine load hits both alike
            bare.append(time_bare(pixel, module_loss, x, args.steps, args.warmup, device, ema))
            trainer.append(time_trainer(pixel, module_loss, x, args.steps, args.warmup, device, ema))
        b, t = statistics.median(bare), statistics.median(trainer)
        print(f"{'with EMA' if ema else 'no EMA':34s} {b:9.2f} {t:11.2f} {100 * (t - b) / b:8.1f}%")
    if args.attribute:  # what each thing the Trainer adds per step costs, added to the bare loop one at a time
        variants = {"bare": {}, "+ loss.item() per step": dict(item=True),
                    "+ torch.manual_seed per step": dict(seed=True), "+ both": dict(item=True, seed=True)}
        runs = {k: [] for k in variants}
        for _ in range(args.repeats):
            for k, kw in variants.items():
                runs[k].append(time_bare(pixel, module_loss, x, args.steps, args.warmup, device, False, **kw))
        b = statistics.median(runs["bare"])
        for k, v in runs.items():
            print(f"{k:34s} {statistics.median(v):9.2f} ms {100 * (statistics.median(v) - b) / b:+8.1f}%")


if __name__ == "__main__":
    main()
