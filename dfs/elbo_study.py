"""Notebook 03's experiments: which loss (L_simple, L_hybrid, L_vlb), which variance (fixed or learned), which
schedule (linear or cosine) and how few sampling steps — measured as NLL in bits/dim, a sample distance to
held-out data and gradient noise (Nichol & Dhariwal 2021, "iDDPM", §3–4, at a much smaller scale).

    cfg = study_config(quick=True)
    train, test = digits_8bit(flat=cfg.model == "mlp")
    run = train_run("hybrid", "cosine", cfg, train)         # a Run: EMA model, schedule, variance, history
    bpd = nll(run, test)                                     # bits/dim per held-out digit (the full bound)
    x = sample(run, 500, K=50, sampler="ddpm")               # K respaced steps (iDDPM §4)

The maths is in :mod:`dfs.diffusion`; this module only wires models, data and :class:`dfs.train.Trainer`.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from . import diffusion as D
from . import stats
from .smoke import smoke_caps

LOSSES = ("simple", "hybrid", "vlb")
SAMPLERS = ("ddpm_small", "ddpm_large", "ddpm_learned", "ddim")


QUICK_RUNS = (("simple", "cosine"), ("hybrid", "cosine"), ("vlb", "cosine"), ("hybrid", "linear"))


@dataclass
class StudyConfig:
    T: int = 250                        # diffusion steps used for training
    model: str = "mlp"                  # "mlp" (flattened 8×8 digits) or "unet" (diffusers UNet2DModel on 8×8)
    hidden: int = 384                   # MLP width
    layers: int = 2                     # MLP residual blocks
    steps: int = 700                    # training updates per run (the same for every loss)
    batch_size: int = 128
    lr: float = 2e-3
    ema_decay: float = 0.995
    runs: tuple = QUICK_RUNS            # (loss, schedule) pairs to train
    n_samples: int = 250                # samples per sampler and K
    Ks: tuple = (1000, 250, 100, 50, 25, 10)   # iDDPM Fig. 8's K; those > T are skipped
    probe_every: int = 175              # gradient-noise probe interval (steps)
    probe_batches: int = 12             # minibatches per gradient-noise estimate
    device: str | None = None           # None: accelerate decides (CUDA when present)
    mixed_precision: str = "no"         # fp32: the bound's small-t terms need it
    progress: bool = False


def study_config(quick: bool, **overrides) -> StudyConfig:
    """QUICK: an MLP on flattened digits, T = 250, 700 updates per run, 4 runs (a few CPU minutes in all).
    FULL: diffusers' UNet2DModel on the 8×8 images, T = 1000, 8000 updates per run, 5 runs (a GPU is advised)."""
    cfg = StudyConfig() if quick else StudyConfig(
        T=1000, model="unet", steps=8000, batch_size=256, lr=5e-4, ema_decay=0.999, probe_every=1000,
        n_samples=1000, runs=QUICK_RUNS + (("simple", "linear"),))
    cfg = replace(cfg, **overrides)
    caps = smoke_caps()
    if caps is not None:   # DFS_SMOKE=1: every run and bound on a short chain, a few digits, samples and K (dfs.smoke)
        cfg = replace(cfg, T=min(cfg.T, caps.max_chain), batch_size=min(cfg.batch_size, caps.max_batch),
                      n_samples=min(cfg.n_samples, caps.max_data_items), Ks=tuple(sorted(cfg.Ks)[:caps.max_grid]),
                      probe_batches=min(cfg.probe_batches, caps.max_grid))
    return cfg


# ----------------------------------------------------------------------------------------------------------
# Data: scikit-learn's digits on the 8-bit grid
# ----------------------------------------------------------------------------------------------------------


def quantize_8bit(x: torch.Tensor) -> torch.Tensor:
    """Round values in [−1, 1] to the 8-bit grid u/127.5 − 1, u ∈ {0, …, 255} (what the discretised decoder
    of Ho et al. eq. 13 assumes)."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1


def digits_8bit(flat: bool = True, test_fraction: float = 0.2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The 1797 8×8 digits (:func:`dfs.data.digits.digits_images`), snapped to the 8-bit grid and split at random
    (fixed ``seed``) into train and held-out test. ``flat`` gives (N, 64) rows for the MLP, else (N, 1, 8, 8)."""
    from .data.digits import digits_images

    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    x, _ = digits_images(size=8)
    x = quantize_8bit(x)
    if flat:
        x = x.flatten(1)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_test = int(round(test_fraction * len(x)))
    train, test = x[perm[n_test:]], x[perm[:n_test]]
    caps = smoke_caps()
    if caps is not None:   # DFS_SMOKE=1: a few digits of each
        train, test = train[:caps.max_data_items], test[:caps.max_data_items]
    return train.contiguous(), test.contiguous()


# ----------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------


class UNetEps(nn.Module):
    """A diffusers ``UNet2DModel`` as a plain ``model(x_t, t) -> tensor`` (its ``.sample``)."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.unet(x, t).sample


def build_model(cfg: StudyConfig, dim: int, learned_variance: bool) -> nn.Module:
    """ε_θ (or ε_θ and v for a learned variance: twice the output channels, iDDPM §3.1) for ``dim``-dimensional
    rows (MLP) or 1×8×8 images (U-Net)."""
    out = 2 if learned_variance else 1
    if cfg.model == "mlp":
        from .toy import MLPEpsModel

        m = MLPEpsModel(dim=dim, hidden=cfg.hidden, layers=cfg.layers)
        m.out[-1] = nn.Linear(cfg.hidden, out * dim)          # the learned-variance head outputs [ε, v]
        return m
    if cfg.model == "unet":
        from .nets import build_unet

        return UNetEps(build_unet(sample_size=8, in_channels=1, out_channels=out, preset="tiny", attention=False))
    raise ValueError(f"unknown model {cfg.model!r}; choose 'mlp' or 'unet'")


# ----------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------


def schedule_for(name: str, T: int) -> D.NoiseSchedule:
    """The named schedule with T steps; the linear one rescaled by 1000/T (``scale_to_T``) so that a short chain
    destroys the signal as completely as Ho et al.'s T = 1000 one (the cosine schedule is defined for any T)."""
    return D.NoiseSchedule.from_name(name, T, scale_to_T=True)



def loss_fn(loss: str, sched: D.NoiseSchedule, decoder: str = "discretized", sampler: D.ImportanceSampler | None = None):
    """``loss_fn(model, batch, step)`` for :class:`dfs.train.Trainer`: L_simple (Ho et al. eq. 14), L_hybrid
    (iDDPM eq. 16) or L_vlb (with ``sampler``: importance-sampled t, iDDPM §3.3)."""
    if loss == "simple":
        return lambda model, x0, step: D.loss_simple(model, sched, x0)
    if loss == "hybrid":
        return lambda model, x0, step: D.loss_hybrid(model, sched, x0, decoder=decoder, return_terms=True)
    if loss == "vlb":
        return lambda model, x0, step: D.loss_vlb(model, sched, x0, sampler=sampler, decoder=decoder)
    raise ValueError(f"unknown loss {loss!r}; choose one of {LOSSES}")


@dataclass
class Run:
    name: str
    loss: str
    schedule: str
    sched: D.NoiseSchedule
    variance: str                        # "fixed_small" for L_simple runs, "learned_range" otherwise
    model: nn.Module                     # the EMA model, eval mode
    shape: tuple                         # one sample's shape: (64,) or (1, 8, 8)
    history: list
    seconds: float
    noise: list = field(default_factory=list)   # gradient-noise probe records


def train_run(loss: str, schedule: str, cfg: StudyConfig, train: torch.Tensor, seed: int = 0,
              probe: "GradientNoiseProbe | None" = None, decoder: str = "discretized") -> Run:
    """Train one model with ``loss`` on ``train`` under a ``schedule`` of cfg.T steps through the one Trainer.

    ``probe`` (optional) measures gradient noise at the live weights every ``cfg.probe_every`` steps.
    """
    from .data.digits import batch_sampler
    from .train import Trainer, TrainConfig

    sched = schedule_for(schedule, cfg.T)
    learned = loss != "simple"
    torch.manual_seed(seed)
    model = build_model(cfg, train[0].numel(), learned)
    sampler = D.ImportanceSampler(cfg.T) if loss == "vlb" else None
    base = loss_fn(loss, sched, decoder, sampler)

    def fn(m, x0, step):
        if probe is not None and step % cfg.probe_every == 0:
            probe(m, step)
        return base(m, x0, step)

    tc = TrainConfig(steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, ema_decay=cfg.ema_decay, seed=seed,
                     log_every=50, progress=cfg.progress, device=cfg.device, mixed_precision=cfg.mixed_precision,
                     grad_clip=1.0)
    t0 = time.perf_counter()
    trainer = Trainer(model, fn, batch_sampler(train, batch_size=cfg.batch_size), tc)
    history = trainer.fit()
    name = f"L_{loss}{' (IS)' if loss == 'vlb' else ''} · {schedule}"
    return Run(name, loss, schedule, sched, "learned_range" if learned else "fixed_small",
               trainer.ema_model.eval(), tuple(train.shape[1:]), history, time.perf_counter() - t0, probe.records if probe else [])


# ----------------------------------------------------------------------------------------------------------
# Gradient noise (iDDPM Fig. 2)
# ----------------------------------------------------------------------------------------------------------


def gradient_noise_scale(grads: torch.Tensor, batch_size: int) -> float:
    """McCandlish et al. (2018) B_simple = tr(Σ)/|G|² from n minibatch gradients (rows of ``grads``, (n, P)).

    With ḡ their mean and S = Σ_i ‖g_i − ḡ‖²/(n − 1) (≈ tr(Σ)/b for batch size b): tr(Σ) ≈ b·S and
    |G|² ≈ ‖ḡ‖² − S/n (unbiased). Large B means the gradient is mostly noise; iDDPM Fig. 2 plots it for
    L_vlb and L_hybrid. Returns inf when the noise swamps the mean (|G|² estimate ≤ 0).
    """
    n = grads.shape[0]
    if n < 2:
        raise ValueError("need at least 2 minibatch gradients to estimate their variance")
    g = grads.double()
    mean = g.mean(0)
    s = ((g - mean) ** 2).sum(1).sum().item() / (n - 1)
    signal = mean.pow(2).sum().item() - s / n
    return batch_size * s / signal if signal > 0 else math.inf


def refresh_importance_sampler(sampler: D.ImportanceSampler, model, sched: D.NoiseSchedule, x0: torch.Tensor,
                               variance: str = "learned_range") -> None:
    """Fill ``sampler``'s history with fresh L_t (bits/dim) for every t from :func:`dfs.diffusion.vlb_terms` on
    the ``sampler.history`` rows of ``x0``, so it is warm for the current weights."""
    terms = D.vlb_terms(model, sched, x0[: sampler.history], variance)["terms"] / (x0[0].numel() * math.log(2))
    t = torch.arange(sched.T).repeat(terms.shape[0])
    sampler.update(t, terms.flatten())


class GradientNoiseProbe:
    """Every call measures :func:`gradient_noise_scale` of L_simple (ε half only), L_hybrid, L_vlb with uniform t
    and L_vlb with importance-sampled t, all at the *same* weights (a learned-variance model), with
    ``n_batches`` independent minibatches each (torch.autograd.grad: the trainer's .grad is untouched)."""

    def __init__(self, sched: D.NoiseSchedule, train: torch.Tensor, batch_size: int, n_batches: int = 16, seed: int = 0):
        self.sched, self.train, self.b, self.n = sched, train, batch_size, n_batches
        self.g = torch.Generator().manual_seed(seed)
        self.records: list[dict] = []
        self.sampler = D.ImportanceSampler(sched.T)

    def _grads(self, model, loss) -> torch.Tensor:
        params = [p for p in model.parameters() if p.requires_grad]
        rows = []
        for _ in range(self.n):
            x0 = self.train[torch.randint(0, len(self.train), (self.b,), generator=self.g)].to(params[0].device)
            grads = torch.autograd.grad(loss(model, x0), params, allow_unused=True)
            rows.append(torch.cat([(gr if gr is not None else torch.zeros_like(p)).flatten() for gr, p in zip(grads, params)]))
        return torch.stack(rows)

    def __call__(self, model, step: int) -> dict:
        s, g = self.sched, self.g
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        x_ref = self.train[torch.randint(0, len(self.train), (self.sampler.history,), generator=g)].to(device)
        refresh_importance_sampler(self.sampler, model, s, x_ref)
        losses = {
            "L_simple": lambda m, x: D.loss_simple(lambda xt, t: D.split_model_output(m(xt, t))[0], s, x, generator=g),
            "L_hybrid": lambda m, x: D.loss_hybrid(m, s, x, generator=g),
            "L_vlb (uniform t)": lambda m, x: D.loss_vlb(m, s, x, generator=g),
            "L_vlb (importance t)": lambda m, x: D.loss_vlb(m, s, x, sampler=self._frozen(), generator=g),
        }
        rec = {"step": step}
        for name, loss in losses.items():
            rec[name] = gradient_noise_scale(self._grads(model, loss), self.b)
        model.train(was_training)
        self.records.append(rec)
        return rec

    def _frozen(self) -> D.ImportanceSampler:
        """A copy of the warm sampler that the probe's own draws do not update (keeps the estimates independent)."""
        c = D.ImportanceSampler(self.sampler.T, self.sampler.history, self.sampler.uniform_prob)
        c._losses, c._count = self.sampler._losses.clone(), self.sampler._count.clone()
        c.update = lambda t, losses: None
        return c


# ----------------------------------------------------------------------------------------------------------
# Evaluation: NLL in bits/dim, samples with K steps, distance to held-out data
# ----------------------------------------------------------------------------------------------------------


def bound(run: Run, x: torch.Tensor, variance: str | None = None, seed: int = 0, batch_size: int = 512,
          max_batch: int = 65536, clip_x0: float | None = 1.0) -> dict[str, torch.Tensor]:
    """The full bound (all T terms, :func:`dfs.diffusion.vlb_terms`) of ``run``'s model on the rows of ``x``:
    ``bits_per_dim`` per row (B,) and ``terms`` (T,), the mean of each L_t over the rows in bits/dim.

    x̂_0 is clipped to [−1, 1] inside μ_θ (``clip_x0``), as improved-diffusion's ``image_nll.py`` does: the data
    live there, and unclipped the last step of a cosine chain (β_T = 0.999, ᾱ_T ≈ 10⁻⁸) turns a tiny ε error
    into a huge x̂_0 error. Any such p_θ is a valid model, so the result is still an upper bound on its NLL.
    """
    device = next(run.model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    bpd, terms = [], torch.zeros(run.sched.T, dtype=torch.float64)
    for i in range(0, len(x), batch_size):
        out = D.vlb_terms(run.model, run.sched, x[i:i + batch_size].to(device), variance or run.variance,
                          generator=g, max_batch=max_batch, clip_x0=clip_x0)
        bpd.append(out["bits_per_dim"].cpu())
        terms += out["terms"].sum(0).cpu().double()
    return {"bits_per_dim": torch.cat(bpd), "terms": terms / (len(x) * x[0].numel() * math.log(2))}


def eps_only(model):
    """The ε half of a learned-variance model (DDIM and L_simple read only ε)."""
    return lambda x, t: D.split_model_output(model(x, t))[0]


@torch.no_grad()
def sample(run: Run, n: int, K: int, sampler: str, seed: int = 0) -> torch.Tensor:
    """n samples with K respaced steps (iDDPM §4): ``"ddpm_small"`` (σ² = β̃'), ``"ddpm_large"`` (σ² = β'),
    ``"ddpm_learned"`` (Σ_θ of eq. 15 on the respaced β', β̃') or ``"ddim"`` (η = 0). x̂_0 is clipped to [−1, 1]."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")
    if sampler == "ddpm_learned" and run.variance != "learned_range":
        raise ValueError(f"ddpm_learned needs a learned-variance run; {run.name} has {run.variance}")
    device = next(run.model.parameters()).device
    sched, S = D.respace(run.sched, K)
    model = run.model if run.variance == "fixed_small" or sampler == "ddpm_learned" else eps_only(run.model)
    model = D.RespacedModel(model, S)
    shape = (n, *run.shape)
    g = torch.Generator().manual_seed(seed)
    if sampler == "ddim":
        return D.ddim_sample(model, sched, shape, steps=K, generator=g, device=device, clip_x0=1.0, progress=False).cpu()
    variance = {"ddpm_small": "fixed_small", "ddpm_large": "fixed_large", "ddpm_learned": "learned_range"}[sampler]
    return D.ddpm_sample(model, sched, shape, generator=g, device=device, variance=variance, clip_x0=1.0,
                         progress=False).cpu()


def mmd(x: torch.Tensor, y: torch.Tensor, scales=(0.5, 1.0, 2.0)) -> float:
    """Unbiased MMD² (:func:`dfs.toy.mmd_rbf`) between flattened sample sets, with RBF bandwidths at ``scales``
    times the median pairwise distance of ``y`` (the median heuristic; digits live at distances ≈ 5–10)."""
    from .toy import mmd_rbf

    x, y = x.flatten(1).double(), y.flatten(1).double()
    med = torch.cdist(y, y).median().item()
    return mmd_rbf(x, y, bandwidths=tuple(s * med for s in scales)).item()


def quality_vs_steps(runs: dict, Ks, test: torch.Tensor, n: int, seed: int = 0) -> dict:
    """MMD² to ``test`` of n samples for every (sampler, K): ``runs`` maps a sampler name to the Run it samples
    from (e.g. ``{"ddpm_small": simple, "ddpm_learned": hybrid, "ddim": simple}``). Returns {sampler: {K: mmd}}
    and keeps the samples of the smallest and largest K in ``["samples"][sampler][K]``."""
    out, keep = {}, {}
    for sampler, run in runs.items():
        out[sampler], keep[sampler] = {}, {}
        for K in Ks:
            x = sample(run, n, K, sampler, seed=seed)
            out[sampler][K] = mmd(x, test)
            if K in (min(Ks), max(Ks)):
                keep[sampler][K] = x
    out["samples"] = keep
    return out


def digit_grid(x: torch.Tensor, nrow: int = 10) -> torch.Tensor:
    """Rows of 64 values (or (N, 1, 8, 8)) tiled into one (8·rows + gaps) image in [0, 1] for ``imshow``."""
    x = x.reshape(-1, 8, 8)[: nrow * max(1, len(x) // nrow)]
    rows = math.ceil(len(x) / nrow)
    grid = torch.ones(rows * 9 - 1, nrow * 9 - 1)
    for i, im in enumerate(x):
        r, c = divmod(i, nrow)
        grid[r * 9:r * 9 + 8, c * 9:c * 9 + 8] = (im.clamp(-1, 1) + 1) / 2
    return grid


def paired_difference(a: torch.Tensor, b: torch.Tensor, z: float = 2.0) -> tuple[float, float, str]:
    """Δ = mean(a − b) over paired per-sample values (e.g. bits/dim of the same held-out digits under two models,
    with the same noise draws), its standard error (:func:`dfs.stats.paired_difference`), and ``"yes"`` if
    Δ < −z·se (a is lower), ``"no"`` if Δ > z·se, else ``"inconclusive"``."""
    delta, se = stats.paired_difference(a.detach().double().cpu(), b.detach().double().cpu())
    return delta, se, "yes" if delta < -z * se else "no" if delta > z * se else "inconclusive"


# ----------------------------------------------------------------------------------------------------------
# Rate and distortion along the reverse chain (Ho et al. §4.3, Fig. 5; LDM Fig. 2 = thesis Fig. 1.4)
# ----------------------------------------------------------------------------------------------------------


def rate_distortion(model, sched: D.NoiseSchedule, x0: torch.Tensor, variance: str = "fixed_small",
                    decoder: str = "discretized", clip_x0: float | None = None, seed: int = 0,
                    batch_size: int = 512, max_batch: int = 65536,
                    dims: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Rate against distortion along the reverse chain: the progressive-coding reading of the bound (Ho et al.
    2020, §4.3 and Fig. 5), which LDM (Rombach et al. 2022) Fig. 2 — the thesis' Fig. 1.4 — redraws.

    A receiver that decodes x_T, x_{T−1}, …, x_0 with p_θ pays, in expectation, L_T for x_T and L_{s−1} for each
    further step (the terms of Ho et al. eq. 5, :func:`dfs.diffusion.vlb_terms`). Holding x_t it has paid

        R(t) = (L_T + Σ_{s=t+1}^{T} L_{s−1}) / (D ln 2)   bits/dim,     R(T) = L_T/(D ln 2),  R(0) = the whole bound,

    and its best guess of the image is x̂_0(x_t) = (x_t − √(1 − ᾱ_t) ε_θ(x_t, t))/√ᾱ_t (Ho et al. eq. 4 solved for
    x_0, clipped to [−c, c] with ``clip_x0`` as μ_θ uses it), so the distortion is

        Dist(t) = √( E ‖x_0 − x̂_0(x_t)‖² / D ),   x_t ~ q(x_t | x_0),   Dist(0) = 0 (x_0 itself is decoded).

    Both come from the same draws x_t (one per sample and step; ``seed`` and the batching are those of
    :func:`bound`, so R(0) equals its ``bits_per_dim`` exactly). Distortion is in the data's units: for pixels in
    [−1, 1] multiply by 127.5 for Ho et al.'s and LDM's RMSE on the 0–255 scale. ``dims`` (0/1, shaped like
    ``x0``): count only those dimensions in both, D per sample (:func:`dfs.diffusion.vlb_terms`; e.g. the face
    region of an inpainting model, :func:`dfs.swap.bound.held_out_rate_distortion`).

    Returns, ordered along the reverse chain (t = T, T−1, …, 0, so the rate grows): ``t`` (T+1,) the paper's step;
    ``rate`` (T+1,) the mean R(t) over the samples; ``distortion`` (T+1,) the RMSE above; and per sample
    ``rate_per_sample`` and ``sq_error_per_sample`` (B, T+1) (the latter ‖x_0 − x̂_0‖²/D) for intervals.
    """
    return rate_distortion_per_variance(model, sched, x0, (variance,), decoder, clip_x0, seed, batch_size, max_batch,
                                        dims)[variance]


def rate_distortion_per_variance(model, sched: D.NoiseSchedule, x0: torch.Tensor, variances=("fixed_small", "fixed_large"),
                                 decoder: str = "discretized", clip_x0: float | None = None, seed: int = 0,
                                 batch_size: int = 512, max_batch: int = 65536,
                                 dims: torch.Tensor | None = None) -> dict[str, dict[str, torch.Tensor]]:
    """:func:`rate_distortion` for each variance of ``variances`` ({variance: its dict}) from one network pass per
    draw (:func:`dfs.diffusion.vlb_terms_per_variance`): the same draws x_t, so the curves are paired, for the
    cost of one. Each dict equals :func:`rate_distortion`'s for that variance and ``seed``."""
    if x0.dim() < 2 or len(x0) == 0:
        raise ValueError(f"x0 must be a batch of at least one sample, shape (B, ...); got {tuple(x0.shape)}")
    params = list(model.parameters()) if isinstance(model, nn.Module) else []
    device = params[0].device if params else x0.device
    g = torch.Generator().manual_seed(seed)
    rates, errors = {v: [] for v in variances}, {v: [] for v in variances}
    for i in range(0, len(x0), batch_size):
        xb = x0[i:i + batch_size].to(device)
        outs = D.vlb_terms_per_variance(model, sched, xb, variances, decoder=decoder, generator=g, max_batch=max_batch,
                                        clip_x0=clip_x0, dims=None if dims is None else dims[i:i + batch_size].to(device))
        for v, out in outs.items():
            bits = out["dims"][:, None] * math.log(2)
            prior = out["prior"][:, None]
            paid = out["terms"].flip(1).cumsum(1)          # column j: Σ of the L_s with s ≥ T−1−j (code step = s)
            rates[v].append((torch.cat([prior, prior + paid], 1) / bits).cpu().double())
            err = out["x0_sq_error"].flip(1)               # column j: x̂_0 from x_t, t = T − j (paper)
            errors[v].append(torch.cat([err, torch.zeros_like(err[:, :1])], 1).cpu().double())
    result = {}
    for v in rates:
        rate, sq_error = torch.cat(rates[v]), torch.cat(errors[v])
        result[v] = {"t": torch.arange(sched.T, -1, -1), "rate": rate.mean(0), "distortion": sq_error.mean(0).sqrt(),
                     "rate_per_sample": rate, "sq_error_per_sample": sq_error}
    return result


def rate_share_below(rd: dict[str, torch.Tensor], t: int, n_boot: int = 1000, seed: int = 0,
                     level: float = 0.95) -> dict[str, float]:
    """The share of the whole rate that the last t steps cost, (R(0) − R(t))/R(0), from a :func:`rate_distortion`
    result, with a percentile bootstrap interval over its samples (rows resampled, ratio of means recomputed;
    :func:`dfs.stats.bootstrap_interval`), and the distortion Dist(t) still left when those bits start (data units,
    with its delta-method standard error √Var(‖x_0 − x̂_0‖²/D)/(2 Dist √B))."""
    steps = rd["t"].tolist()
    if t not in steps:
        raise ValueError(f"t = {t} is not a step of this chain (0 … {steps[0]})")
    j = steps.index(t)
    R, S = rd["rate_per_sample"], rd["sq_error_per_sample"]
    lo, hi = stats.bootstrap_interval(R[:, [j, -1]].double().cpu(), n_boot, level, seed,
                                      statistic=lambda r: 1 - r[..., 0].mean(1) / r[..., 1].mean(1))
    dist = S[:, j].mean().sqrt().item()
    dist_se = S[:, j].std().item() / (2 * dist * math.sqrt(len(S))) if dist > 0 else 0.0
    return {"t": t, "share": 1 - (R[:, j].mean() / R[:, -1].mean()).item(), "low": lo, "high": hi,
            "distortion": dist, "distortion_se": dist_se, "n": len(R)}


def curve_knee(x: torch.Tensor, y: torch.Tensor) -> int:
    """Index of the point of a falling curve y(x) farthest below the straight line through its two end points, both
    axes first scaled to [0, 1] (the "Kneedle" rule, Satopää et al. 2011): where a rate–distortion curve turns from
    steep (distortion bought cheaply) to flat (bits that barely lower it). A geometric choice, not a perceptual one."""
    x, y = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    if x.dim() != 1 or x.shape != y.shape or len(x) < 3:
        raise ValueError(f"need two 1-D tensors of the same length ≥ 3; got {tuple(x.shape)}, {tuple(y.shape)}")
    if x[-1] == x[0] or y[0] == y[-1]:
        raise ValueError("the end points must differ in both x and y")
    xs, ys = (x - x[0]) / (x[-1] - x[0]), (y - y[-1]) / (y[0] - y[-1])
    return int(torch.argmax((1 - xs) - ys))
