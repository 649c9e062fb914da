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

from .device import batch_randint, batch_randn

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
    """``a[t]`` reshaped to broadcast against ``x`` (B, 1, 1, …) and cast to ``x``'s dtype and device.

    A Python ``int`` t (one timestep for the whole batch, as the samplers pass) takes a fast path: the number
    is read on the host and filled in on ``x``'s device, with no table copy and no device synchronisation.
    """
    if _is_int(t):
        _check_int_t(t, len(a))
        return torch.full((x.shape[0],) + (1,) * (x.dim() - 1), float(a[t]), dtype=x.dtype, device=x.device)
    t = _check_t(t, x, len(a))
    out = a.to(x.device)[t.to(x.device)].to(x.dtype)
    return out.reshape(len(t), *([1] * (x.dim() - 1)))


def _is_int(t) -> bool:
    return isinstance(t, int) and not isinstance(t, bool)


def _check_int_t(t: int, T: int) -> None:
    if not 0 <= t < T:
        raise ValueError(f"timesteps must lie in [0, {T - 1}] (0-based); got {t}")


def _check_t(t, x: torch.Tensor, T: int) -> torch.Tensor:
    if _is_int(t):  # validated on the host: no device sync
        _check_int_t(t, T)
        return torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
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

    The standard deviation is √β_t (the draft writes it so, l.67 and l.238); App. 1's slip runs the other way,
    a standard deviation where a variance belongs (l.243; ``dfs.errata``).
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


def v_target(sched: NoiseSchedule, x0: torch.Tensor, t, eps: torch.Tensor) -> torch.Tensor:
    """The velocity v = √ᾱ_t ε − √(1 − ᾱ_t) x_0 (Salimans & Ho 2022, "Progressive distillation", §4 and
    App. D): the regression target of a v-prediction model (diffusers' ``get_velocity``)."""
    _check_same_shape(x0=x0, eps=eps)
    return extract(sched.sqrt_alphas_cumprod, t, x0) * eps - extract(sched.sqrt_one_minus_alphas_cumprod, t, x0) * x0


def predict_x0_from_v(sched: NoiseSchedule, x_t: torch.Tensor, t, v: torch.Tensor) -> torch.Tensor:
    """x̂_0 = √ᾱ_t x_t − √(1 − ᾱ_t) v (eq. 2 with the definition of v solved for x_0)."""
    _check_same_shape(x_t=x_t, v=v)
    return extract(sched.sqrt_alphas_cumprod, t, x_t) * x_t - extract(sched.sqrt_one_minus_alphas_cumprod, t, x_t) * v


def predict_eps_from_v(sched: NoiseSchedule, x_t: torch.Tensor, t, v: torch.Tensor) -> torch.Tensor:
    """ε̂ = √(1 − ᾱ_t) x_t + √ᾱ_t v (eq. 2 with the definition of v solved for ε): turns a v-model into the
    ε-model every sampler here takes."""
    _check_same_shape(x_t=x_t, v=v)
    return extract(sched.sqrt_one_minus_alphas_cumprod, t, x_t) * x_t + extract(sched.sqrt_alphas_cumprod, t, x_t) * v


VARIANCES = ("fixed_small", "fixed_large", "learned_range")


def p_mean_variance(sched: NoiseSchedule, eps: torch.Tensor, x_t: torch.Tensor, t, variance: str = "fixed_small",
                    clip_x0: float | None = None, v: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The reverse step p_θ(x_{t−1} | x_t) = N(μ_θ(x_t, t), Σ_θ(x_t, t)) of an ε-model.

    μ_θ(x_t, t) = 1/√α_t · (x_t − β_t/√(1 − ᾱ_t) · ε_θ(x_t, t))   (Ho et al. eq. 11), computed here as
    μ̃_t(x_t, x̂_0) with x̂_0 from :func:`predict_x0_from_eps`, which is the same number and lets ``clip_x0``
    clip x̂_0 to [−c, c] as diffusers does for images.
    Σ_θ = σ_t² I with σ_t² = β̃_t (``"fixed_small"``, the posterior's variance) or β_t (``"fixed_large"``),
    Ho et al. §3.2; or, with ``"learned_range"``, the per-dimension interpolation of iDDPM eq. 15 with the
    weight ``v`` (see :func:`learned_log_variance`; :func:`split_model_output` gets ε and v from a model).
    Returns ``mean``, ``variance``, ``log_variance`` and ``pred_x0``.
    """
    if variance not in VARIANCES:
        raise ValueError(f"unknown variance {variance!r}; choose one of {VARIANCES}")
    if (variance == "learned_range") != (v is not None):
        raise ValueError("pass v (the eq. 15 interpolation weight) exactly when variance='learned_range'")
    x0 = predict_x0_from_eps(sched, x_t, t, eps)
    if clip_x0 is not None:
        x0 = x0.clamp(-clip_x0, clip_x0)
    mean, post_var, post_log_var = q_posterior_mean_variance(sched, x0, x_t, t)
    if variance == "fixed_small":
        var, log_var = post_var, post_log_var
    elif variance == "fixed_large":
        var = extract(sched.betas, t, x_t)
        log_var = var.log()
    else:
        log_var = learned_log_variance(sched, v, t)
        var = log_var.exp()
    return {"mean": mean, "variance": var, "log_variance": log_var, "pred_x0": x0}


def ddpm_step(sched: NoiseSchedule, eps: torch.Tensor, x_t: torch.Tensor, t, noise: torch.Tensor | None = None,
              variance: str = "fixed_small", clip_x0: float | None = None, v: torch.Tensor | None = None) -> torch.Tensor:
    """One ancestral step x_{t−1} = μ_θ(x_t, t) + σ_t z (Algorithm 2, line 4); no noise is added at t = 0.

    With ``variance="learned_range"`` pass ``v`` (iDDPM eq. 15); σ_t² is then per dimension."""
    out = p_mean_variance(sched, eps, x_t, t, variance, clip_x0, v)
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
    if _is_int(t) and _is_int(t_prev):  # the samplers' case, checked on the host
        _check_int_t(t, sched.T)
        if not -1 <= t_prev < t:
            raise ValueError(f"DDIM needs -1 ≤ t_prev < t; got t={t}, t_prev={t_prev}")
    else:
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
    """t ~ Uniform{0, …, T−1} (Algorithm 1, line 3; 0-based).  Without a generator, from the global RNG for this
    process's share of the batch (``dfs.device.batch_randint``: the same t per example on any number of processes)."""
    if generator is None:
        return batch_randint(sched.T, batch, device)
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
        noise = torch.randn(x0.shape, generator=generator).to(x0) if generator is not None else batch_randn(x0.shape, x0)
    x_t = q_sample(sched, x0, t, noise)
    return torch.mean((noise - eps_model(x_t, _check_t(t, x0, sched.T))) ** 2)


def _timesteps_tensor(t: int, batch: int, device) -> torch.Tensor:
    return torch.full((batch,), t, dtype=torch.long, device=device)


@torch.no_grad()
def ddpm_sample(eps_model: EpsModel, sched: NoiseSchedule, shape, generator: torch.Generator | None = None,
                device=None, variance: str = "fixed_small", clip_x0: float | None = None, x_T=None,
                return_trajectory: bool = False, progress: bool = True):
    """Ancestral sampling, Algorithm 2: x_T ~ N(0, I), then x_{t−1} = μ_θ(x_t, t) + σ_t z for t = T … 1.

    With ``variance="learned_range"`` the model returns ε and v stacked on dim 1 (:func:`split_model_output`).
    To sample with K < T steps, pass a respaced schedule and model (:func:`respace`, :class:`RespacedModel`).
    Returns x_0 (and, with ``return_trajectory``, a tensor (T+1, *shape) of every x_t from x_T to x_0).
    ``generator`` makes the draw repeatable (noise is drawn on the CPU, then moved).
    """
    x = torch.randn(shape, generator=generator).to(device) if x_T is None else x_T.to(device)
    traj = [x.cpu()] if return_trajectory else None
    for t in tqdm(range(sched.T - 1, -1, -1), desc="DDPM sampling", disable=not progress, leave=False):
        tt = _timesteps_tensor(t, x.shape[0], x.device)
        z = torch.randn(x.shape, generator=generator).to(x) if t > 0 else torch.zeros_like(x)
        out = eps_model(x, tt)
        eps, v = split_model_output(out) if variance == "learned_range" else (out, None)
        x = ddpm_step(sched, eps, x, t, z, variance, clip_x0, v)  # int t: no per-step device sync
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


def low_pass(x: torch.Tensor, factor: int) -> torch.Tensor:
    """φ_N(x): each N×N block replaced by its mean (average-pool by N, then repeat), the linear low-pass filter of
    ILVR (Choi et al. 2021, §3.1).  A projection, φ_N(φ_N(x)) = φ_N(x), so after :func:`ilvr_refine` the sample's
    low-pass is the reference's exactly.  ``factor`` must divide the image's height and width."""
    H, W = x.shape[-2:]
    if factor < 1 or H % factor or W % factor:
        raise ValueError(f"the low-pass factor must be a positive divisor of the image size {H}×{W}, got {factor}")
    if factor == 1:
        return x
    y = torch.nn.functional.avg_pool2d(x, factor)
    return y.repeat_interleave(factor, -2).repeat_interleave(factor, -1)


def ilvr_refine(sched: NoiseSchedule, x_prev: torch.Tensor, reference: torch.Tensor, t_prev: int, factor: int,
                noise: torch.Tensor) -> torch.Tensor:
    """x_{t'} ← x_{t'} − φ_N(x_{t'}) + φ_N(y_{t'}),  y_{t'} = √ᾱ_{t'} y + √(1−ᾱ_{t'}) ε ~ q(y_{t'} | y)
    (ILVR, Choi et al. 2021, eq. 8 and Algorithm 1): the sample keeps its own detail and takes the reference's
    coarse structure at every noise level.  ``t_prev = -1`` (the last step) uses y itself."""
    y = reference if t_prev < 0 else q_sample(sched, reference, t_prev, noise)
    return x_prev - low_pass(x_prev, factor) + low_pass(y, factor)


@torch.no_grad()
def ddim_sample(eps_model: EpsModel, sched: NoiseSchedule, shape, steps: int = 50, eta: float = 0.0,
                generator: torch.Generator | None = None, device=None, clip_x0: float | None = None, x_T=None,
                return_trajectory: bool = False, progress: bool = True, timesteps=None, after_step=None):
    """DDIM sampling (Song et al. 2021) over the K = ``steps`` timesteps of :func:`ddim_timesteps`, or over
    ``timesteps`` (descending) when given: then ``x_T`` is the sample at ``timesteps[0]`` (SDEdit's start).
    ``after_step(x, t_prev)``, when given, returns the sample to continue from after each step (ILVR's
    refinement, :func:`ilvr_refine`)."""
    x = torch.randn(shape, generator=generator).to(device) if x_T is None else x_T.to(device)
    traj = [x.cpu()] if return_trajectory else None
    ts = ddim_timesteps(sched.T, steps) if timesteps is None else [int(t) for t in timesteps]
    if any(a <= b for a, b in zip(ts, ts[1:])) or not ts or not 0 <= ts[-1] <= ts[0] < sched.T:
        raise ValueError(f"timesteps must be distinct, descending and in [0, T={sched.T}), got {ts}")
    for i, t in enumerate(tqdm(ts, desc=f"DDIM sampling ({steps} steps)", disable=not progress, leave=False)):
        t_prev = ts[i + 1] if i + 1 < len(ts) else -1
        tt = _timesteps_tensor(t, x.shape[0], x.device)
        z = torch.randn(x.shape, generator=generator).to(x) if eta > 0 else None
        x = ddim_step(sched, eps_model(x, tt), x, t, t_prev, eta, z, clip_x0)  # int t: no per-step device sync
        if after_step is not None:
            x = after_step(x, t_prev)
        if traj is not None:
            traj.append(x.cpu())
    return (x, torch.stack(traj)) if return_trajectory else x


# ----------------------------------------------------------------------------------------------------------
# Learned variances (Nichol & Dhariwal 2021, "iDDPM", §3.1)
# ----------------------------------------------------------------------------------------------------------


def split_model_output(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a learned-variance model's output (B, 2C, …) into ε (B, C, …) and the eq. 15 weight v.

    The raw second half r is mapped to v = (r + 1)/2, as improved-diffusion's ``learned_range`` does, so
    r ∈ [−1, 1] covers Σ_θ ∈ [β̃_t, β_t] and a model that outputs r = 0 starts at their geometric mean.
    """
    if out.dim() < 2 or out.shape[1] % 2:
        raise ValueError(f"a learned-variance model must output 2·C channels on dim 1 (ε then v); "
                         f"got shape {tuple(out.shape)}")
    eps, r = out.chunk(2, dim=1)
    return eps, (r + 1) / 2


def learned_log_variance(sched: NoiseSchedule, v: torch.Tensor, t) -> torch.Tensor:
    """log Σ_θ(x_t, t) = v log β_t + (1 − v) log β̃_t   (iDDPM eq. 15), per dimension.

    v = 0 gives the posterior variance β̃_t (log clipped at t = 1 like everywhere here), v = 1 gives β_t.
    """
    log_beta = extract(sched.betas.log(), t, v)
    log_beta_tilde = extract(sched.posterior_log_variance_clipped, t, v)
    return v * log_beta + (1 - v) * log_beta_tilde


def model_p_mean_variance(model: EpsModel, sched: NoiseSchedule, x_t: torch.Tensor, t, variance: str = "fixed_small",
                          clip_x0: float | None = None) -> dict[str, torch.Tensor]:
    """Run ``model`` and return :func:`p_mean_variance` of its output (ε, or ε and v for ``"learned_range"``)."""
    out = model(x_t, _check_t(t, x_t, sched.T))
    eps, v = split_model_output(out) if variance == "learned_range" else (out, None)
    return p_mean_variance(sched, eps, x_t, t, variance, clip_x0, v)


# ----------------------------------------------------------------------------------------------------------
# The variational bound (thesis App. 3; Ho et al. eq. 5; iDDPM §2)
# ----------------------------------------------------------------------------------------------------------
#
#   L_vlb = L_T + Σ_{t=2}^{T} L_{t−1} + L_0
#   L_T     = KL(q(x_T | x_0) ‖ p(x_T))                                 the prior term (no parameters)
#   L_{t−1} = KL(q(x_{t−1} | x_t, x_0) ‖ p_θ(x_{t−1} | x_t)),  t ≥ 2     a KL between two Gaussians
#   L_0     = −log p_θ(x_0 | x_1)                                      the decoder (discretised for 8-bit data)
#
# In code steps (0-based) L_{t−1} sits at t ≥ 1 and L_0 at t = 0: ``vlb_terms(...)["terms"][:, t]``.

DECODERS = ("discretized", "gaussian")


def normal_kl(mean1, log_var1, mean2, log_var2) -> torch.Tensor:
    """KL(N(μ₁, σ₁²) ‖ N(μ₂, σ₂²)) per element, in nats:  ½ (log σ₂² − log σ₁² + (σ₁² + (μ₁ − μ₂)²)/σ₂² − 1)."""
    return 0.5 * (log_var2 - log_var1 + torch.exp(log_var1 - log_var2) + (mean1 - mean2) ** 2 * torch.exp(-log_var2) - 1)


def gaussian_log_likelihood(x: torch.Tensor, mean, log_var) -> torch.Tensor:
    """log N(x; μ, σ²) per element (a density, for continuous data), in nats."""
    return -0.5 * (math.log(2 * math.pi) + log_var + (x - mean) ** 2 * torch.exp(-log_var))


def discretized_gaussian_log_likelihood(x: torch.Tensor, mean, log_var, bins: int = 256) -> torch.Tensor:
    """log P(x) per element for data on ``bins`` levels scaled to [−1, 1] (Ho et al. eq. 13):

        P(x) = ∫_{δ−(x)}^{δ+(x)} N(y; μ, σ²) dy,   δ±(x) = x ± 1/(bins − 1), with δ−(−1) = −∞ and δ+(1) = +∞,

    i.e. a Gaussian integrated over the pixel's bin, the outermost bins reaching to infinity. Computed with
    ``log_ndtr`` and the reflection Φ(b) − Φ(a) = Φ(−a) − Φ(−b), so it stays accurate far in the tails.
    """
    if not isinstance(bins, int) or bins < 2:
        raise ValueError(f"bins must be an integer ≥ 2 (256 for 8-bit data), got {bins!r}")
    if x.numel() and float(x.detach().abs().max()) > 1 + 1e-6:
        raise ValueError("discretised data must lie in [-1, 1] (8-bit pixels u ↦ u/127.5 − 1)")
    half = 1.0 / (bins - 1)
    inv_std = torch.exp(-0.5 * log_var)
    a = (x - mean - half) * inv_std                        # lower edge, standardised
    b = (x - mean + half) * inv_std                        # upper edge
    flip = a > 0                                           # right tail: use Φ(−a) − Φ(−b) instead
    lo, hi = torch.where(flip, -b, a), torch.where(flip, -a, b)
    log_hi = torch.special.log_ndtr(hi)
    log_mid = log_hi + torch.log((-torch.expm1(torch.special.log_ndtr(lo) - log_hi)).clamp(min=torch.finfo(log_hi.dtype).tiny))
    return torch.where(x < -1 + half, torch.special.log_ndtr(b),
                       torch.where(x > 1 - half, torch.special.log_ndtr(-a), log_mid))


def _sum_dims(x: torch.Tensor, dims: torch.Tensor | None) -> torch.Tensor:
    """Per-sample sum over dimensions, of all of them or of those weighted by ``dims`` (shaped like ``x``)."""
    return (x if dims is None else x * dims).flatten(1).sum(1)


def prior_kl(sched: NoiseSchedule, x0: torch.Tensor, dims: torch.Tensor | None = None) -> torch.Tensor:
    """L_T = KL(q(x_T | x_0) ‖ N(0, I)) per sample (summed over dimensions, or over ``dims``), in nats."""
    mean, var = q_mean_variance(sched, x0, sched.T - 1)
    kl = normal_kl(mean, var.log(), torch.zeros_like(mean), torch.zeros_like(mean))
    return _sum_dims(kl, dims)


def vlb_term(sched: NoiseSchedule, x0: torch.Tensor, x_t: torch.Tensor, t, p: dict[str, torch.Tensor],
             decoder: str = "discretized", dims: torch.Tensor | None = None) -> torch.Tensor:
    """One term of the bound per sample, in nats: L_{t−1} = KL(q(x_{t−1} | x_t, x_0) ‖ p_θ(x_{t−1} | x_t)) for
    code step t ≥ 1 and L_0 = −log p_θ(x_0 | x_1) for t = 0 (thesis App. 3; Ho et al. eq. 5).

    ``p`` is the output of :func:`p_mean_variance`. ``decoder="discretized"`` is Ho et al. eq. 13 for 8-bit data in
    [−1, 1]; ``"gaussian"`` uses the density N(x_0; μ_θ(x_1, 1), σ_1²) for continuous data (nats, may be < 0).
    ``dims`` (0/1, shaped like ``x0``): sum only over those dimensions (see :func:`vlb_terms`).
    """
    if decoder not in DECODERS:
        raise ValueError(f"unknown decoder {decoder!r}; choose one of {DECODERS}")
    t = _check_t(t, x_t, sched.T)
    true_mean, _, true_log_var = q_posterior_mean_variance(sched, x0, x_t, t)
    out = _sum_dims(normal_kl(true_mean, true_log_var, p["mean"], p["log_variance"]), dims)
    first = (t == 0).nonzero().squeeze(1)
    if len(first):                    # the decoder term, only where t = 0 (log_ndtr is the costly part)
        mean, log_var = p["mean"][first], p["log_variance"].expand_as(p["mean"])[first]
        ll = (discretized_gaussian_log_likelihood if decoder == "discretized" else gaussian_log_likelihood)
        out = out.index_put((first,), -_sum_dims(ll(x0[first], mean, log_var), None if dims is None else dims[first]))
    return out


def _randn(shape, generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    return torch.randn(shape, generator=generator, dtype=like.dtype).to(like.device)


@torch.no_grad()
def vlb_terms(model: EpsModel, sched: NoiseSchedule, x0: torch.Tensor, variance: str = "fixed_small",
              decoder: str = "discretized", max_batch: int = 16384, generator: torch.Generator | None = None,
              clip_x0: float | None = None, dims: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Every term of L_vlb = L_T + Σ_{t=2}^{T} L_{t−1} + L_0 (thesis App. 3) for each sample of ``x0``.

    Each KL term is exact given one draw x_t ~ q(x_t | x_0) per (sample, t) (the standard unbiased estimate
    of Ho et al. / iDDPM). Batched: the T timesteps go through the model in chunks of ⌊max_batch / B⌋, each
    chunk one call on all samples × those timesteps (no loop over samples), row k·B + i holding sample i.
    Returns, per sample: ``prior`` (B,) = L_T; ``terms`` (B, T), column t = code step t (column 0 is L_0);
    ``total`` (B,) in nats; ``dims`` (B,) = D, the dimensions counted; ``bits_per_dim`` (B,) = total / (D ln 2);
    and ``x0_sq_error`` (B, T), column t = ‖x̂_0(x_t, t) − x_0‖²/D for the same draw x_t (x̂_0 as μ_θ uses it,
    clipped when ``clip_x0`` is set): the distortion of Ho et al. §4.3 that :func:`dfs.elbo_study.rate_distortion`
    reads.

    ``dims``: a 0/1 tensor shaped like ``x0`` (or broadcastable to it) that selects the dimensions counted; default
    all. q and p_θ(x_{t−1} | x_t) are diagonal Gaussians, so every term is a sum over dimensions and the selected
    part is exact on its own: the code length of those dimensions of x_0 when every step also sees the others
    (e.g. the face region of an inpainting model whose condition holds the rest). D = their number per sample.
    """
    return vlb_terms_per_variance(model, sched, x0, (variance,), decoder, max_batch, generator, clip_x0, dims)[variance]


def vlb_terms_per_variance(model: EpsModel, sched: NoiseSchedule, x0: torch.Tensor, variances=VARIANCES[:2],
                           decoder: str = "discretized", max_batch: int = 16384,
                           generator: torch.Generator | None = None, clip_x0: float | None = None,
                           dims: torch.Tensor | None = None) -> dict[str, dict[str, torch.Tensor]]:
    """:func:`vlb_terms` for each variance of ``variances`` ({variance: its dict}) from **one** network pass per
    (sample, t): Σ_θ does not enter the network (for ``"learned_range"`` the same output carries ε and v), so the
    bounds of, say, σ_t² = β̃_t and σ_t² = β_t on the same draws x_t cost one bound, not two. Each dict equals
    what :func:`vlb_terms` returns for that variance with the same ``generator`` state."""
    variances = tuple(variances)
    if not variances or len(set(variances)) != len(variances) or not set(variances) <= set(VARIANCES):
        raise ValueError(f"variances must be distinct names from {VARIANCES}, got {variances}")
    B, T = x0.shape[0], sched.T
    if dims is not None:
        try:
            dims = torch.broadcast_to(dims.to(x0), x0.shape)
        except RuntimeError:
            raise ValueError(f"dims must be broadcastable to x0's shape {tuple(x0.shape)}, got {tuple(dims.shape)}") from None
        if not torch.all((dims == 0) | (dims == 1)):
            raise ValueError("dims must hold only 0 and 1 (the dimensions to count)")
    D = torch.full((B,), float(x0[0].numel()), dtype=x0.dtype, device=x0.device) if dims is None else _sum_dims(dims, None)
    if torch.any(D == 0):
        raise ValueError(f"dims selects no dimension of sample(s) {(D == 0).nonzero().flatten().tolist()}")
    chunk = max(1, max_batch // max(B, 1))
    terms = {v: torch.empty(B, T, dtype=x0.dtype, device=x0.device) for v in variances}
    x0_sq_error = {v: torch.empty(B, T, dtype=x0.dtype, device=x0.device) for v in variances}
    for start in range(0, T, chunk):
        ts = torch.arange(start, min(start + chunk, T), device=x0.device)
        repeat = (len(ts), *([1] * (x0.dim() - 1)))
        xb, db = x0.repeat(*repeat), None if dims is None else dims.repeat(*repeat)   # timestep-major: row k·B + i
        tb = ts.repeat_interleave(B)
        x_t = q_sample(sched, xb, tb, _randn(xb.shape, generator, xb))
        out = model(x_t, _check_t(tb, x_t, sched.T))                                    # the one network pass
        eps, w = split_model_output(out) if "learned_range" in variances else (out, None)
        for v in variances:
            p = p_mean_variance(sched, eps, x_t, tb, v, clip_x0, w if v == "learned_range" else None)
            terms[v][:, start:start + len(ts)] = vlb_term(sched, xb, x_t, tb, p, decoder, db).reshape(len(ts), B).T
            x0_sq_error[v][:, start:start + len(ts)] = (_sum_dims((p["pred_x0"] - xb).pow(2), db).reshape(len(ts), B) / D).T
    prior = prior_kl(sched, x0, dims)
    result = {}
    for v in variances:
        total = prior + terms[v].sum(1)
        result[v] = {"prior": prior, "terms": terms[v], "total": total, "dims": D,
                     "bits_per_dim": total / (D * math.log(2)), "x0_sq_error": x0_sq_error[v]}
    return result


def nll_bits_per_dim(model: EpsModel, sched: NoiseSchedule, x0: torch.Tensor, variance: str = "fixed_small",
                     batch_size: int = 512, **kwargs) -> torch.Tensor:
    """The negative ELBO in bits per dimension, −ELBO/(D ln 2) ≥ −log₂ p_θ(x_0)/D, for each sample (B,).

    This is the "NLL" of Ho et al. Table 2 and iDDPM Table 1 (an upper bound on the true NLL) for 8-bit data in
    [−1, 1]. Samples go in batches of ``batch_size`` through :func:`vlb_terms` (keyword arguments pass on).
    """
    return torch.cat([vlb_terms(model, sched, x0[i:i + batch_size], variance, **kwargs)["bits_per_dim"]
                      for i in range(0, len(x0), batch_size)])


# ----------------------------------------------------------------------------------------------------------
# Training with the bound: L_hybrid and importance-sampled L_vlb (iDDPM §3.1, §3.3)
# ----------------------------------------------------------------------------------------------------------


def _vb_bits(sched, x0, x_t, t, p, decoder) -> torch.Tensor:
    return vlb_term(sched, x0, x_t, t, p, decoder) / (x0[0].numel() * math.log(2))


def loss_hybrid(model: EpsModel, sched: NoiseSchedule, x0: torch.Tensor, lam: float = 0.001, t=None, noise=None,
                generator: torch.Generator | None = None, decoder: str = "discretized", return_terms: bool = False):
    """L_hybrid = L_simple + λ L_vlb, λ = 0.001   (iDDPM eq. 16), for a model that outputs ε and v (eq. 15).

    L_vlb is estimated at the same uniform t as L_simple by T · L_t (one term of the sum, in bits/dim, as
    improved-diffusion does). Its mean goes through a stop-gradient (ε detached), so L_simple alone trains
    μ_θ and the L_vlb term trains only Σ_θ (iDDPM §3.1). ``return_terms`` gives ``{"loss", "mse", "vb"}``.
    """
    if lam < 0:
        raise ValueError(f"the L_vlb weight λ must be ≥ 0, got {lam}")
    if t is None:
        t = sample_timesteps(sched, x0.shape[0], x0.device, generator)
    t = _check_t(t, x0, sched.T)
    noise = _randn(x0.shape, generator, x0) if noise is None else noise
    x_t = q_sample(sched, x0, t, noise)
    eps, v = split_model_output(model(x_t, t))
    mse = torch.mean((noise - eps) ** 2)
    p = p_mean_variance(sched, eps.detach(), x_t, t, "learned_range", v=v)
    vb = sched.T * _vb_bits(sched, x0, x_t, t, p, decoder).mean()
    loss = mse + lam * vb
    return {"loss": loss, "mse": mse, "vb": vb} if return_terms else loss


class ImportanceSampler:
    """Timesteps t ~ p_t with p_t ∝ √E[L_t²] (iDDPM eq. 18 and §3.3), for a low-variance L_vlb estimate.

    E[L_t²] is the mean of the last ``history`` values of L_t seen in training; until every t has that many,
    t is uniform (iDDPM's warm-up). A ``uniform_prob`` share of uniform sampling keeps every p_t > 0.
    :meth:`sample` also returns the weights 1/(T p_t), so E_{t∼p}[L_t/(T p_t)] = (1/T) Σ_t L_t, unbiased.
    """

    def __init__(self, T: int, history: int = 10, uniform_prob: float = 0.001):
        _check_T(T)
        if history < 1 or not 0 <= uniform_prob <= 1:
            raise ValueError(f"need history ≥ 1 and 0 ≤ uniform_prob ≤ 1; got {history}, {uniform_prob}")
        self.T, self.history, self.uniform_prob = T, history, uniform_prob
        self._losses = torch.zeros(T, history, dtype=torch.float64)
        self._count = torch.zeros(T, dtype=torch.long)

    @property
    def warm(self) -> bool:
        return bool((self._count >= self.history).all())

    def probs(self) -> torch.Tensor:
        """p_t (float64, length T): uniform until warm, then ∝ √(mean of L_t²), mixed with ``uniform_prob``."""
        if not self.warm:
            return torch.full((self.T,), 1 / self.T, dtype=torch.float64)
        p = (self._losses ** 2).mean(1).sqrt()
        p = p / p.sum()
        return p * (1 - self.uniform_prob) + self.uniform_prob / self.T

    def sample(self, batch: int, device=None, generator: torch.Generator | None = None):
        """``(t, weights)``: t ~ p_t (LongTensor (batch,)) and the importance weights 1/(T p_t)."""
        p = self.probs()
        t = torch.multinomial(p, batch, replacement=True, generator=generator)
        return t.to(device), (1 / (self.T * p[t])).float().to(device)

    def update(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        """Record the per-sample losses L_t (a first-in-first-out history of ``history`` values per t)."""
        t, losses = t.detach().cpu().long(), losses.detach().cpu().double()
        if t.shape != losses.shape or t.dim() != 1:
            raise ValueError(f"t and losses must both have shape (batch,); got {tuple(t.shape)}, {tuple(losses.shape)}")
        for ti, li in zip(t.tolist(), losses.tolist()):
            if self._count[ti] >= self.history:
                self._losses[ti, :-1] = self._losses[ti, 1:].clone()
                self._losses[ti, -1] = li
            else:
                self._losses[ti, self._count[ti]] = li
            self._count[ti] += 1


def loss_vlb(model: EpsModel, sched: NoiseSchedule, x0: torch.Tensor, sampler: ImportanceSampler | None = None,
             variance: str = "learned_range", t=None, noise=None, generator: torch.Generator | None = None,
             decoder: str = "discretized") -> torch.Tensor:
    """L_vlb alone as a training loss (iDDPM §3.3), in bits/dim: the mean over the batch of L_t/(T p_t).

    With t uniform (``sampler=None``) every weight is 1; with an :class:`ImportanceSampler`, t ~ p_t and the
    weights 1/(T p_t) keep the estimate unbiased (iDDPM eq. 18), and the sampler's history is updated with
    the new L_t. Either way the value estimates (L_vlb − L_T)/T; L_T has no parameters. Mean and variance both
    get gradients (no stop-gradient, unlike :func:`loss_hybrid`).
    """
    if sampler is not None and sampler.T != sched.T:
        raise ValueError(f"the sampler was built for T={sampler.T} but the schedule has T={sched.T}")
    weights = None
    if t is None:
        if sampler is not None:
            t, weights = sampler.sample(x0.shape[0], x0.device, generator)
        else:
            t = sample_timesteps(sched, x0.shape[0], x0.device, generator)
    t = _check_t(t, x0, sched.T)
    noise = _randn(x0.shape, generator, x0) if noise is None else noise
    x_t = q_sample(sched, x0, t, noise)
    p = model_p_mean_variance(model, sched, x_t, t, variance)
    vb = _vb_bits(sched, x0, x_t, t, p, decoder)
    if sampler is not None:
        sampler.update(t, vb)
    return (vb * weights).mean() if weights is not None else vb.mean()


# ----------------------------------------------------------------------------------------------------------
# Fewer sampling steps: timestep respacing (iDDPM §4)
# ----------------------------------------------------------------------------------------------------------


def space_timesteps(T: int, K: int) -> list[int]:
    """K of the T code timesteps, evenly spaced and always including the first (0) and the last (T − 1):
    S_i = round(i (T − 1)/(K − 1)), i = 0 … K − 1 (improved-diffusion's ``space_timesteps`` for one section)."""
    _check_T(T)
    if not (isinstance(K, int) and 1 <= K <= T):
        raise ValueError(f"the number of sampling steps K must be an integer in [1, T={T}], got {K!r}")
    if K == 1:
        return [T - 1]
    return sorted({round(i * (T - 1) / (K - 1)) for i in range(K)})


def respace(sched: NoiseSchedule, timesteps) -> tuple[NoiseSchedule, torch.Tensor]:
    """A K-step chain over the kept steps S (an int K for :func:`space_timesteps`, or a list), iDDPM §4:

        β'_i = 1 − ᾱ_{S_i} / ᾱ_{S_{i−1}}  (ᾱ_{S_{−1}} := 1),  hence ᾱ'_i = ᾱ_{S_i} and β̃'_i follows from eq. 4,

    so x at new step i has exactly the marginal q(x_{S_i} | x_0) of the T-step chain and a model trained on
    the T steps can be used unchanged. Returns the new schedule and the map i ↦ S_i (LongTensor (K,)) that
    :class:`RespacedModel` uses to feed the model its original timesteps. Works for DDPM with fixed or learned
    variances (those read β' and β̃') and for DDIM (which reads only ᾱ').
    """
    steps = space_timesteps(sched.T, timesteps) if isinstance(timesteps, int) else sorted(set(int(s) for s in timesteps))
    if not steps or steps[0] < 0 or steps[-1] >= sched.T:
        raise ValueError(f"kept timesteps must be a non-empty subset of [0, {sched.T - 1}]; got {steps[:5]}…")
    S = torch.tensor(steps, dtype=torch.long)
    abar = sched.alphas_cumprod[S]
    abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
    return NoiseSchedule(1 - abar / abar_prev), S


class RespacedModel:
    """``model`` seen from a respaced chain: new step i is the original step S_i, so call model(x, S[t])."""

    def __init__(self, model: EpsModel, timestep_map: torch.Tensor):
        self.model, self.timestep_map = model, torch.as_tensor(timestep_map, dtype=torch.long)

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.model(x_t, self.timestep_map.to(t.device)[t])
