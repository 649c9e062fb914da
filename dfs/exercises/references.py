"""Reference solutions the exercises need in their own signatures: a few lines each that ``dfs`` has no other use
for, or a call of the ``dfs`` function the exercise rebuilds (the Langevin step, WGAN-GP's penalty, the
non-saturating generator loss).

Everything else is checked against the project's own code directly: :mod:`dfs.diffusion`, :mod:`dfs.toy`,
:mod:`dfs.latent`, :mod:`dfs.metrics`, :mod:`dfs.swap.faceshifter` (FaceShifter's AAD is ``AADLayer`` itself).
"""
from __future__ import annotations

import torch

from .. import diffusion as D
from .. import gan, toy


def alpha_bar(betas: torch.Tensor) -> torch.Tensor:
    """ᾱ_t = ∏_{s=1}^{t} (1 − β_s) for every step (thesis eq. 2 with the product range corrected: the draft's l.84 and l.236, ``dfs.errata``)."""
    return torch.cumprod(1 - betas, 0)


def mu_theta(sched: D.NoiseSchedule, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """μ_θ(x_t, t) = 1/√α_t · (x_t − β_t/√(1 − ᾱ_t) · ε_θ(x_t, t))   (Ho et al. eq. 11)."""
    beta, alpha = D.extract(sched.betas, t, x_t), D.extract(sched.alphas, t, x_t)
    return (x_t - beta / D.extract(sched.sqrt_one_minus_alphas_cumprod, t, x_t) * eps) / alpha.sqrt()


def langevin_step(score_fn, x: torch.Tensor, step_size: float, noise: torch.Tensor) -> torch.Tensor:
    """One step of unadjusted Langevin dynamics x ← x + (δ/2) ∇log p(x) + √δ z (thesis App. 2): the step
    :func:`dfs.toy.langevin` iterates, :func:`dfs.toy.langevin_step`."""
    return toy.langevin_step(score_fn, x, step_size, noise)


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

    with the norm taken per sample and the critic trained through the penalty: :func:`dfs.gan.gradient_penalty`
    on the batch as one member with each sample flattened (``alpha``: one value per sample)."""
    b = len(real)
    return gan.gradient_penalty(lambda x: critic(x.reshape(real.shape)), real.reshape(1, b, -1),
                                fake.reshape(1, b, -1), lam, eps=alpha.reshape(1, b, 1))[0]


def identity_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """cos(a, b) = ⟨a, b⟩ / (‖a‖ ‖b‖) over the last dimension (the identity score of ArcFace-style embeddings;
    :func:`dfs.metrics.cosine` for numpy)."""
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))


def ns_generator_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """The non-saturating generator loss from the discriminator's logits on a batch of fakes: −E log D(G(z)) with
    D = sigmoid(logit), computed as E softplus(−logit) (Goodfellow et al. 2014 §3; ``dfs.gan.ns_generator_loss``
    for one member)."""
    return gan.ns_generator_loss(logits_fake.reshape(1, -1))[0]
