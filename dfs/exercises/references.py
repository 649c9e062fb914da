"""Reference implementations the exercises need that ``dfs`` has no other use for (each a few lines).

Everything else is checked against the project's own code: :mod:`dfs.diffusion`, :mod:`dfs.toy`,
:mod:`dfs.latent`, :mod:`dfs.metrics`, :mod:`dfs.swap.faceshifter`.
"""
from __future__ import annotations

import math

import torch

from .. import diffusion as D


def alpha_bar(betas: torch.Tensor) -> torch.Tensor:
    """ᾱ_t = ∏_{s=1}^{t} (1 − β_s) for every step (thesis eq. 2 with the product range corrected: the draft's l.84 and l.236, ``dfs.errata``)."""
    return torch.cumprod(1 - betas, 0)


def mu_theta(sched: D.NoiseSchedule, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """μ_θ(x_t, t) = 1/√α_t · (x_t − β_t/√(1 − ᾱ_t) · ε_θ(x_t, t))   (Ho et al. eq. 11)."""
    beta, alpha = D.extract(sched.betas, t, x_t), D.extract(sched.alphas, t, x_t)
    return (x_t - beta / D.extract(sched.sqrt_one_minus_alphas_cumprod, t, x_t) * eps) / alpha.sqrt()


def langevin_step(score_fn, x: torch.Tensor, step_size: float, noise: torch.Tensor) -> torch.Tensor:
    """One step of unadjusted Langevin dynamics x ← x + (δ/2) ∇log p(x) + √δ z (thesis App. 2; the step of
    :func:`dfs.toy.langevin`)."""
    return x + 0.5 * step_size * score_fn(x) + math.sqrt(step_size) * noise


def linear_snr_end(T: int, beta_start: float, beta_end: float) -> float:
    """SNR at the last step, ᾱ_T/(1 − ᾱ_T), of the linear schedule β_start … β_end over T steps."""
    abar = torch.cumprod(1 - torch.linspace(beta_start, beta_end, T, dtype=torch.float64), 0)[-1]
    return float(abar / (1 - abar))


def schedule_for_snr(T: int, snr_end: float, beta_start: float = 1e-4) -> torch.Tensor:
    """A linear schedule β_1 = ``beta_start`` … β_T whose last step has SNR(T) = ᾱ_T/(1 − ᾱ_T) = ``snr_end``
    (Kingma et al. 2021's SNR; Ho et al.'s T = 1000, β_T = 0.02 gives SNR(T) ≈ 4e-5). β_T by bisection, since
    SNR(T) falls monotonically as β_T grows."""
    if snr_end <= 0:
        raise ValueError(f"the target SNR must be > 0, got {snr_end}")
    lo, hi = beta_start, 0.999
    if linear_snr_end(T, beta_start, lo) < snr_end:
        raise ValueError(f"SNR(T) = {snr_end:g} is above what β_1 = {beta_start} alone leaves after T = {T} steps")
    if linear_snr_end(T, beta_start, hi) > snr_end:
        raise ValueError(f"SNR(T) = {snr_end:g} is out of reach of a linear schedule with T = {T} steps (β < 1)")
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if linear_snr_end(T, beta_start, mid) > snr_end else (lo, mid)
    return torch.linspace(beta_start, 0.5 * (lo + hi), T, dtype=torch.float64)


def kl_to_standard_normal(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, I)) per sample, summed over the latent dimensions: ½ Σ (μ² + σ² − 1 − log σ²)
    (Kingma & Welling 2014, App. B; the KL term of LDM's KL-autoencoder, diffusers' ``latent_dist.kl()``)."""
    return 0.5 * (mean**2 + logvar.exp() - 1 - logvar).flatten(1).sum(1)


def wgan_gp(critic, real: torch.Tensor, fake: torch.Tensor, alpha: torch.Tensor, lam: float = 10.0) -> torch.Tensor:
    """The gradient penalty of WGAN-GP (Gulrajani et al. 2017, eq. 3 and Algorithm 1):

        λ E_x̂[(‖∇_x̂ D(x̂)‖₂ − 1)²],   x̂ = α x + (1 − α) x̃,  α ~ U[0, 1] per sample,

    with the norm taken per sample and ``create_graph=True`` so the critic is trained through the penalty."""
    x_hat = (alpha * real + (1 - alpha) * fake).detach().requires_grad_(True)
    grad, = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return lam * ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


def identity_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """cos(a, b) = ⟨a, b⟩ / (‖a‖ ‖b‖) over the last dimension (the identity score of ArcFace-style embeddings;
    :func:`dfs.metrics.cosine` for numpy)."""
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))


def aad(layer, h: torch.Tensor, z_att: torch.Tensor, z_id: torch.Tensor) -> torch.Tensor:
    """FaceShifter's AAD (Li et al. 2020, §3.1 eq. 1–3) with the weights of a :class:`dfs.swap.faceshifter.AADLayer`:
    h̄ = InstanceNorm(h), A = γ_att ⊗ h̄ + β_att, I = γ_id ⊗ h̄ + β_id, M = σ(conv(h̄)), h_out = (1 − M) ⊗ A + M ⊗ I."""
    h = layer.norm(h)
    gamma_att, beta_att = layer.att(z_att).chunk(2, 1)
    gamma_id, beta_id = layer.id(z_id)[:, :, None, None].chunk(2, 1)
    M = torch.sigmoid(layer.mask(h))
    return (1 - M) * (gamma_att * h + beta_att) + M * (gamma_id * h + beta_id)


def ns_generator_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """The non-saturating generator loss from the discriminator's logits on a batch of fakes: −E log D(G(z)) with
    D = sigmoid(logit), computed as E softplus(−logit) (Goodfellow et al. 2014 §3; ``dfs.gan.ns_generator_loss``
    for one member)."""
    from .. import gan
    return gan.ns_generator_loss(logits_fake.reshape(1, -1))[0]
