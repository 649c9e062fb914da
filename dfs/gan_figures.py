"""The figures of notebook 02b, drawn from a :class:`dfs.gan_study.StudyResult`: the classic grid of samples over
training steps, modes covered (and quality, and the discriminator's gradient norm) against steps with a band over
seeds, and the covered-mode maps that show mode hopping."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from .gan_study import MIXTURES, TITLES, StudyResult
from .labels import lbl

LIM = 2.3


def _scatter(ax, x, gmm, title, color="tab:blue"):
    means = gmm.means.numpy()
    ax.scatter(means[:, 0], means[:, 1], s=60, facecolors="none", edgecolors="0.6", lw=0.8)
    ax.scatter(x[:, 0], x[:, 1], s=1.5, alpha=0.35, color=color, rasterized=True)
    ax.set(xlim=(-LIM, LIM), ylim=(-LIM, LIM), aspect="equal", xticks=[], yticks=[])
    ax.set_title(title, fontsize=11)


def sample_grid(result: StudyResult, dataset: str, data) -> plt.Figure:
    """Rows: every GAN variant at the shown training steps, then the diffusion model's samplers; seed 0.
    Grey circles mark the modes (so a missing mode is an empty circle)."""
    cfg = result.config
    gmm = MIXTURES[dataset]()
    variants = [v for v in cfg.variants]
    diff_labels = sorted({k[2] for k in result.samples if k[0] == dataset and k[1] == "diffusion"},
                         key=lambda s: (not s.startswith("DDPM"), -int(s.split()[-1])))
    ncol = max(len(cfg.shown_steps), len(diff_labels) + 1)
    fig, axes = plt.subplots(len(variants) + 1, ncol, figsize=(2.1 * ncol, 2.25 * (len(variants) + 1)),
                             squeeze=False)
    for r, name in enumerate(variants):
        for c in range(ncol):
            ax = axes[r, c]
            if c >= len(cfg.shown_steps):
                ax.axis("off")
                continue
            step = cfg.shown_steps[c]
            _scatter(ax, result.samples[dataset, name, step][:1000], gmm, lbl("step {step}", step=step))
        axes[r, 0].set_ylabel(name, fontsize=12)
    row = axes[len(variants)]
    _scatter(row[0], data[:1000], gmm, lbl("held-out data"), color="k")
    for c, label in enumerate(diff_labels, 1):
        _scatter(row[c], result.samples[dataset, "diffusion", label][:1000], gmm, label, color="tab:green")
    for ax in row[len(diff_labels) + 1:]:
        ax.axis("off")
    row[0].set_ylabel(lbl("diffusion\n(final)"), fontsize=12)
    fig.suptitle(lbl("{data}: GAN samples over generator steps (seed 0) and the diffusion reference",
                     data=lbl(TITLES[dataset])), fontsize=13, y=1.0)
    fig.tight_layout()
    return fig


def _band(ax, steps, values, color, log=False):
    """Mean over seeds (geometric mean when ``log``) with the range over seeds as a band."""
    v = np.asarray(values, dtype=float)                       # (seeds, checkpoints)
    m = np.exp(np.log(np.maximum(v, 1e-12)).mean(0)) if log else v.mean(0)
    ax.plot(steps, m, color=color, lw=1.6)
    ax.fill_between(steps, v.min(0), v.max(0), color=color, alpha=0.2, lw=0)


def curves(result: StudyResult, dataset: str) -> plt.Figure:
    """One column per variant; rows: modes covered, high-quality fraction, E‖∇_x D‖ at G(z) against generator steps.
    Line: mean over seeds (geometric for the gradient norm); band: the range over seeds. Dashed green: where the
    diffusion model ends (DDPM, mean and range over its seeds); dotted: all modes / the data's quality."""
    cfg = result.config
    k = MIXTURES[dataset]().n_components
    colors = plt.get_cmap("tab10").colors
    n = len(cfg.variants)
    fig, axes = plt.subplots(3, n, figsize=(3.0 * n, 8.2), sharex=True, sharey="row", squeeze=False)
    ddpm = result.finals[dataset, f"diffusion · DDPM {cfg.T}"]
    grads = np.concatenate([np.asarray(result.curves[dataset, v]["grad_fake"]).ravel() for v in cfg.variants])
    grads = grads[grads > 0]
    for j, name in enumerate(cfg.variants):
        c = result.curves[dataset, name]
        _band(axes[0, j], c["steps"], c["modes"], colors[j])
        _band(axes[1, j], c["steps"], c["hq"], colors[j])
        _band(axes[2, j], c["steps"], c["grad_fake"], colors[j], log=True)
        for ax, key in zip(axes[:2, j], ("modes", "hq")):
            ax.axhline(np.mean(ddpm[key]), color="tab:green", ls="--", lw=1.4)
            ax.axhspan(min(ddpm[key]), max(ddpm[key]), color="tab:green", alpha=0.12, lw=0)
        axes[0, j].axhline(k, color="k", ls=":", lw=1)
        axes[1, j].axhline(float(np.mean(result.floor[dataset]["hq"])), color="k", ls=":", lw=1)
        axes[0, j].set_title(name, fontsize=12)
        axes[2, j].set(xlabel=lbl("generator step"), yscale="log")
        if len(grads):
            axes[2, j].set_ylim(grads.min() / 2, grads.max() * 2)
    axes[0, 0].set(ylabel=lbl("modes covered"), ylim=(-0.3, k + 0.5))
    axes[1, 0].set(ylabel=lbl("high-quality fraction\n(within 3σ of a mode)"), ylim=(0, 1.02))
    axes[2, 0].set(ylabel=lbl("E‖∇ₓD(x)‖ at x = G(z)"))
    axes[0, 0].plot([], [], color="tab:green", ls="--", label=lbl("diffusion, DDPM {T} (end)", T=cfg.T))
    axes[0, 0].plot([], [], color="k", ls=":", label=lbl("all {k} modes / data", k=k))
    fig.legend(loc="lower center", ncol=2, fontsize=10, frameon=False)
    fig.suptitle(lbl("{data}: mean over {seeds} seeds, band = range over seeds", data=lbl(TITLES[dataset]),
                     seeds=cfg.seeds), fontsize=13)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def mode_maps(result: StudyResult, dataset: str, seed: int = 0) -> plt.Figure:
    """Which modes each GAN variant covers at every checkpoint (one seed): a dark cell is a covered mode. A mode
    that turns light again was left (Thanh-Tung & Tran's forgetting); the title counts such drops."""
    cfg = result.config
    fig, axes = plt.subplots(1, len(cfg.variants), figsize=(2.9 * len(cfg.variants), 3.6), squeeze=False)
    for ax, name in zip(axes[0], cfg.variants):
        c = result.curves[dataset, name]
        cov = c["covered"][seed].numpy().astype(float)            # (checkpoints, K)
        drops = int((cov[:-1].astype(bool) & ~cov[1:].astype(bool)).sum())
        ax.imshow(cov.T, aspect="auto", cmap="Greys", vmin=0, vmax=1, interpolation="nearest",
                  extent=(c["steps"][0] - cfg.eval_every / 2, c["steps"][-1] + cfg.eval_every / 2,
                          cov.shape[1] - 0.5, -0.5))
        ax.set_title(f"{name}\n" + (lbl("{n} drop", n=drops) if drops == 1 else lbl("{n} drops", n=drops)), fontsize=11)
        ax.set_xlabel(lbl("generator step"))
    axes[0, 0].set_ylabel(lbl("mode index"))
    fig.suptitle(lbl("{data}: covered modes over training (seed {seed})", data=lbl(TITLES[dataset]), seed=seed),
                 fontsize=13)
    fig.tight_layout()
    return fig
