"""dfs.diffusion's DDPM/DDIM samplers vs a diffusers DDPMScheduler/DDIMScheduler loop on the same toy MLP.

    .venv/bin/python benchmarks/bench_toy_sampler.py [--n 4096] [--train-steps 500] [--repeats 5] [--device cpu]

Trains the 2-D MLP ε-model briefly (not timed), then samples ``--n`` points with both implementations from the
same x_T and the same per-step noise (one CPU generator, drawn in the same order), so the two outputs must agree
to float32 round-off. Runs are interleaved (dfs, diffusers, dfs, …) after a warm-up and the median is reported,
which keeps a busy shared machine from favouring either side.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from diffusers import DDIMScheduler, DDPMScheduler

from dfs.diffusion import NoiseSchedule, ddim_sample, ddpm_sample
from dfs.device import describe_device, get_device
from dfs.toy import make_toy, mmd_rbf, train_toy


def diffusers_sample(model, scheduler, steps: int, shape, generator, device):
    """The usual diffusers loop: x_T ~ N(0, I), then ``scheduler.step`` over ``scheduler.timesteps``."""
    scheduler.set_timesteps(steps)
    x = torch.randn(shape, generator=generator).to(device)
    for t in scheduler.timesteps:
        eps = model(x, torch.full((shape[0],), int(t), device=device, dtype=torch.long))
        x = scheduler.step(eps, t, x, generator=generator).prev_sample
    return x


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device):
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=4096, help="points sampled per run")
    p.add_argument("--train-steps", type=int, default=500)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--ddim-steps", type=int, default=50)
    p.add_argument("--device", default=None, help="default: CUDA when present, else CPU")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads on CPU")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = get_device(args.device)
    T = 1000
    sched = NoiseSchedule.from_name("linear", T)
    model, _ = train_toy("gmm", sched, steps=args.train_steps, progress=False, device=str(device))
    model = model.to(device).eval()
    shape = (args.n, 2)
    ddpm = DDPMScheduler(num_train_timesteps=T, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                         variance_type="fixed_small", clip_sample=False)
    ddim = DDIMScheduler(num_train_timesteps=T, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                         clip_sample=False, set_alpha_to_one=True, steps_offset=0, timestep_spacing="leading")

    def gen():
        return torch.Generator().manual_seed(123)

    runs = {
        ("DDPM", T): (lambda: ddpm_sample(model, sched, shape, generator=gen(), device=device, progress=False),
                      lambda: diffusers_sample(model, ddpm, T, shape, gen(), device)),
        ("DDIM", args.ddim_steps): (
            lambda: ddim_sample(model, sched, shape, steps=args.ddim_steps, generator=gen(), device=device,
                                progress=False),
            lambda: diffusers_sample(model, ddim, args.ddim_steps, shape, gen(), device)),
    }
    print(f"device: {describe_device(device)} · torch {torch.__version__} · n = {args.n} points · "
          f"MLP {sum(p.numel() for p in model.parameters())} parameters · median of {args.repeats} runs")
    print(f"{'sampler':<8s} {'steps':>5s} {'dfs steps/s':>12s} {'diffusers steps/s':>18s} {'dfs/diffusers':>14s} "
          f"{'max |Δx_0|':>11s}")
    ref = make_toy("gmm", args.n, torch.Generator().manual_seed(7))
    with torch.no_grad():
        for (name, steps), (f_dfs, f_diff) in runs.items():
            f_dfs(), f_diff()                                        # warm-up (allocator, kernels, caches)
            t_dfs, t_diff = [], []
            for _ in range(args.repeats):
                dt, x_dfs = timed(f_dfs, device)
                t_dfs.append(dt)
                dt, x_diff = timed(f_diff, device)
                t_diff.append(dt)
            r_dfs, r_diff = steps / statistics.median(t_dfs), steps / statistics.median(t_diff)
            diff = (x_dfs - x_diff).abs().max().item()                # same x_T and noise: round-off only
            m = min(args.n, 2000)
            print(f"{name:<8s} {steps:>5d} {r_dfs:>12.1f} {r_diff:>18.1f} {r_dfs / r_diff:>14.2f} {diff:>11.2e}")
            print(f"{'':<8s} MMD² to fresh GMM data: dfs {mmd_rbf(x_dfs[:m].cpu(), ref[:m]).item():.2e} · "
                  f"diffusers {mmd_rbf(x_diff[:m].cpu(), ref[:m]).item():.2e}")


if __name__ == "__main__":
    main()
