"""The DDPM maths as plain tensor functions (thesis §1.1.1, App. 1; Ho et al. 2020; Nichol & Dhariwal 2021).

Symbols follow the thesis and Ho et al.:

    β_t            noise added at step t                        ``sched.betas[t-1]`` (index 0 is t = 1)
    α_t = 1 − β_t
    ᾱ_t = ∏_{s=1}^{t} α_s                                        ``sched.alphas_cumprod``
    q(x_t | x_{t−1}) = N(√(1−β_t) x_{t−1}, β_t I)                thesis eq. (1)
    q(x_t | x_0)     = N(√ᾱ_t x_0, (1−ᾱ_t) I)                   thesis eq. (2)
    q(x_{t−1} | x_t, x_0) = N(μ̃_t(x_t, x_0), β̃_t I)             thesis eq. (4)

Indexing. Code uses 0-based timesteps ``t ∈ {0, …, T−1}`` exactly like diffusers and improved-diffusion:
code step ``t`` is the paper's step ``t+1``. So ``alphas_cumprod[t]`` is ᾱ_{t+1} and ``alphas_cumprod_prev[t]``
is ᾱ_t (with ᾱ_0 = 1). Every function takes a batch of integer timesteps ``t`` of shape (B,).

This module knows nothing about images, faces or diffusers: models are any callable ``eps_model(x_t, t)``.
Its results are checked against diffusers' ``DDPMScheduler``/``DDIMScheduler`` in ``tests/test_diffusion.py``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from tqdm.auto import tqdm

EpsModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# ----------------------------------------------------------------------------------------------------------
# Schedules
# ----------------------------------------------------------------------------------------------------------


def _check_T(T: int) -> None:
    if not isinstance(T, int) or isinstance(T, bool) or T <= 0:
        raise ValueError(f"the number of diffusion steps T must be a positive integer, got {T!r}")


def linear_beta_schedule(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """Ho et al.'s linear schedule: β_1 … β_T evenly spaced from ``beta_start`` to ``beta_end``.

    The defaults are the paper's values for T = 1000. For other T, pass ``scale_to_T=True`` through
    :func:`make_beta_schedule` to keep the same total amount of noise (iDDPM's convention).
    """
    _check_T(T)
    if not (0 < beta_start < 1 and 0 < beta_end < 1):
        raise ValueError(f"betas must lie in (0, 1); got beta_start={beta_start}, beta_end={beta_end}")
    return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)


def cosine_alpha_bar(tau: torch.Tensor, s: float = 0.008) -> torch.Tensor:
    """Nichol & Dhariwal's ᾱ(τ) = f(τ)/f(0), f(τ) = cos²((τ + s)/(1 + s) · π/2), for τ = t/T ∈ [0, 1]."""
    f = torch.cos((tau + s) / (1 + s) * math.pi / 2) ** 2
    f0 = math.cos(s / (1 + s) * math.pi / 2) ** 2
    return f / f0


def cosine_beta_schedule(T: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal's cosine schedule (iDDPM eq. 17): β_t = min(1 − ᾱ(t/T)/ᾱ((t−1)/T), max_beta).

    The clip at ``max_beta`` = 0.999 avoids the singularity at t = T, as in the paper (and diffusers'
    ``squaredcos_cap_v2``).
    """
    _check_T(T)
    steps = torch.arange(T + 1, dtype=torch.float64) / T
    abar = cosine_alpha_bar(steps, s)
    return torch.clamp(1 - abar[1:] / abar[:-1], max=max_beta)


SCHEDULES = {"linear": linear_beta_schedule, "cosine": cosine_beta_schedule}


def make_beta_schedule(name: str, T: int, scale_to_T: bool = False, **kwargs) -> torch.Tensor:
    """β_1 … β_T for a named schedule (``"linear"`` or ``"cosine"``), float64.

    ``scale_to_T=True`` rescales the linear schedule's endpoints by 1000/T so that a short chain (the toy
    examples use T = 100–200) destroys the signal as completely as Ho et al.'s T = 1000 chain.
    """
    if name not in SCHEDULES:
        raise ValueError(f"unknown beta schedule {name!r}; choose one of {sorted(SCHEDULES)}")
    _check_T(T)
    if name == "linear" and scale_to_T:
        scale = 1000 / T
        kwargs.setdefault("beta_start", 1e-4 * scale)
        kwargs.setdefault("beta_end", min(0.02 * scale, 0.999))
    return SCHEDULES[name](T, **kwargs)


@dataclass(frozen=True)
class NoiseSchedule:
    """Every per-step constant of a diffusion chain, precomputed once in float64.

    Build with ``NoiseSchedule.from_name("cosine", 1000)`` or ``NoiseSchedule(betas)``. All tensors have
    length T and are indexed by the 0-based code timestep (see the module docstring).
    """

    betas: torch.Tensor

    def __post_init__(self):
        b = torch.as_tensor(self.betas, dtype=torch.float64).flatten()
        if b.numel() == 0:
            raise ValueError("a noise schedule needs at least one beta (T ≥ 1)")
        if not torch.all((b > 0) & (b < 1)):
            bad = b[(b <= 0) | (b >= 1)]
            raise ValueError(f"every beta must lie in the open interval (0, 1); got e.g. {bad[:3].tolist()}")
        object.__setattr__(self, "betas", b)
        alphas = 1 - b
        abar = torch.cumprod(alphas, 0)
        abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        # β̃_t = (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · β_t   (thesis eq. 4). β̃_1 = 0: log is clipped to β̃_2 like iDDPM.
        post_var = b * (1 - abar_prev) / (1 - abar)
        post_log_var = torch.log(torch.cat([post_var[1:2], post_var[1:]])) if len(b) > 1 else torch.log(b)
        derived = dict(
            alphas=alphas,
            alphas_cumprod=abar,
            alphas_cumprod_prev=abar_prev,
            sqrt_alphas_cumprod=abar.sqrt(),
            sqrt_one_minus_alphas_cumprod=(1 - abar).sqrt(),
            sqrt_recip_alphas_cumprod=(1 / abar).sqrt(),
            sqrt_recipm1_alphas_cumprod=(1 / abar - 1).sqrt(),
            posterior_variance=post_var,
            posterior_log_variance_clipped=post_log_var,
            # μ̃_t = coef1 · x_0 + coef2 · x_t   (thesis eq. 4, corrected: see notebook 01's errata)
            posterior_mean_coef1=b * abar_prev.sqrt() / (1 - abar),
            posterior_mean_coef2=(1 - abar_prev) * alphas.sqrt() / (1 - abar),
        )
        for k, v in derived.items():
            object.__setattr__(self, k, v)

    @classmethod
    def from_name(cls, name: str, T: int, **kwargs) -> "NoiseSchedule":
        return cls(make_beta_schedule(name, T, **kwargs))

    @property
    def T(self) -> int:
        return len(self.betas)

    def snr(self) -> torch.Tensor:
        """Signal-to-noise ratio SNR(t) = ᾱ_t / (1 − ᾱ_t) of q(x_t | x_0) (Kingma et al. 2021)."""
        return self.alphas_cumprod / (1 - self.alphas_cumprod)


def extract(a: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``a[t]`` reshaped to broadcast against ``x`` (B, 1, 1, …) and cast to ``x``'s dtype and device."""
    t = _check_t(t, x, len(a))
    out = a.to(x.device)[t.to(x.device)].to(x.dtype)
    return out.reshape(len(t), *([1] * (x.dim() - 1)))


def _check_t(t, x: torch.Tensor, T: int) -> torch.Tensor:
    t = torch.as_tensor(t, dtype=torch.long, device=x.device)
    if t.dim() == 0:
        t = t.expand(x.shape[0])
    if t.dim() != 1 or t.shape[0] != x.shape[0]:
        raise ValueError(f"timesteps must have shape (batch,) = ({x.shape[0]},); got {tuple(t.shape)}")
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= T):
        raise ValueError(f"timesteps must lie in [0, {T - 1}] (0-based); got range [{int(t.min())}, {int(t.max())}]")
    return t


def _check_same_shape(**tensors: torch.Tensor) -> None:
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"these tensors must have the same shape: {shapes}")


# ----------------------------------------------------------------------------------------------------------
# Forward process
# ----------------------------------------------------------------------------------------------------------


def q_step(sched: NoiseSchedule, x_prev: torch.Tensor, t, noise: torch.Tensor | None = None) -> torch.Tensor:
    """One forward step x_t ~ q(x_t | x_{t−1}) = N(√(1−β_t) x_{t−1}, β_t I)  (thesis eq. 1).

    Note the standard deviation is √β_t, not β_t (see the errata in notebook 01).
    """
    noise = torch.randn_like(x_prev) if noise is None else noise
    _check_same_shape(x_prev=x_prev, noise=noise)
    beta = extract(sched.betas, t, x_prev)
    return (1 - beta).sqrt() * x_prev + beta.sqrt() * noise


def q_mean_variance(sched: NoiseSchedule, x0: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean √ᾱ_t x_0 and variance (1 − ᾱ_t) of q(x_t | x_0)  (thesis eq. 2)."""
    return extract(sched.sqrt_alphas_cumprod, t, x0) * x0, extract(1 - sched.alphas_cumprod, t, x0)


def q_sample(sched: NoiseSchedule, x0: torch.Tensor, t, noise: torch.Tensor | None = None) -> torch.Tensor:
    """Sample x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) · ε, ε ~ N(0, I)  (thesis eq. 2, the closed form of iterating eq. 1)."""
    noise = torch.randn_like(x0) if noise is None else noise
    _check_same_shape(x0=x0, noise=noise)
    return extract(sched.sqrt_alphas_cumprod, t, x0) * x0 + extract(sched.sqrt_one_minus_alphas_cumprod, t, x0) * noise


def q_posterior_mean_variance(sched: NoiseSchedule, x0: torch.Tensor, x_t: torch.Tensor, t):
    """Mean, variance and clipped log-variance of q(x_{t−1} | x_t, x_0)  (thesis eq. 4):

        μ̃_t(x_t, x_0) = √ᾱ_{t−1} β_t / (1 − ᾱ_t) · x_0 + √α_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · x_t
        β̃_t           = (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · β_t
    """
    _check_same_shape(x0=x0, x_t=x_t)
    mean = extract(sched.posterior_mean_coef1, t, x_t) * x0 + extract(sched.posterior_mean_coef2, t, x_t) * x_t
    var = extract(sched.posterior_variance, t, x_t)
    log_var = extract(sched.posterior_log_variance_clipped, t, x_t)
    return mean, var, log_var


# ----------------------------------------------------------------------------------------------------------
# Reverse process with an ε-model
# ----------------------------------------------------------------------------------------------------------


def predict_x0_from_eps(sched: NoiseSchedule, x_t: torch.Tensor, t, eps: torch.Tensor) -> torch.Tensor:
    """x̂_0 = (x_t − √(1 − ᾱ_t) ε) / √ᾱ_t, eq. 2 solved for x_0 (Ho et al. eq. 4 rearranged)."""
    _check_same_shape(x_t=x_t, eps=eps)
    return extract(sched.sqrt_recip_alphas_cumprod, t, x_t) * x_t - extract(sched.sqrt_recipm1_alphas_cumprod, t, x_t) * eps


def predict_eps_from_x0(sched: NoiseSchedule, x_t: torch.Tensor, t, x0: torch.Tensor) -> torch.Tensor:
    """ε = (x_t − √ᾱ_t x_0) / √(1 − ᾱ_t), the inverse of :func:`predict_x0_from_eps`."""
    _check_same_shape(x_t=x_t, x0=x0)
    return (extract(sched.sqrt_recip_alphas_cumprod, t, x_t) * x_t - x0) / extract(sched.sqrt_recipm1_alphas_cumprod, t, x_t)


VARIANCES = ("fixed_small", "fixed_large")


def p_mean_variance(sched: NoiseSchedule, eps: torch.Tensor, x_t: torch.Tensor, t, variance: str = "fixed_small",
                    clip_x0: float | None = None) -> dict[str, torch.Tensor]:
    """The reverse step p_θ(x_{t−1} | x_t) = N(μ_θ(x_t, t), σ_t² I) of an ε-model with fixed variance.

    μ_θ(x_t, t) = 1/√α_t · (x_t − β_t/√(1 − ᾱ_t) · ε_θ(x_t, t))   (Ho et al. eq. 11), computed here as
    μ̃_t(x_t, x̂_0) with x̂_0 from :func:`predict_x0_from_eps`, which is the same number and lets ``clip_x0``
    clip x̂_0 to [−c, c] as diffusers does for images.
    σ_t² = β̃_t (``"fixed_small"``, the posterior's variance) or β_t (``"fixed_large"``), Ho et al. §3.2.
    Returns ``mean``, ``variance``, ``log_variance`` and ``pred_x0``.
    """
    if variance not in VARIANCES:
        raise ValueError(f"unknown variance {variance!r}; choose one of {VARIANCES}")
    x0 = predict_x0_from_eps(sched, x_t, t, eps)
    if clip_x0 is not None:
        x0 = x0.clamp(-clip_x0, clip_x0)
    mean, post_var, post_log_var = q_posterior_mean_variance(sched, x0, x_t, t)
    if variance == "fixed_small":
        var, log_var = post_var, post_log_var
    else:
        var = extract(sched.betas, t, x_t)
        log_var = var.log()
    return {"mean": mean, "variance": var, "log_variance": log_var, "pred_x0": x0}


def ddpm_step(sched: NoiseSchedule, eps: torch.Tensor, x_t: torch.Tensor, t, noise: torch.Tensor | None = None,
              variance: str = "fixed_small", clip_x0: float | None = None) -> torch.Tensor:
    """One ancestral step x_{t−1} = μ_θ(x_t, t) + σ_t z (Algorithm 2, line 4); no noise is added at t = 0."""
    out = p_mean_variance(sched, eps, x_t, t, variance, clip_x0)
    noise = torch.randn_like(x_t) if noise is None else noise
    _check_same_shape(x_t=x_t, noise=noise)
    t = _check_t(t, x_t, sched.T)
    nonzero = (t > 0).to(x_t.dtype).reshape(-1, *([1] * (x_t.dim() - 1)))
    return out["mean"] + nonzero * out["variance"].sqrt() * noise


def ddim_step(sched: NoiseSchedule, eps: torch.Tensor, x_t: torch.Tensor, t, t_prev, eta: float = 0.0,
              noise: torch.Tensor | None = None, clip_x0: float | None = None) -> torch.Tensor:
    """One DDIM step from t to t_prev < t (Song et al. 2021, eq. 12); ``t_prev = -1`` means "to x_0" (ᾱ = 1).

        x_{t'} = √ᾱ_{t'} x̂_0 + √(1 − ᾱ_{t'} − σ²) ε_θ + σ z,
        σ = η √((1 − ᾱ_{t'})/(1 − ᾱ_t)) √(1 − ᾱ_t/ᾱ_{t'})

    η = 0 is the deterministic DDIM sampler; η = 1 with consecutive steps is DDPM with β̃_t.
    """
    if eta < 0:
        raise ValueError(f"eta must be ≥ 0, got {eta}")
    t = _check_t(t, x_t, sched.T)
    t_prev = torch.as_tensor(t_prev, dtype=torch.long, device=x_t.device).expand(x_t.shape[0])
    if torch.any(t_prev >= t) or torch.any(t_prev < -1):
        raise ValueError("DDIM needs -1 ≤ t_prev < t for every sample")
    x0 = predict_x0_from_eps(sched, x_t, t, eps)
    if clip_x0 is not None:
        x0 = x0.clamp(-clip_x0, clip_x0)
        eps = predict_eps_from_x0(sched, x_t, t, x0)
    abar_ext = torch.cat([torch.ones(1, dtype=torch.float64), sched.alphas_cumprod])  # index i+1 ↔ code step i
    a_t = extract(abar_ext, t + 1, x_t)
    a_prev = extract(abar_ext, t_prev + 1, x_t)
    sigma = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).sqrt()
    x_prev = a_prev.sqrt() * x0 + (1 - a_prev - sigma**2).clamp(min=0).sqrt() * eps
    if eta > 0:
        noise = torch.randn_like(x_t) if noise is None else noise
        x_prev = x_prev + sigma * noise
    return x_prev


# ----------------------------------------------------------------------------------------------------------
# Training and sampling
# ----------------------------------------------------------------------------------------------------------


def sample_timesteps(sched: NoiseSchedule, batch: int, device=None, generator: torch.Generator | None = None):
    """t ~ Uniform{0, …, T−1} (Algorithm 1, line 3; 0-based)."""
    return torch.randint(0, sched.T, (batch,), generator=generator).to(device)


def loss_simple(eps_model: EpsModel, sched: NoiseSchedule, x0: torch.Tensor, t=None, noise=None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Algorithm 1 / L_simple: E_{t, x_0, ε} ‖ε − ε_θ(√ᾱ_t x_0 + √(1 − ᾱ_t) ε, t)‖² (Ho et al. eq. 14).

    Returns the mean over the batch and every dimension (a scalar). ``t`` and ``noise`` may be given to make
    the loss a deterministic function (tests do).
    """
    if t is None:
        t = sample_timesteps(sched, x0.shape[0], x0.device, generator)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator).to(x0) if generator is not None else torch.randn_like(x0)
    x_t = q_sample(sched, x0, t, noise)
    return torch.mean((noise - eps_model(x_t, _check_t(t, x0, sched.T))) ** 2)


def _timesteps_tensor(t: int, batch: int, device) -> torch.Tensor:
    return torch.full((batch,), t, dtype=torch.long, device=device)


@torch.no_grad()
def ddpm_sample(eps_model: EpsModel, sched: NoiseSchedule, shape, generator: torch.Generator | None = None,
                device=None, variance: str = "fixed_small", clip_x0: float | None = None, x_T=None,
                return_trajectory: bool = False, progress: bool = True):
    """Ancestral sampling, Algorithm 2: x_T ~ N(0, I), then x_{t−1} = μ_θ(x_t, t) + σ_t z for t = T … 1.

    Returns x_0 (and, with ``return_trajectory``, a tensor (T+1, *shape) of every x_t from x_T to x_0).
    ``generator`` makes the draw repeatable (noise is drawn on the CPU, then moved).
    """
    x = torch.randn(shape, generator=generator).to(device) if x_T is None else x_T.to(device)
    traj = [x.cpu()] if return_trajectory else None
    for t in tqdm(range(sched.T - 1, -1, -1), desc="DDPM sampling", disable=not progress, leave=False):
        tt = _timesteps_tensor(t, x.shape[0], x.device)
        z = torch.randn(x.shape, generator=generator).to(x) if t > 0 else torch.zeros_like(x)
        x = ddpm_step(sched, eps_model(x, tt), x, tt, z, variance, clip_x0)
        if traj is not None:
            traj.append(x.cpu())
    return (x, torch.stack(traj)) if return_trajectory else x


def ddim_timesteps(T: int, steps: int) -> list[int]:
    """The K = ``steps`` timesteps DDIM visits, evenly spaced like diffusers' "leading" spacing:
    0, T/K, 2T/K, … (0-based), returned in descending order."""
    _check_T(T)
    if not (isinstance(steps, int) and 1 <= steps <= T):
        raise ValueError(f"the number of sampling steps must be an integer in [1, T={T}], got {steps!r}")
    return list(range(0, T, T // steps))[:steps][::-1]


@torch.no_grad()
def ddim_sample(eps_model: EpsModel, sched: NoiseSchedule, shape, steps: int = 50, eta: float = 0.0,
                generator: torch.Generator | None = None, device=None, clip_x0: float | None = None, x_T=None,
                return_trajectory: bool = False, progress: bool = True):
    """DDIM sampling (Song et al. 2021) over the K = ``steps`` timesteps of :func:`ddim_timesteps`."""
    x = torch.randn(shape, generator=generator).to(device) if x_T is None else x_T.to(device)
    traj = [x.cpu()] if return_trajectory else None
    ts = ddim_timesteps(sched.T, steps)
    for i, t in enumerate(tqdm(ts, desc=f"DDIM sampling ({steps} steps)", disable=not progress, leave=False)):
        t_prev = ts[i + 1] if i + 1 < len(ts) else -1
        tt = _timesteps_tensor(t, x.shape[0], x.device)
        z = torch.randn(x.shape, generator=generator).to(x) if eta > 0 else None
        x = ddim_step(sched, eps_model(x, tt), x, tt, t_prev, eta, z, clip_x0)
        if traj is not None:
            traj.append(x.cpu())
    return (x, torch.stack(traj)) if return_trajectory else x
