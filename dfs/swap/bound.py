"""The swap model's variational bound, and thesis Fig. 1.4 (LDM Fig. 2) drawn for it: rate against distortion along
the reverse chain of the diffusion swap (:mod:`dfs.swap.diffusion`) on held-out faces.

    rd = held_out_rate_distortion(model, held, n=8, steps=50)    # held: SwapData of the held-out people
    rd["rate"], rd["distortion"], rd["t_chain"]                   # E.rate_distortion's curve, on the T-step axis

The maths is :func:`dfs.elbo_study.rate_distortion` over :func:`dfs.diffusion.vlb_terms`, which take an ε-model
``model(x_t, t)``. :class:`ConditionalEps` turns the swap model (an x_0-, v- or ε-model conditioned on the masked
target, mask, landmarks, warped source and identity tokens) into one, with the condition of each face bound.

The pairs are self-reconstructions, as in training (:class:`dfs.swap.data.SwapData`): x_0 is a real held-out
photo, the reference and identity come from *another* photo of the same person, so the bound is that of the real
target crop. The rate counts the face region only (``mask_level``): outside it the condition already holds the
target's pixels, and the question is what the model pays for the face it has to make.
"""
from __future__ import annotations

import torch
from torch import nn

from dfs import elbo_study as E
from dfs.diffusion import RespacedModel, predict_x0_from_eps, q_sample, respace
from dfs.metrics import bootstrap_interval
from dfs.swap.data import SwapData
from dfs.smoke import cap


class ConditionalEps(nn.Module):
    """The swap model with a fixed condition, as the plain ε-model ``eps(x_t, t)`` that :mod:`dfs.diffusion` takes.

    ``cond`` (B, C, S, S) and ``tokens`` (B, K, d) are those of B faces (:meth:`SwapDiffusion.condition`,
    :meth:`SwapDiffusion.tokens`); ``x_t`` may hold any whole number of copies of the B faces, row k·B + i being face
    i (the timestep-major layout of :func:`dfs.diffusion.vlb_terms`). For an x_0-model the output is

        ε̂ = (x_t − √ᾱ_t x̂_0)/√(1 − ᾱ_t),     thesis eq. (2), x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε, solved for ε

    with x̂_0 the network's (plus r ⊙ m with ``reference_skip``), as :meth:`SwapDiffusion.eps` converts it; the
    samplers' guidance is not applied (s = 1: the conditional model whose bound this is)."""

    def __init__(self, model: nn.Module, cond: torch.Tensor, tokens: torch.Tensor):
        super().__init__()
        if len(cond) != len(tokens):
            raise ValueError(f"cond and tokens need one row per face, got {len(cond)} and {len(tokens)}")
        self.model, self.cond, self.tokens = model, cond, tokens

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        B = len(self.cond)
        if len(x_t) % B:
            raise ValueError(f"x_t has {len(x_t)} rows, not a multiple of the {B} faces whose condition is bound")
        k = len(x_t) // B
        return self.model.eps(x_t, t, self.cond.repeat(k, 1, 1, 1), self.tokens.repeat(k, 1, 1))


def bind_pairs(model: nn.Module, data: SwapData, i: torch.Tensor, j: torch.Tensor):
    """(x_0, mask, ε-model) for targets ``i`` with sources ``j``: the real target crops, their soft masks, and
    :class:`ConditionalEps` with each target's condition and its source's identity tokens and warped pixels
    (undegraded, :meth:`SwapData.references`), on the model's device."""
    dev = next(model.parameters()).device
    x0, mask, lm = data.crops[i].to(dev), data.masks[i].to(dev), data.landmarks68[i].to(dev)
    ref = data.references(i, j).to(dev) if model.config.source_pixels else None
    with torch.no_grad():
        cond, tokens = model.condition(x0, mask, lm, ref), model.tokens(data.embeddings[j].to(dev))
    return x0, mask, ConditionalEps(model, cond, tokens)


def face_region(mask: torch.Tensor, level: float = 0.5, channels: int = 3) -> torch.Tensor:
    """The dimensions the face's rate counts: every colour channel of each pixel whose soft mask is ≥ ``level``
    (0/1, (B, channels, S, S)), so D = channels × that many pixels."""
    if not 0 < level <= 1:
        raise ValueError(f"the mask level must lie in (0, 1], got {level}")
    return (mask >= level).to(mask.dtype).expand(-1, channels, -1, -1)


def held_out_rate_distortion(model: nn.Module, data: SwapData, n: int, steps: int | None = None,
                             variance: str = "fixed_small", seed: int = 0, mask_level: float = 0.5,
                             max_batch: int = 16) -> dict:
    """Rate against distortion (:func:`dfs.elbo_study.rate_distortion`) of the conditional swap model on ``n``
    different held-out faces of ``data`` (:meth:`SwapData.distinct_pairs`, drawn with ``seed``), each the target
    x_0 of a self-reconstruction whose source is another photo of the same person.

    R(t) is in bits per dimension of the face region (:func:`face_region`), Dist(t) the RMSE of x̂_0 (clipped to
    [−1, 1], as the sampler clips it) over the same dimensions, in units of [−1, 1] (× 127.5 for 0–255).

    ``steps``: the chain. None (or T) is the model's own T-step chain. K < T is the K-step chain over evenly
    spaced kept steps (iDDPM §4, :func:`dfs.diffusion.respace`), the same network: a different, shorter p_θ whose
    bound is still computed exactly (every one of its K terms, no subsampling) — an upper bound on that chain's
    NLL, looser than the T-step one, for a tenth of the compute. ``max_batch``: rows per U-Net call.

    Returns rate_distortion's dict (``t`` on the chain's own steps K … 0) with ``t_chain``: each point's step on
    the model's T-step axis, ``dims`` (n,): D per face, ``targets`` and ``sources``: the pairs (indices of data).
    """
    return held_out_rate_distortions(model, data, n, steps, (variance,), seed, mask_level, max_batch)[variance]


def held_out_rate_distortions(model: nn.Module, data: SwapData, n: int, steps: int | None = None,
                              variances=("fixed_small", "fixed_large"), seed: int = 0, mask_level: float = 0.5,
                              max_batch: int = 16) -> dict[str, dict]:
    """:func:`held_out_rate_distortion` for each variance of ``variances`` ({variance: its dict}) on the same faces
    and draws, from one U-Net pass per draw (:func:`dfs.elbo_study.rate_distortion_per_variance`): comparing
    σ_t² = β̃_t with σ_t² = β_t costs one bound, not two."""
    if n < 1:
        raise ValueError(f"n must be at least 1 face, got {n}")
    sched = model.schedule
    n = cap(n, "max_eval_pairs")                                 # dfs reproduce --smoke: toy length
    steps = cap(sched.T if steps is None else steps, "max_bound_steps")
    i, j = data.distinct_pairs(n, torch.Generator().manual_seed(seed))
    x0, mask, eps = bind_pairs(model, data, i, j)
    S = torch.arange(sched.T)
    chain, fn = sched, eps
    if steps is not None and steps != sched.T:
        chain, S = respace(sched, steps)
        fn = RespacedModel(eps, S)
    dims = face_region(mask, mask_level, x0.shape[1])
    rds = E.rate_distortion_per_variance(fn, chain, x0, variances, clip_x0=1.0, seed=seed, batch_size=len(x0),
                                         max_batch=max_batch, dims=dims)
    step_of = torch.cat([torch.zeros(1, dtype=torch.long), S + 1])     # chain step τ ≥ 1 is code step S_{τ−1}
    extra = {"dims": dims.flatten(1).sum(1).cpu(), "targets": i, "sources": j}
    return {v: {**rd, "t_chain": step_of[rd["t"]], **extra} for v, rd in rds.items()}


@torch.no_grad()
def predicted_x0(model: nn.Module, data: SwapData, i: torch.Tensor, j: torch.Tensor, ts, seed: int = 0) -> torch.Tensor:
    """x̂_0(x_t) of targets ``i`` (sources ``j``) at each paper step t of ``ts`` of the T-step chain (t = 0: x_0
    itself), pasted through the mask into the target as the pipeline pastes a swap: (len(ts), B, 3, S, S) in [−1, 1].
    One noise draw per face (``seed``) for every t."""
    x0, mask, eps = bind_pairs(model, data, i, j)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed)).to(x0)
    out = []
    for t in ts:
        if t == 0:
            out.append(x0)
            continue
        code = torch.full((len(x0),), int(t) - 1, device=x0.device)         # paper t is code step t − 1
        x_t = q_sample(model.schedule, x0, code, noise)
        x0_hat = predict_x0_from_eps(model.schedule, x_t, code, eps(x_t, code)).clamp(-1, 1)
        out.append(mask * x0_hat + (1 - mask) * x0)
    return torch.stack(out).cpu()


RATE, SHARE, DIST = "R(t) (bits/dim)", "share of R(0) paid after t", "Dist(t) (RMSE, 0–255)"


def curve_rows(rd: dict, chain_steps, seed: int = 0) -> list[dict]:
    """Table rows (for :func:`dfs.results.record`) of a :func:`held_out_rate_distortion` curve at ``chain_steps``
    (steps of its own chain, K … 0): t on the model's T-step axis, R(t) with a 95 % percentile bootstrap interval
    over the faces (:func:`dfs.metrics.bootstrap_interval`), the share of R(0) the remaining steps cost
    (:func:`dfs.elbo_study.rate_share_below`, bootstrap) and Dist(t) on the 0–255 scale, its interval the square
    root of the bootstrap interval of the mean squared error."""
    K, n = len(rd["t"]) - 1, len(rd["rate_per_sample"])
    rows = []
    for step in chain_steps:
        j = K - int(step)
        rate, sq = rd["rate_per_sample"][:, j].tolist(), rd["sq_error_per_sample"][:, j].tolist()
        r_lo, r_hi = bootstrap_interval(rate, seed=seed)
        d_lo, d_hi = bootstrap_interval(sq, seed=seed)
        share = E.rate_share_below(rd, int(step), seed=seed)
        rows.append({"t": int(rd["t_chain"][j]), "chain step": int(step), RATE: sum(rate) / n,
                     f"{RATE} low": r_lo, f"{RATE} high": r_hi,
                     SHARE: share["share"], f"{SHARE} low": share["low"], f"{SHARE} high": share["high"],
                     DIST: 127.5 * (sum(sq) / n) ** 0.5, f"{DIST} low": 127.5 * d_lo ** 0.5,
                     f"{DIST} high": 127.5 * d_hi ** 0.5, "faces": n})
    return rows
