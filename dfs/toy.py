"""2-D toy diffusion: datasets, a Gaussian mixture with an exact score, a small MLP ε-model, Langevin dynamics.

The point of the toy is that everything can be checked. For a Gaussian mixture p(x_0) = Σ_k w_k N(μ_k, σ_k² I)
the noised marginal of eq. 2 is again a mixture,

    q_t(x_t) = ∫ q(x_t | x_0) p(x_0) dx_0 = Σ_k w_k N(√ᾱ_t μ_k, (ᾱ_t σ_k² + 1 − ᾱ_t) I),

so its score ∇ log q_t is known in closed form and so is the optimal ε-model (Tweedie's formula; Vincent 2011,
Song et al. 2021 eq. 7 ↔ Ho et al. eq. 11 with ε_θ = −√(1 − ᾱ_t) s_θ):

    ε*(x_t, t) = E[ε | x_t] = −√(1 − ᾱ_t) ∇_{x_t} log q_t(x_t).

:func:`exact_eps_model` is that ε*, which draws the reverse process with no training at all; :class:`MLPEpsModel`
and :func:`train_toy` learn an approximation with L_simple (Algorithm 1). :func:`langevin` is the thesis'
App. 2 sampler, and :func:`mmd_rbf` / :func:`sliced_wasserstein` turn "these samples look right" into numbers.
Every function is batched over samples.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from .diffusion import NoiseSchedule, extract, loss_simple, q_sample
from .smoke import cap

ScoreFn = Callable[[torch.Tensor], torch.Tensor]

# ----------------------------------------------------------------------------------------------------------
# Gaussian mixtures with closed-form density and score
# ----------------------------------------------------------------------------------------------------------


def mixture_log_components(x: torch.Tensor, means: torch.Tensor, variances: torch.Tensor,
                           log_weights: torch.Tensor) -> torch.Tensor:
    """log w_k + log N(x; μ_k, v_k I) for every sample and component, shape (B, K).

    ``means`` is (K, D) or per-sample (B, K, D); ``variances`` is (K,) or (B, K) (isotropic).
    """
    d = x.shape[-1]
    diff = x.unsqueeze(-2) - means                                   # (B, K, D)
    sq = (diff ** 2).sum(-1)                                         # (B, K)
    return log_weights - 0.5 * sq / variances - 0.5 * d * torch.log(2 * math.pi * variances)


def mixture_score(x: torch.Tensor, means: torch.Tensor, variances: torch.Tensor,
                  log_weights: torch.Tensor) -> torch.Tensor:
    """∇_x log Σ_k w_k N(x; μ_k, v_k I) = Σ_k r_k(x) (μ_k − x) / v_k, with responsibilities r = softmax(log comps)."""
    r = torch.softmax(mixture_log_components(x, means, variances, log_weights), dim=-1)   # (B, K)
    diff = means - x.unsqueeze(-2)                                                        # (B, K, D)
    return (r.unsqueeze(-1) * diff / variances.unsqueeze(-1)).sum(-2)


class GaussianMixture:
    """p(x) = Σ_k w_k N(x; μ_k, σ_k² I): isotropic components, exact sampling, log-density and score.

    ``means`` (K, D), ``stds`` (K,) and ``weights`` (K,) (normalised here). Parameters are kept in float64;
    results come back in the input's dtype (``sample`` returns float32).
    """

    def __init__(self, means, stds, weights=None):
        means = torch.as_tensor(means, dtype=torch.float64)
        if means.dim() != 2:
            raise ValueError(f"means must have shape (K, D); got {tuple(means.shape)}")
        k = means.shape[0]
        stds = torch.as_tensor(stds, dtype=torch.float64).flatten()
        if stds.numel() == 1:
            stds = stds.expand(k).clone()
        weights = torch.full((k,), 1.0 / k, dtype=torch.float64) if weights is None else \
            torch.as_tensor(weights, dtype=torch.float64).flatten()
        if stds.shape != (k,) or weights.shape != (k,):
            raise ValueError(f"stds and weights need one entry per component (K={k}); "
                             f"got {tuple(stds.shape)} and {tuple(weights.shape)}")
        if not torch.all(stds > 0):
            raise ValueError(f"every component std must be > 0; got {stds.tolist()}")
        if torch.any(weights < 0) or weights.sum() <= 0:
            raise ValueError(f"weights must be ≥ 0 with a positive sum; got {weights.tolist()}")
        self.means, self.stds, self.weights = means, stds, weights / weights.sum()

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    def __repr__(self) -> str:
        return f"GaussianMixture(K={self.n_components}, D={self.dim})"

    def sample(self, n: int, generator: torch.Generator | None = None, return_labels: bool = False):
        """n i.i.d. draws (float32, CPU): pick k ~ Categorical(w), then x = μ_k + σ_k z."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        x = (self.means[k] + self.stds[k, None] * z).float()
        return (x, k) if return_labels else x

    def _args(self, x: torch.Tensor):
        if x.shape[-1] != self.dim:
            raise ValueError(f"x must have last dimension {self.dim}; got shape {tuple(x.shape)}")
        return x.to(torch.float64), self.means.to(x.device), (self.stds ** 2).to(x.device), self.weights.log().to(x.device)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) for x of shape (B, D), computed with logsumexp over components; shape (B,)."""
        x64, m, v, lw = self._args(x)
        return torch.logsumexp(mixture_log_components(x64, m, v, lw), dim=-1).to(x.dtype)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """∇_x log p(x) = Σ_k r_k(x) (μ_k − x)/σ_k² in closed form; shape (B, D)."""
        x64, m, v, lw = self._args(x)
        return mixture_score(x64, m, v, lw).to(x.dtype)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """The most probable component of each point, argmax_k w_k N(x; μ_k, σ_k² I); shape (B,), long."""
        x64, m, v, lw = self._args(x)
        return mixture_log_components(x64, m, v, lw).argmax(-1)

    def noised(self, alpha_bar: float) -> "GaussianMixture":
        """q_t(x_t) = ∫ q(x_t | x_0) p(x_0) dx_0 for q(x_t | x_0) of eq. 2: the mixture with means √ᾱ μ_k and
        variances ᾱ σ_k² + 1 − ᾱ (a Gaussian convolved with a Gaussian)."""
        a = float(alpha_bar)
        if not 0 < a <= 1:
            raise ValueError(f"alpha_bar must lie in (0, 1]; got {alpha_bar}")
        return GaussianMixture(math.sqrt(a) * self.means, (a * self.stds ** 2 + 1 - a).sqrt(), self.weights)

    def covariance(self) -> torch.Tensor:
        """The mixture's covariance Σ_k w_k (σ_k² I + μ_k μ_kᵀ) − μ μᵀ (float64, (D, D))."""
        mu = self.weights @ self.means
        second = (self.weights[:, None, None] * (self.stds[:, None, None] ** 2 * torch.eye(self.dim, dtype=torch.float64)
                                                 + self.means[:, :, None] * self.means[:, None, :])).sum(0)
        return second - mu[:, None] * mu[None, :]


def default_gmm() -> GaussianMixture:
    """The notebooks' mixture: 5 components of unequal weight and width, roughly standardised."""
    means = [[-1.2, -0.8], [1.2, -0.9], [0.0, 1.3], [-1.3, 0.9], [1.1, 0.8]]
    stds = [0.25, 0.35, 0.20, 0.15, 0.30]
    weights = [0.25, 0.25, 0.2, 0.1, 0.2]
    return GaussianMixture(means, stds, weights)


def eight_gaussians_gmm(radius: float = 1.4, std: float = 0.1) -> GaussianMixture:
    """8 equal Gaussians on a circle (Grathwohl et al.'s FFJORD toy); per-axis std ≈ 1 with the defaults."""
    angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    return GaussianMixture(radius * torch.stack([angles.cos(), angles.sin()], 1), std)


def grid_gmm(n: int = 5, spacing: float = 0.7, std: float = 0.05) -> GaussianMixture:
    """n × n equal Gaussians on a square grid centred at 0 (the 25-mode grid of the GAN literature, e.g.
    Dumoulin et al. 2017, Srivastava et al. 2017); per-axis std ≈ 1 with the defaults (spacing·√((n²−1)/12) = 0.99)."""
    if n < 1 or spacing <= 0:
        raise ValueError(f"need n ≥ 1 and spacing > 0; got {n}, {spacing}")
    axis = (torch.arange(n, dtype=torch.float64) - (n - 1) / 2) * spacing
    xx, yy = torch.meshgrid(axis, axis, indexing="xy")
    return GaussianMixture(torch.stack([xx.flatten(), yy.flatten()], 1), std)


# ----------------------------------------------------------------------------------------------------------
# Mode coverage: which modes a sampler reaches, and how well
# ----------------------------------------------------------------------------------------------------------


def mode_quality(gmm: GaussianMixture, x: torch.Tensor, n_sigma: float = 3.0, min_fraction: float = 0.2) -> dict:
    """Mode statistics of samples ``x`` (n, D) of a mixture with well-separated isotropic components, the measures
    of the GAN mode-collapse literature (Metz et al. 2017 §3.1; Srivastava et al. 2017; Lin et al. 2018):

    * a sample is *high quality* when it lies within ``n_sigma`` standard deviations of the mean of its most
      probable component (:meth:`GaussianMixture.classify`): ‖x − μ_k‖ ≤ n_sigma·σ_k. For data itself in D = 2
      that happens with probability 1 − exp(−n_sigma²/2) (0.989 for 3σ: ‖x − μ‖²/σ² is χ²₂);
    * a mode is *covered* when it holds at least ``min_fraction`` of its expected share of the high-quality
      samples, ``min_fraction · w_k · n`` (PacGAN's rule: 20 of the 100 expected samples of a 25-mode grid).

    Returns ``counts`` (K,) high-quality samples per mode, ``covered`` (K,) bool, ``modes`` (how many covered) and
    ``hq`` (the fraction of high-quality samples).
    """
    if x.dim() != 2 or x.shape[1] != gmm.dim or len(x) == 0:
        raise ValueError(f"x must be (n, {gmm.dim}) with n ≥ 1; got {tuple(x.shape)}")
    k = gmm.classify(x)
    dist = (x.double() - gmm.means[k]).norm(dim=1)
    good = dist <= n_sigma * gmm.stds[k]
    counts = torch.bincount(k[good], minlength=gmm.n_components)
    covered = counts >= min_fraction * gmm.weights * len(x)
    return {"counts": counts, "covered": covered, "modes": int(covered.sum()), "hq": good.double().mean().item()}


def mode_drops(covered: torch.Tensor) -> dict:
    """Mode hopping along training from a (checkpoints, K) bool history of covered modes (:func:`mode_quality`).

    Thanh-Tung & Tran (2020) tie mode collapse to catastrophic forgetting: the generator leaves a mode it covered
    and may come back later. Returns ``drops`` (the number of times a mode covered at one checkpoint is not covered
    at the next), ``returns`` (not covered → covered again, after having been covered before) and ``forgotten``
    (modes covered at some checkpoint but not at the last one).
    """
    c = torch.as_tensor(covered, dtype=torch.bool)
    if c.dim() != 2:
        raise ValueError(f"covered must be (checkpoints, K); got shape {tuple(c.shape)}")
    if len(c) < 2:
        return {"drops": 0, "returns": 0, "forgotten": 0}
    before, after = c[:-1], c[1:]
    seen_before = torch.cummax(c.int(), dim=0).values.bool()[:-1]
    drops = (before & ~after).sum().item()
    returns = (~before & after & seen_before).sum().item()
    forgotten = (c.any(0) & ~c[-1]).sum().item()
    return {"drops": int(drops), "returns": int(returns), "forgotten": int(forgotten)}


# ----------------------------------------------------------------------------------------------------------
# 2-D datasets
# ----------------------------------------------------------------------------------------------------------


def _swiss_roll(n, g):
    theta = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=g))
    x = torch.stack([theta * theta.cos(), theta * theta.sin()], 1) + 0.5 * torch.randn(n, 2, generator=g)
    return (x - torch.tensor([2.0, 0.2])) / 6.8


def _two_moons(n, g):
    u = math.pi * torch.rand(n, generator=g)
    upper = torch.rand(n, generator=g) < 0.5
    x = torch.where(upper[:, None], torch.stack([u.cos(), u.sin()], 1), torch.stack([1 - u.cos(), 0.5 - u.sin()], 1))
    x = x + 0.05 * torch.randn(n, 2, generator=g)
    return (x - torch.tensor([0.5, 0.25])) / 0.7


def _checkerboard(n, g):
    x1 = 4 * torch.rand(n, generator=g) - 2
    x2 = torch.rand(n, generator=g) - 2 * torch.randint(0, 2, (n,), generator=g) + torch.floor(x1) % 2
    return torch.stack([x1, x2], 1) / 1.15


DATASETS: dict[str, Callable] = {
    "swiss_roll": _swiss_roll,
    "two_moons": _two_moons,
    "eight_gaussians": lambda n, g: eight_gaussians_gmm().sample(n, g),
    "checkerboard": _checkerboard,
    "gmm": lambda n, g: default_gmm().sample(n, g),
    "grid25": lambda n, g: grid_gmm().sample(n, g),
}


def samples_per_sampler(quick: bool) -> int:
    """N, the samples notebook 02 draws from each sampler (and of fresh data to compare them with): 1500 in quick
    mode, 5000 in full mode (MMD reads at most 2000 of them); ``dfs reproduce --smoke`` keeps ``max_data_items``."""
    return cap(1500 if quick else 5000, "max_data_items")


def make_toy(name: str, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """n points of a named 2-D dataset, float32 (n, 2), each roughly zero-mean with per-axis std ≈ 1."""
    if name not in DATASETS:
        raise ValueError(f"unknown toy dataset {name!r}; choose one of {sorted(DATASETS)}")
    if not isinstance(n, int) or n <= 0:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    return DATASETS[name](n, generator).float()


# ----------------------------------------------------------------------------------------------------------
# The exact ε-model of a Gaussian mixture
# ----------------------------------------------------------------------------------------------------------


class ExactEpsModel:
    """ε*(x_t, t) = −√(1 − ᾱ_t) ∇ log q_t(x_t) for a Gaussian-mixture p(x_0): the Bayes-optimal (minimum-MSE)
    ε-prediction E[ε | x_t], i.e. the exact minimiser of L_simple at every t (Ho et al. eq. 14)."""

    def __init__(self, gmm: GaussianMixture, sched: NoiseSchedule):
        self.gmm, self.sched = gmm, sched

    def score(self, x_t: torch.Tensor, t) -> torch.Tensor:
        """∇ log q_t(x_t) with per-sample t (code timesteps, 0-based)."""
        x64 = x_t.to(torch.float64)
        abar = extract(self.sched.alphas_cumprod, t, x64).reshape(-1, 1)          # (B, 1)
        means = abar.sqrt().unsqueeze(-1) * self.gmm.means.to(x_t.device)         # (B, K, D)
        var = abar * (self.gmm.stds.to(x_t.device) ** 2) + 1 - abar               # (B, K)
        return mixture_score(x64, means, var, self.gmm.weights.log().to(x_t.device)).to(x_t.dtype)

    def __call__(self, x_t: torch.Tensor, t) -> torch.Tensor:
        s = self.score(x_t, t)
        return -extract(self.sched.sqrt_one_minus_alphas_cumprod, t, x_t) * s


def exact_eps_model(gmm: GaussianMixture, sched: NoiseSchedule) -> ExactEpsModel:
    """The exact optimal ε-model of ``gmm`` under ``sched`` (see :class:`ExactEpsModel`)."""
    return ExactEpsModel(gmm, sched)


@torch.no_grad()
def eps_error_per_t(model, reference, sched: NoiseSchedule, x0: torch.Tensor, ts,
                    generator: torch.Generator | None = None, relative: bool = False) -> torch.Tensor:
    """E‖ε_model(x_t, t) − ε_ref(x_t, t)‖² / D for each t in ``ts``, x_t ~ q(x_t | x_0) (eq. 2); shape (len(ts),).

    With ``reference`` = the exact ε* this is the model's excess L_simple at t (L_simple(t) = L*(t) + this,
    since ε − ε* is orthogonal to every function of x_t), and, times 1/(1 − ᾱ_t), its score error.
    ``relative=True`` divides by E‖ε_ref‖² / D instead. The same x_0 and noise are used at every t.
    """
    noise = torch.randn(x0.shape, generator=generator).to(x0)
    out = []
    for t in ts:
        tt = torch.full((len(x0),), int(t), dtype=torch.long, device=x0.device)
        x_t = q_sample(sched, x0, tt, noise)
        ref = reference(x_t, tt)
        err = ((model(x_t, tt) - ref) ** 2).mean()
        out.append(err / (ref ** 2).mean() if relative else err)
    return torch.stack(out).cpu()


def grid_points(lim: float = 3.0, n: int = 25) -> torch.Tensor:
    """An n × n grid over [−lim, lim]², as (n², 2) points in row-major order (for quiver plots of a score)."""
    axis = torch.linspace(-lim, lim, n)
    xx, yy = torch.meshgrid(axis, axis, indexing="xy")
    return torch.stack([xx.flatten(), yy.flatten()], 1)


def eps_to_score(eps: torch.Tensor, sched: NoiseSchedule, t) -> torch.Tensor:
    """s(x_t, t) = −ε(x_t, t)/√(1 − ᾱ_t): the score an ε-model implies (Tweedie; Song et al. 2021 App.)."""
    return -eps / extract(sched.sqrt_one_minus_alphas_cumprod, t, eps)


# ----------------------------------------------------------------------------------------------------------
# A small MLP ε-model
# ----------------------------------------------------------------------------------------------------------


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """The Transformer/DDPM timestep embedding (Vaswani et al. §3.5; Ho et al. App. B), shape (B, dim):

        emb(t) = [sin(t ω_0), …, sin(t ω_{h−1}), cos(t ω_0), …, cos(t ω_{h−1})],  ω_i = max_period^(−i/(h−1)),

    with h = dim/2, so frequencies run geometrically from 1 down to 1/max_period (Ho et al.'s
    ``get_timestep_embedding``). ``t`` is the raw (float or integer) timestep of shape (B,).
    """
    if dim < 4 or dim % 2:
        raise ValueError(f"the embedding dimension must be an even number ≥ 4, got {dim}")
    t = torch.as_tensor(t)
    if t.dim() != 1:
        raise ValueError(f"t must have shape (B,), got {tuple(t.shape)}")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / (half - 1))
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.sin(), args.cos()], dim=1)


class MLPEpsModel(nn.Module):
    """ε_θ(x_t, t) for low-dimensional data: a residual MLP with the time embedding added to the hidden state.

    h = W_in x + MLP(emb(t)); then ``layers`` blocks h ← h + Linear(SiLU(h)); output Linear(SiLU(h)).
    """

    def __init__(self, dim: int = 2, hidden: int = 128, layers: int = 3, time_dim: int = 64):
        super().__init__()
        if dim <= 0 or hidden <= 0 or layers < 0:
            raise ValueError(f"dim and hidden must be > 0 and layers ≥ 0; got {dim}, {hidden}, {layers}")
        self.time_dim = time_dim
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden)) for _ in range(layers))
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = self.inp(x) + self.time_mlp(sinusoidal_embedding(t, self.time_dim))
        for block in self.blocks:
            h = h + block(h)
        return self.out(h)


def train_toy(data="gmm", sched: NoiseSchedule | None = None, steps: int = 2000, batch_size: int = 256,
              lr: float = 2e-3, seed: int = 0, hidden: int = 128, layers: int = 3, ema_decay: float | None = 0.995,
              progress: bool = True, log_every: int = 50, device: str | None = "cpu", model: nn.Module | None = None):
    """Train an :class:`MLPEpsModel` with L_simple (Algorithm 1) through :class:`dfs.train.Trainer`.

    ``data`` is a dataset name (a fresh batch of :func:`make_toy` every step: infinite data) or a tensor (N, D)
    (random minibatches of it). Returns ``(model, history)``: the EMA model in eval mode (the trained model when
    ``ema_decay`` is None) and the trainer's loss history.
    """
    from .train import Trainer, TrainConfig

    sched = sched or NoiseSchedule.from_name("linear", 1000)
    if isinstance(data, str):
        if data not in DATASETS:
            raise ValueError(f"unknown toy dataset {data!r}; choose one of {sorted(DATASETS)}")
        name = data
        dim = 2

        def batches(step, g):
            return make_toy(name, batch_size, g)
    else:
        x = torch.as_tensor(data, dtype=torch.float32)
        if x.dim() != 2 or len(x) == 0:
            raise ValueError(f"data must be a dataset name or a tensor of shape (N, D); got shape {tuple(x.shape)}")
        dim = x.shape[1]

        def batches(step, g):
            return x[torch.randint(0, len(x), (batch_size,), generator=g)]

    torch.manual_seed(seed)
    model = model or MLPEpsModel(dim=dim, hidden=hidden, layers=layers)
    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, ema_decay=ema_decay, seed=seed,
                      progress=progress, log_every=log_every, device=device, grad_clip=1.0)
    trainer = Trainer(model, lambda m, batch, step: loss_simple(m, sched, batch), batches, cfg)
    history = trainer.fit()
    return trainer.ema_model.eval(), history


# ----------------------------------------------------------------------------------------------------------
# Langevin dynamics (thesis App. 2)
# ----------------------------------------------------------------------------------------------------------


def langevin_step(score_fn: ScoreFn, x: torch.Tensor, step_size: float, z: torch.Tensor) -> torch.Tensor:
    """One step of unadjusted Langevin dynamics with the noise ``z`` ~ N(0, I) given (thesis App. 2; Welling & Teh
    2011 eq. 4): x + (δ/2) ∇_x log p(x) + √δ · z, δ = ``step_size``. :func:`langevin` iterates it."""
    return x + 0.5 * step_size * score_fn(x) + math.sqrt(step_size) * z


def langevin(score_fn: ScoreFn, x: torch.Tensor, step_size: float, n_steps: int,
             generator: torch.Generator | None = None, return_trajectory: bool = False):
    """Unadjusted Langevin dynamics (thesis App. 2; Welling & Teh 2011 eq. 4; Song & Ermon 2019 eq. 4):

        x ← x + (δ/2) ∇_x log p(x) + √δ · z,   z ~ N(0, I),

    where ``step_size`` is δ: the noise has *standard deviation* √δ (variance δ) and the drift is δ/2 times the
    score, so the chain is the Euler–Maruyama discretisation of dX = ½∇log p dt + dW with time step δ. Its
    stationary law tends to p as δ → 0 (no Metropolis correction, so a finite δ leaves an O(δ) bias).
    Batched over the rows of ``x``; ``score_fn(x) -> ∇log p(x)``.
    """
    if step_size <= 0:
        raise ValueError(f"step_size δ must be > 0, got {step_size}")
    if not isinstance(n_steps, int) or n_steps < 0:
        raise ValueError(f"n_steps must be an integer ≥ 0, got {n_steps!r}")
    traj = [x] if return_trajectory else None
    for _ in range(n_steps):
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        x = langevin_step(score_fn, x, step_size, z)
        if traj is not None:
            traj.append(x)
    return (x, torch.stack(traj)) if return_trajectory else x


# ----------------------------------------------------------------------------------------------------------
# Distances between sample sets
# ----------------------------------------------------------------------------------------------------------


def mmd_rbf(x: torch.Tensor, y: torch.Tensor, bandwidths=(0.1, 0.2, 0.5, 1.0, 2.0)) -> torch.Tensor:
    """Squared maximum mean discrepancy with a sum of RBF kernels k(a, b) = Σ_h exp(−‖a − b‖² / (2h²))
    (Gretton et al. 2012, the *unbiased* estimator MMD²_u of their eq. 3):

        MMD²_u = 1/(m(m−1)) Σ_{i≠j} k(x_i, x_j) + 1/(n(n−1)) Σ_{i≠j} k(y_i, y_j) − 2/(mn) Σ_{i,j} k(x_i, y_j).

    Its expectation is 0 when x and y come from the same law, so a value can be slightly negative. Memory is
    O((m + n)²): keep m, n to a few thousand.
    """
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must be (m, D) and (n, D); got {tuple(x.shape)} and {tuple(y.shape)}")
    m, n = len(x), len(y)
    if m < 2 or n < 2:
        raise ValueError("the unbiased MMD needs at least 2 samples in each set")
    x, y = x.double(), y.to(x.device).double()
    dxx, dyy, dxy = torch.cdist(x, x) ** 2, torch.cdist(y, y) ** 2, torch.cdist(x, y) ** 2
    out = torch.zeros((), dtype=torch.float64, device=x.device)
    for h in bandwidths:
        kxx, kyy, kxy = (torch.exp(-d / (2 * h * h)) for d in (dxx, dyy, dxy))
        out = out + (kxx.sum() - m) / (m * (m - 1)) + (kyy.sum() - n) / (n * (n - 1)) - 2 * kxy.mean()
    return out


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, n_projections: int = 256,
                       generator: torch.Generator | None = None, p: int = 2) -> torch.Tensor:
    """Sliced p-Wasserstein distance (Rabin et al. 2011; Bonneel et al. 2015):
    SW_p = (E_θ W_p^p(θᵀx, θᵀy))^{1/p}, θ uniform on the unit sphere, Monte-Carlo over ``n_projections``.

    Each 1-D W_p compares sorted projections (equal sizes) or, for unequal sizes, quantiles at the
    max(m, n) mid-levels (i + ½)/N. Biased upwards by sampling noise: a finite sample of the same law gives
    a small positive value.
    """
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must be (m, D) and (n, D); got {tuple(x.shape)} and {tuple(y.shape)}")
    theta = torch.randn(x.shape[1], n_projections, generator=generator, dtype=torch.float64).to(x.device)
    theta = theta / theta.norm(dim=0, keepdim=True)
    px, py = x.double() @ theta, y.to(x.device).double() @ theta            # (m, P), (n, P)
    if len(x) == len(y):
        qx, qy = px.sort(0).values, py.sort(0).values
    else:
        levels = (torch.arange(max(len(x), len(y)), dtype=torch.float64, device=x.device) + 0.5) / max(len(x), len(y))
        qx, qy = torch.quantile(px, levels, dim=0), torch.quantile(py, levels, dim=0)
    return ((qx - qy).abs() ** p).mean() ** (1 / p)
