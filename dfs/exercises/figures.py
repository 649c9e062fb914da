"""The figures behind the exercise notebooks' sliders: each takes the slider values and returns a matplotlib figure
(small and fast, so a slider redraws at once)."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import torch

from .. import diffusion as D
from .. import latent, toy
from ..labels import lbl
from . import references as R


def forward_process(t: int = 250, schedule: str = "linear", T: int = 1000):
    """Swiss-roll points x_0 and x_t ~ q(x_t | x_0) at step ``t`` (thesis eq. 2), beside ᾱ_t and SNR(t)."""
    sched = D.NoiseSchedule.from_name(schedule, T)
    g = torch.Generator().manual_seed(0)
    x0 = toy.make_toy("swiss_roll", 1500, g).double()
    x_t = D.q_sample(sched, x0, torch.full((len(x0),), t), torch.randn(x0.shape, generator=g, dtype=torch.float64))
    fig, ax = plt.subplots(1, 3, figsize=(11, 3.4))
    ax[0].scatter(*x0.T, s=2, c="0.3")
    ax[0].set_title(lbl("x_0 (swiss roll)"))
    ax[1].scatter(*x_t.T, s=2, c="C0")
    ax[1].set_title(lbl("x_t at t = {t} ({schedule})", t=t, schedule=lbl(schedule)))
    for a in ax[:2]:
        a.set_xlim(-3.5, 3.5), a.set_ylim(-3.5, 3.5), a.set_aspect("equal")
    steps = torch.arange(T)
    ax[2].plot(steps, sched.alphas_cumprod, label="ᾱ_t")
    ax[2].plot(steps, sched.snr().clamp(max=1e4).log10() / 4, label="log10 SNR(t) / 4")
    ax[2].axvline(t, color="k", lw=0.8)
    ax[2].set_xlabel(lbl("t (0-based)")), ax[2].legend(fontsize=8)
    ax[2].set_title(f"ᾱ_t = {float(sched.alphas_cumprod[t]):.3g}, SNR = {float(sched.snr()[t]):.3g}")
    fig.tight_layout()
    return fig


def snr_schedule(T: int = 1000, log10_snr_end: float = -4.4):
    """log SNR(t) of the linear schedule chosen for SNR(T) = 10^``log10_snr_end`` (:func:`R.schedule_for_snr`) next to
    Ho et al.'s (T = 1000, β from 1e-4 to 0.02) and the cosine schedule with the same T."""
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    ho = D.NoiseSchedule.from_name("linear", 1000)
    ax.plot(torch.arange(1000) / 1000, ho.snr().log10(), "k--", lw=1, label=lbl("Ho et al. (T = 1000)"))
    ax.plot(torch.arange(T) / T, D.NoiseSchedule.from_name("cosine", T).snr().clamp(min=1e-12).log10(), lw=1,
            label=lbl("cosine (T = {T})", T=T))
    try:
        mine = D.NoiseSchedule(R.schedule_for_snr(T, 10 ** log10_snr_end))
        ax.plot(torch.arange(T) / T, mine.snr().log10(), lw=2,
                label=lbl("linear for SNR(T) = 1e{e:g}: β_T = {beta:.3g}", e=log10_snr_end, beta=float(mine.betas[-1])))
    except ValueError as e:
        ax.text(0.5, 0.5, str(e), transform=ax.transAxes, ha="center", wrap=True, fontsize=8)
    ax.set_xlabel("t / T"), ax.set_ylabel("log10 SNR(t)"), ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def langevin_samples(step_size: float = 0.01, n_steps: int = 100):
    """Langevin dynamics (thesis App. 2) on the project's 2-D Gaussian mixture from uniform starting points."""
    gmm = toy.default_gmm()
    g = torch.Generator().manual_seed(0)
    start = 6 * torch.rand(1000, 2, generator=g, dtype=torch.float64) - 3
    x = toy.langevin(gmm.score, start, step_size, n_steps, generator=g)
    fig, ax = plt.subplots(1, 2, figsize=(8, 3.8), sharex=True, sharey=True)
    ax[0].scatter(*gmm.sample(1000, generator=g).T, s=2, c="0.3")
    ax[0].set_title(lbl("samples of p (exact)"))
    ax[1].scatter(*x.T, s=2, c="C1")
    ax[1].set_title(lbl("Langevin: δ = {delta:g}, {n} steps", delta=step_size, n=n_steps))
    for a in ax:
        a.set_xlim(-3.5, 3.5), a.set_ylim(-3.5, 3.5), a.set_aspect("equal")
    fig.tight_layout()
    return fig


def discretized_decoder(mu: float = 0.0, log10_sigma: float = -1.5):
    """P(x) of the 256 pixel levels under Ho et al.'s discretised Gaussian decoder (eq. 13) for one μ, σ."""
    levels = torch.arange(256, dtype=torch.float64) / 127.5 - 1
    sigma = 10 ** log10_sigma
    logp = D.discretized_gaussian_log_likelihood(levels, torch.full((256,), mu, dtype=torch.float64),
                                                 torch.full((256,), 2 * math.log(sigma), dtype=torch.float64))
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    ax.bar(levels.numpy(), logp.exp().numpy(), width=2 / 255, color="C2")
    ax.set_xlabel(lbl("pixel level x ∈ [−1, 1]")), ax.set_ylabel("P(x)")
    ax.set_title(f"μ = {mu:g}, σ = {sigma:.3g}: Σ P = {float(logp.exp().sum()):.6f}, "
                 f"P(x = 1) = {float(logp[-1].exp()):.3g}")
    fig.tight_layout()
    return fig


GUIDANCE_CLASSES = {"left": [0, 3], "right": [1, 4], "top": [2]}     # components of :func:`dfs.toy.default_gmm`


def guided_samples(scale: float, label: str = "top", n: int = 1000, steps: int = 50, seed: int = 0) -> torch.Tensor:
    """DDIM samples of the 2-D mixture with classifier-free guidance ε̃ = ε(x, ∅) + s (ε(x, y) − ε(x, ∅))
    (Ho & Salimans eq. 6, :func:`dfs.latent.cfg_eps`), where both ε's are *exact*: the unconditional mixture's and the
    class-y sub-mixture's (:class:`dfs.toy.ExactEpsModel`). s = 0 samples p(x), s = 1 samples p(x | y) (both up to
    the DDIM discretisation)."""
    if label not in GUIDANCE_CLASSES:
        raise ValueError(f"unknown class {label!r}; choose one of {sorted(GUIDANCE_CLASSES)}")
    gmm, idx = toy.default_gmm(), GUIDANCE_CLASSES[label]
    cond = toy.GaussianMixture(gmm.means[idx], gmm.stds[idx], gmm.weights[idx])
    sched = D.NoiseSchedule.from_name("cosine", 1000)
    eps_u, eps_c = toy.exact_eps_model(gmm, sched), toy.exact_eps_model(cond, sched)

    def guided(x, t):
        return latent.cfg_eps(eps_u(x, t), eps_c(x, t), scale)

    g = torch.Generator().manual_seed(seed)
    return D.ddim_sample(guided, sched, (n, 2), steps=steps, generator=g, progress=False).double()


def guidance(scale: float = 1.0, label: str = "top"):
    """Guided samples (colour) over unguided ones (grey), with the share that lands in the class's components."""
    gmm = toy.default_gmm()
    x = guided_samples(scale, label, n=600, steps=30)
    share = float(torch.isin(gmm.classify(x), torch.tensor(GUIDANCE_CLASSES[label])).double().mean())
    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    ax.scatter(*gmm.sample(1000, generator=torch.Generator().manual_seed(1)).numpy().T, s=2, c="0.75", label="p(x)")
    ax.scatter(*x.numpy().T, s=3, c="C3", label=lbl("guided, y = {y}", y=label))
    ax.set_xlim(-3, 3), ax.set_ylim(-3, 3), ax.set_aspect("equal"), ax.legend(fontsize=8, loc="lower left")
    ax.set_title(lbl("guidance scale s = {s:g}: {percent:.0f} % in class {y}, spread {spread:.2f}",
                     s=scale, percent=100 * share, y=label, spread=float(x.std(0).mean())), fontsize=9)
    fig.tight_layout()
    return fig
