"""Seconds per swap of the shipped models through the whole pipeline, as `dfs swap` runs them, in one run.

    python benchmarks/bench_swap_pipeline.py --threads 1            # the CPU number the README quotes
    python benchmarks/bench_swap_pipeline.py --steps 10 --pairs 16  # fewer DDIM steps

For each method (the shipped diffusion swap at its default sampler settings, the shipped FaceShifter, the classical
swap) the same ``--pairs`` (source, target) photos of the embedded data are aligned once, then swapped through
``SwapPipeline.run`` in batches of ``--batch``: swap + blend + paste back, detection and alignment excluded (what
`dfs eval` reports as s / swap).  The methods run interleaved over ``--repeats`` rounds (a drifting load hits all
alike); the medians and their ratios to the classical swap are printed.  With ``--threads 1`` the clock is the
process CPU time, robust to other jobs on a shared machine; otherwise wall time.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch


def main(argv=None):
    from dfs.paths import repo_root
    from dfs.swap import get_method
    from dfs.swap.pipeline import SwapPipeline

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=None, help="diffusion: DDIM steps (default: the checkpoint's)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.process_time if args.threads == 1 else time.perf_counter
    photos = sorted((repo_root() / "data" / "lfw_home" / "lfw_funneled").glob("*/*_0001.jpg"))
    if not 1 <= args.pairs <= len(photos) // 2:
        raise SystemExit(f"--pairs must be in 1..{len(photos) // 2} (one photo per person of the embedded data)")
    sources, targets = photos[:args.pairs], photos[args.pairs:2 * args.pairs]
    methods = {"diffusion": get_method("diffusion", steps=args.steps, device="cpu", batch_size=args.batch),
               "faceshifter": get_method("faceshifter", device="cpu", batch_size=args.batch),
               "classical": get_method("classical")}
    pipes = {k: SwapPipeline(m, batch_size=args.batch) for k, m in methods.items()}
    aligned = {k: ([p.align(s, "source") for s in sources], [p.align(t, "target") for t in targets])
               for k, p in pipes.items()}
    times = {k: [] for k in pipes}
    for r in range(args.repeats + 1):
        for k, p in pipes.items():
            src, tgt = aligned[k]
            t0 = clock()
            p.run(src, tgt, seed=0)
            if r:                                   # round 0 warms up
                times[k].append((clock() - t0) / len(tgt))
    d = methods["diffusion"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), clock "
          f"{'process CPU time' if args.threads == 1 else 'wall'}; {args.pairs} pairs, batch {args.batch}; "
          f"diffusion: {d.crop_size} px, {d.sampler.steps} DDIM steps, guidance {d.sampler.guidance:g}")
    base = statistics.median(times["classical"])
    for k, v in times.items():
        m = statistics.median(v)
        print(f"  {k:12s} {m:8.3f} s/swap   ({m / base:7.1f}× the classical swap; runs "
              f"{', '.join(f'{x:.3f}' for x in v)})")


if __name__ == "__main__":
    main()
