"""Identity-gradient guidance (``--id-guidance γ``): how much of its identity gain survives perturbations?

The guide and the judge are the same network (dlib's ResNet), so a gain in the judge's cosine may be a pattern
only dlib sees.  For each setting (gradient through the U-Net or on x̂_0, number of random views, γ) this prints
the mean identity cosine to the source of the shipped model's swaps of held-out cross-identity pairs, as judged on
the result, on the result blurred (σ = 1 px, ``identity_cosines``) and on the result shrunk to 40 px and enlarged
back (a perturbation no guidance view uses), next to the warped reference the model refines, and the share of
each setting's gain over γ = 0 that the perturbations keep; it writes the swaps side by side.

    OMP_NUM_THREADS=1 python benchmarks/bench_identity_guidance.py [--pairs 12] [--out id_guidance.png]
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from dfs.figures import image_grid
from dfs.swap import diffusion as D
from dfs.swap.config import load_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=12)
    ap.add_argument("--settings", default="x_t:0:0,x_t:0:1000,x_t:2:1000,x0:1:300",
                    help="comma-separated gradient:views:γ (gradient x_t or x0)")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--out", default=None, help="PNG of sources, targets, warps and the swaps at each γ")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model, cfg, _ = D.load_swap_model(D.default_checkpoint())
    held = D.prepare_training_data(load_config("quick"), progress=False, split="held_out")
    def shrunk(x, size=40):
        small = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        return F.interpolate(small, size=x.shape[-1], mode="bilinear", align_corners=False)

    runs, scores = {}, {}
    for setting in args.settings.split(","):
        gradient, views, g = setting.split(":")
        r = D.swap_identity_score(model, held, n=args.pairs, steps=cfg.sample_steps, guidance=cfg.guidance,
                                  strength=cfg.strength, seed=args.seed, id_guidance=float(g), id_views=int(views),
                                  id_gradient=gradient)
        i, j = r["targets"], r["sources"]
        scores[setting] = (r["cos_source"], D.identity_cosines(r["results"], held, i, j, 1.0)["cos_source"],
                           D.identity_cosines(shrunk(r["results"]), held, i, j)["cos_source"])
        runs[setting] = r
        print(f"{setting:12s}: cos to source {scores[setting][0]:.3f}, blurred {scores[setting][1]:.3f}, "
              f"shrunk {scores[setting][2]:.3f}; cos to target {r['cos_target']:.3f}", flush=True)
    r0 = next(iter(runs.values()))
    warp = D.identity_cosines(r0["warped"], held, r0["targets"], r0["sources"])
    warp_b = D.identity_cosines(r0["warped"], held, r0["targets"], r0["sources"], 1.0)
    print(f"warped reference: cos to source {warp['cos_source']:.3f}, blurred {warp_b['cos_source']:.3f}")
    base = scores[next(iter(scores))]
    for setting, (sharp, blurred, small) in list(scores.items())[1:]:
        gain = sharp - base[0]
        if gain > 0:
            print(f"gain of {setting} over {next(iter(scores))}: {gain:+.3f} sharp, {blurred - base[1]:+.3f} blurred "
                  f"({(blurred - base[1]) / gain:.2f} kept), {small - base[2]:+.3f} shrunk "
                  f"({(small - base[2]) / gain:.2f} kept)")
    if args.out:
        k = min(8, args.pairs)
        fig = image_grid({"source": list(held.crops[r0["sources"][:k]]), "target": list(held.crops[r0["targets"][:k]]),
                          "warp": list(r0["warped"][:k]), **{name: list(r["results"][:k]) for name, r in runs.items()}})
        fig.savefig(args.out, dpi=110, bbox_inches="tight")
        print("wrote", args.out)


if __name__ == "__main__":
    main()
