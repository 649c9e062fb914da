"""GANs on 2-D toy data: the losses, penalties and discriminator constraints the thesis' §1.1.1 opens with.

The draft (l.55) motivates diffusion models by two problems of GANs, training instability [9] and mode collapse
[12], and by the remedies it cites: spectral normalisation [11], the Wasserstein GAN [1] and unrolled GANs [13].
This module implements each of them, small enough to train many seeds on a CPU:

* :class:`BatchedMLP` — S *independent* MLPs evaluated as one batched matrix product: weights ``(S, in, out)``,
  inputs ``(S, B, in)``.  Member s is initialised from its own seed and its loss is summed with the others', so its
  gradients (and its Adam/RMSProp updates, which act element-wise) are those of a run on its own; training S seeds
  (or S datasets) costs about as much as training one on a CPU, where these tiny networks are overhead-bound;
* the losses as plain functions named after the papers' terms, each with its equation: the non-saturating GAN
  (:func:`ns_discriminator_loss`, :func:`ns_generator_loss`), the Wasserstein critic (:func:`wasserstein_critic_loss`,
  :func:`clip_weights_`), WGAN-GP's :func:`gradient_penalty`, DRAGAN's :func:`dragan_penalty`, spectral
  normalisation (:func:`spectral_norm`) and the unrolled generator loss (:func:`unrolled_generator_loss`);
* :data:`VARIANTS` (one :class:`GanConfig` per method, the papers' optimiser settings scaled to a short run) and
  :func:`train_gan`, whose step function goes through the project's one trainer :class:`dfs.train.Trainer` with two
  optimisers (``"d"`` and ``"g"``), like FaceShifter.

Every loss returns one value per member, shape ``(S,)`` (the expectation over that member's batch); the step sums
them over members.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.nn.utils import parametrize

from .toy import GaussianMixture
from .train import TrainConfig, Trainer

# ----------------------------------------------------------------------------------------------------------
# S independent MLPs as one batched module
# ----------------------------------------------------------------------------------------------------------


class BatchedLinear(nn.Module):
    """S independent affine maps x_s ↦ x_s W_s + b_s: ``weight`` (S, in, out), ``bias`` (S, 1, out).

    Member s is initialised like ``nn.Linear`` (weights and biases uniform in ±1/√in) from ``generators[s]``.
    """

    def __init__(self, fan_in: int, fan_out: int, generators: Sequence[torch.Generator]):
        super().__init__()
        if fan_in <= 0 or fan_out <= 0 or not generators:
            raise ValueError(f"need fan_in, fan_out > 0 and at least one member; got {fan_in}, {fan_out}, "
                             f"{len(generators)} generators")
        bound = 1 / math.sqrt(fan_in)
        w = [(2 * torch.rand(fan_in, fan_out, generator=g) - 1) * bound for g in generators]
        b = [(2 * torch.rand(1, fan_out, generator=g) - 1) * bound for g in generators]
        self.weight = nn.Parameter(torch.stack(w))
        self.bias = nn.Parameter(torch.stack(b))

    @property
    def members(self) -> int:
        return self.weight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[0] != self.weight.shape[0] or x.shape[2] != self.weight.shape[1]:
            raise ValueError(f"input must be (S={self.weight.shape[0]}, B, {self.weight.shape[1]}); "
                             f"got {tuple(x.shape)}")
        return torch.baddbmm(self.bias, x, self.weight)


class BatchedMLP(nn.Module):
    """``len(seeds)`` independent MLPs in → hidden (× ``layers``) → out, applied to inputs of shape (S, B, in).

    ``activation``: "relu" (the generators) or "leaky_relu" (slope 0.2, the discriminators).
    """

    def __init__(self, fan_in: int, fan_out: int, hidden: int, layers: int, seeds: Sequence[int],
                 activation: str = "relu"):
        super().__init__()
        if layers < 1 or hidden < 1:
            raise ValueError(f"an MLP needs layers ≥ 1 and hidden ≥ 1; got {layers}, {hidden}")
        if activation not in ("relu", "leaky_relu"):
            raise ValueError(f"activation must be 'relu' or 'leaky_relu', got {activation!r}")
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
        sizes = [fan_in] + [hidden] * layers + [fan_out]
        self.layers = nn.ModuleList(BatchedLinear(a, b, gens) for a, b in itertools.pairwise(sizes))
        self.activation = activation

    @property
    def members(self) -> int:
        return self.layers[0].members

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = F.relu if self.activation == "relu" else (lambda h: F.leaky_relu(h, 0.2))
        for layer in self.layers[:-1]:
            x = act(layer(x))
        return self.layers[-1](x)


def n_parameters(module: nn.Module, per_member: bool = True) -> int:
    """Trainable parameters of ``module``; of one member of a batched module when ``per_member``."""
    total = sum(p.numel() for p in module.parameters() if p.requires_grad)
    members = getattr(module, "members", 1) if per_member else 1
    return total // members


# ----------------------------------------------------------------------------------------------------------
# Spectral normalisation (Miyato et al. 2018, ref. [11])
# ----------------------------------------------------------------------------------------------------------


class BatchedSpectralNorm(nn.Module):
    """The parametrisation W ↦ W̄_SN(W) = W / σ(W) of Miyato et al. eq. 8, per member, with σ(W) the largest
    singular value estimated by their Algorithm 1 (power iteration, ``n_power_iterations`` per training forward,
    vectors kept between calls).

    The same computation as ``torch.nn.utils.parametrizations.spectral_norm`` (which treats a 3-D weight as one
    matrix, so it cannot be used on batched weights): with ``weight`` (S, in, out) the map is x ↦ xW, whose matrix
    in torch's (out, in) convention is Wᵀ; u ∈ R^out, v ∈ R^in, u ← normalise(Wᵀv), v ← normalise(Wu),
    σ = uᵀWᵀv. u and v are buffers; σ is differentiated through W only (u, v held fixed), as in the paper.
    """

    def __init__(self, weight: torch.Tensor, n_power_iterations: int = 1, eps: float = 1e-12,
                 generator: torch.Generator | None = None):
        super().__init__()
        if weight.dim() != 3:
            raise ValueError(f"expected a batched weight (S, in, out); got shape {tuple(weight.shape)}")
        if n_power_iterations < 1:
            raise ValueError(f"n_power_iterations must be ≥ 1, got {n_power_iterations}")
        s, fan_in, fan_out = weight.shape
        self.n_power_iterations, self.eps = n_power_iterations, eps
        u = F.normalize(torch.randn(s, fan_out, generator=generator), dim=1, eps=eps)
        v = F.normalize(torch.randn(s, fan_in, generator=generator), dim=1, eps=eps)
        self.register_buffer("_u", u)
        self.register_buffer("_v", v)
        self._power_method(weight.detach(), 15)       # torch's spectral_norm starts with 15 iterations, too

    @torch.no_grad()
    def _power_method(self, w: torch.Tensor, n: int) -> None:
        for _ in range(n):
            self._u = F.normalize(torch.einsum("sio,si->so", w, self._v), dim=1, eps=self.eps)
            self._v = F.normalize(torch.einsum("sio,so->si", w, self._u), dim=1, eps=self.eps)

    def sigma(self, w: torch.Tensor) -> torch.Tensor:
        """σ(W) ≈ uᵀ Wᵀ v per member, shape (S,)."""
        return torch.einsum("so,sio,si->s", self._u, w, self._v)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.training:
            self._power_method(w.detach(), self.n_power_iterations)
        u, v = self._u.clone(), self._v.clone()       # autograd must see the vectors of this call
        sigma = torch.einsum("so,sio,si->s", u, w, v)
        return w / sigma[:, None, None]


def spectral_norm(layer: BatchedLinear, n_power_iterations: int = 1,
                  generator: torch.Generator | None = None) -> BatchedLinear:
    """Register :class:`BatchedSpectralNorm` on ``layer.weight`` (``torch.nn.utils.parametrize``); returns it."""
    parametrize.register_parametrization(layer, "weight", BatchedSpectralNorm(layer.weight, n_power_iterations,
                                                                              generator=generator))
    return layer


def apply_spectral_norm(mlp: BatchedMLP, seed: int = 0) -> BatchedMLP:
    """Spectrally normalise every layer of ``mlp`` (an SN-GAN discriminator, Miyato et al. §2.1)."""
    g = torch.Generator().manual_seed(seed)
    for layer in mlp.layers:
        spectral_norm(layer, generator=g)
    return mlp


# ----------------------------------------------------------------------------------------------------------
# Losses and penalties (each: per member, shape (S,))
# ----------------------------------------------------------------------------------------------------------


def _per_member(x: torch.Tensor) -> torch.Tensor:
    """Mean over every axis but the first (members): an expectation over each member's batch."""
    return x.reshape(x.shape[0], -1).mean(1)


def ns_discriminator_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """−V(D, G) of Goodfellow et al. 2014 eq. 1, the discriminator's side, with D = sigmoid(logit):

        L_D = −E_x[log D(x)] − E_z[log(1 − D(G(z)))] = E softplus(−logit(x)) + E softplus(logit(G(z))).
    """
    return _per_member(F.softplus(-logits_real)) + _per_member(F.softplus(logits_fake))


def ns_generator_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """The non-saturating generator loss of Goodfellow et al. 2014 §3 (maximise log D(G(z)) instead of minimising
    log(1 − D(G(z)))): L_G = −E_z[log D(G(z))] = E softplus(−logit(G(z)))."""
    return _per_member(F.softplus(-logits_fake))


def wasserstein_critic_loss(f_real: torch.Tensor, f_fake: torch.Tensor) -> torch.Tensor:
    """The negated objective of Arjovsky et al. 2017 eq. 3, max_w E_x[f_w(x)] − E_z[f_w(g_θ(z))]:
    L_f = E_z[f(G(z))] − E_x[f(x)] (also the first two terms of Gulrajani et al. eq. 3)."""
    return _per_member(f_fake) - _per_member(f_real)


def wasserstein_generator_loss(f_fake: torch.Tensor) -> torch.Tensor:
    """The generator's side of Arjovsky et al. eq. 3 (Algorithm 1, line 10): L_G = −E_z[f(G(z))]."""
    return -_per_member(f_fake)


@torch.no_grad()
def clip_weights_(module: nn.Module, c: float) -> nn.Module:
    """w ← clip(w, −c, c) for every parameter, in place (Arjovsky et al. Algorithm 1, line 7): the compact set W of
    eq. 3 that keeps f_w K-Lipschitz for some K."""
    if c <= 0:
        raise ValueError(f"the clipping constant c must be > 0, got {c}")
    for p in module.parameters():
        p.clamp_(-c, c)
    return module


def input_gradient(critic: Callable, x: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
    """∇_x D(x) for every sample, shape of ``x`` (samples are independent, so the gradient of the sum is the
    per-sample gradient)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        out = critic(x)
        (grad,) = torch.autograd.grad(out.sum(), x, create_graph=create_graph)
    return grad


def gradient_penalty(critic: Callable, real: torch.Tensor, fake: torch.Tensor, lam: float = 10.0,
                     eps: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """WGAN-GP's penalty, the last term of Gulrajani et al. 2017 eq. 3:

        λ E_{x̂ ~ P_x̂}[(‖∇_x̂ D(x̂)‖₂ − 1)²],   x̂ = ε x + (1 − ε) x̃,  ε ~ U[0, 1] per sample (their Algorithm 1),

    with x real and x̃ = G(z) generated. ``eps`` (shape (S, B, 1)) may be given; it is drawn otherwise.
    Differentiable in the critic's parameters (the penalty is part of the critic's loss).
    """
    if real.shape != fake.shape:
        raise ValueError(f"real and fake batches must have the same shape; got {tuple(real.shape)}, {tuple(fake.shape)}")
    if eps is None:
        eps = torch.rand(real.shape[:-1] + (1,), generator=generator).to(real)
    x_hat = eps * real.detach() + (1 - eps) * fake.detach()
    grad = input_gradient(critic, x_hat, create_graph=True)
    return lam * _per_member((grad.norm(dim=-1) - 1) ** 2)


def dragan_penalty(critic: Callable, real: torch.Tensor, lam: float = 10.0, k: float = 1.0,
                   noise_std: float | torch.Tensor = 0.5, delta: torch.Tensor | None = None,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """DRAGAN's local gradient penalty (Kodali et al. 2017, ref. [9]; the penalty term of their DRAGAN objective —
    its equation number was not checked against the paper offline):

        λ E_{x ~ P_real, δ ~ N_d(0, cI)}[(‖∇_x D(x + δ)‖ − k)²],

    a gradient-norm constraint only in a neighbourhood of the real data (unlike WGAN-GP's interpolation line).
    ``noise_std`` = √c (a number or a per-member tensor (S, 1, 1)); ``delta`` may be given. Their reference code
    perturbs with 0.5·std(x); we use N(0, cI) as the paper writes it, with √c = 0.5 × the data's per-axis std.
    """
    if delta is None:
        delta = torch.randn(real.shape, generator=generator).to(real) * noise_std
    grad = input_gradient(critic, real.detach() + delta, create_graph=True)
    return lam * _per_member((grad.norm(dim=-1) - k) ** 2)


# ----------------------------------------------------------------------------------------------------------
# Unrolled GANs (Metz et al. 2017, ref. [13])
# ----------------------------------------------------------------------------------------------------------


def unroll_discriminator(d_net: nn.Module, params: dict[str, torch.Tensor], real: torch.Tensor,
                         fake: torch.Tensor, k: int, lr: float, adam: dict | None = None) -> dict[str, torch.Tensor]:
    """θ_D^K from K optimiser steps on the discriminator's loss (Metz et al. eq. 7, θ_D^{k+1} = θ_D^k + η^k
    ∂f/∂θ_D^k, written as descent on L_D = −f), through ``torch.func.functional_call``:

        θ_D^{k+1} = θ_D^k − η ∇_{θ_D} L_D(θ_G, θ_D^k)                     (``adam=None``: eq. 7 as written)

    or, with ``adam = {"state": {name: (m, v, t)}, "betas": (β₁, β₂), "eps": ε}``, K Adam steps continuing the
    discriminator optimiser's moments (what Metz et al.'s reference code unrolls: the discriminator's own update,
    Adam's m̂/(√v̂ + ε) with √ taken of v̂ + 10⁻¹⁶ so that it stays twice differentiable at v̂ = 0).

    The steps are built with ``create_graph=True`` and ``fake`` is *not* detached, so θ_D^K is a differentiable
    function of θ_G: the generator's gradient flows through all K updates (the full method of their Fig. 1, not the
    first-order surrogate that drops ∂θ_D^K/∂θ_G). ``params`` is left untouched: the real discriminator never moves.
    """
    if k < 0:
        raise ValueError(f"the number of unrolling steps must be ≥ 0, got {k}")
    if k > 0 and lr <= 0:
        raise ValueError(f"the unrolling step size must be > 0, got {lr}")
    names = list(params)
    state = dict(adam["state"]) if adam is not None else None
    for _ in range(k):
        loss = ns_discriminator_loss(functional_call(d_net, params, (real,)),
                                     functional_call(d_net, params, (fake,))).sum()
        grads = torch.autograd.grad(loss, [params[n] for n in names], create_graph=True)
        if state is None:
            params = {n: params[n] - lr * g for n, g in zip(names, grads)}
            continue
        (b1, b2), eps, new = adam["betas"], adam["eps"], {}
        for n, g in zip(names, grads):
            m, v, t = state.get(n, (torch.zeros_like(g), torch.zeros_like(g), 0))
            m, v, t = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g, t + 1
            state[n] = (m, v, t)
            m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
            new[n] = params[n] - lr * m_hat / ((v_hat + 1e-16).sqrt() + eps)
        params = new
    return params


def adam_state(optimizer: torch.optim.Optimizer, module: nn.Module) -> dict:
    """The moments of ``optimizer`` (Adam) for ``module``'s parameters, by name, as :func:`unroll_discriminator`
    takes them (detached: the unrolled steps start from the current state)."""
    state, group = {}, optimizer.param_groups[0]
    for n, p in module.named_parameters():
        s = optimizer.state.get(p, {})
        if s:
            state[n] = (s["exp_avg"].detach(), s["exp_avg_sq"].detach(), int(s["step"]))
    return {"state": state, "betas": group["betas"], "eps": group["eps"]}


def unrolled_generator_loss(d_net: nn.Module, real: torch.Tensor, fake: torch.Tensor, k: int,
                            lr: float, adam: dict | None = None) -> torch.Tensor:
    """The generator's loss against the discriminator K steps ahead: the surrogate f_K(θ_G, θ_D) = f(θ_G,
    θ_D^K(θ_G, θ_D)) whose gradient is Metz et al.'s generator update, eq. 10 (in its non-saturating form,
    L_G = −E log D_{θ_D^K}(G(z))). With K = 0 it is :func:`ns_generator_loss` of the current D."""
    params = {n: p.detach().requires_grad_(True) for n, p in d_net.named_parameters()}
    ahead = unroll_discriminator(d_net, params, real.detach(), fake, k, lr, adam)
    return ns_generator_loss(functional_call(d_net, ahead, (fake,)))


# ----------------------------------------------------------------------------------------------------------
# The variants and their training through dfs.train
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GanConfig:
    """One GAN variant (loss, constraint, optimiser) and the shared architecture.

    ``loss``: "ns" (non-saturating, Goodfellow et al.) or "wasserstein" (Arjovsky et al.); ``penalty``: None,
    "gp" (Gulrajani et al.) or "dragan" (Kodali et al.); ``clip``: WGAN's c or None; ``spectral_norm``: SN-GAN's
    discriminator; ``unroll``: Metz et al.'s K (0: off). ``steps`` counts generator updates, each after
    ``n_critic`` discriminator updates.
    """
    name: str
    loss: str = "ns"
    penalty: str | None = None
    lam: float = 10.0
    clip: float | None = None
    spectral_norm: bool = False
    unroll: int = 0
    unroll_optimizer: str = "adam"   # "adam": the D optimiser's own steps, lr_d (reference code); "sgd": eq. 7
    unroll_lr: float = 0.05          # the step η of "sgd" unrolling
    n_critic: int = 1
    optimizer: str = "adam"          # "adam" | "rmsprop"
    lr_d: float = 1e-3
    lr_g: float = 1e-3
    betas: tuple[float, float] = (0.5, 0.999)
    z_dim: int = 8
    hidden: int = 64
    layers: int = 3
    batch_size: int = 128
    dragan_noise: float = 0.5        # √c as a fraction of the data's per-axis std
    cite: str = ""

    def __post_init__(self):
        if self.loss not in ("ns", "wasserstein"):
            raise ValueError(f"loss must be 'ns' or 'wasserstein', got {self.loss!r}")
        if self.penalty not in (None, "gp", "dragan"):
            raise ValueError(f"penalty must be None, 'gp' or 'dragan', got {self.penalty!r}")
        if self.unroll_optimizer not in ("adam", "sgd"):
            raise ValueError(f"unroll_optimizer must be 'adam' or 'sgd', got {self.unroll_optimizer!r}")
        if self.optimizer not in ("adam", "rmsprop"):
            raise ValueError(f"optimizer must be 'adam' or 'rmsprop', got {self.optimizer!r}")
        if self.n_critic < 1 or self.unroll < 0 or self.batch_size < 2:
            raise ValueError("need n_critic ≥ 1, unroll ≥ 0 and batch_size ≥ 2")
        if self.unroll and self.loss != "ns":
            raise ValueError("unrolling is implemented for the non-saturating loss (Metz et al.'s setting)")


# The papers' settings where a short CPU run allows them: WGAN's RMSProp and c = 0.01 and n_critic = 5 (Algorithm 1;
# learning rate 10× the paper's 5e-5 to move within a few thousand steps), WGAN-GP's λ = 10, n_critic = 5,
# Adam β = (0, 0.9) (their Algorithm 1; lr 1e-3 instead of 1e-4, same reason), DRAGAN's λ = 10, k = 1, SN-GAN with
# one power iteration per step (Miyato et al. Algorithm 1), unrolled K = 5 (Metz et al.'s 2-D experiment) with the
# discriminator's own Adam steps, as their reference code unrolls.
VARIANTS: dict[str, GanConfig] = {
    "NS-GAN": GanConfig("NS-GAN", cite="Goodfellow et al. 2014"),
    "WGAN (clip)": GanConfig("WGAN (clip)", loss="wasserstein", clip=0.01, n_critic=5, optimizer="rmsprop",
                             lr_d=5e-4, lr_g=5e-4, cite="[1] Arjovsky et al. 2017"),
    "WGAN-GP": GanConfig("WGAN-GP", loss="wasserstein", penalty="gp", n_critic=5, betas=(0.0, 0.9),
                         cite="Gulrajani et al. 2017"),
    "DRAGAN": GanConfig("DRAGAN", penalty="dragan", cite="[9] Kodali et al. 2017"),
    "SN-GAN": GanConfig("SN-GAN", spectral_norm=True, cite="[11] Miyato et al. 2018"),
    "Unrolled (K=5)": GanConfig("Unrolled (K=5)", unroll=5, cite="[13] Metz et al. 2017"),
}


class GAN(nn.Module):
    """The trainer's model: ``g_net`` (z → x) and ``d_net`` (x → logit or critic value), S members each."""

    def __init__(self, cfg: GanConfig, seeds: Sequence[int], data_dim: int = 2):
        super().__init__()
        if not seeds:
            raise ValueError("need at least one seed (one member)")
        self.cfg = cfg
        self.g_net = BatchedMLP(cfg.z_dim, data_dim, cfg.hidden, cfg.layers, [2 * s for s in seeds], "relu")
        self.d_net = BatchedMLP(data_dim, 1, cfg.hidden, cfg.layers, [2 * s + 1 for s in seeds], "leaky_relu")
        if cfg.spectral_norm:
            apply_spectral_norm(self.d_net, seed=int(seeds[0]))
        if cfg.clip is not None:
            clip_weights_(self.d_net, cfg.clip)

    @property
    def members(self) -> int:
        return self.g_net.members

    def sample(self, n: int, generator: torch.Generator | None = None, z: torch.Tensor | None = None) -> torch.Tensor:
        """n samples of every member, shape (S, n, D), without gradients."""
        if z is None:
            z = torch.randn(self.members, n, self.cfg.z_dim, generator=generator)
        with torch.no_grad():
            return self.g_net(z.to(next(self.g_net.parameters())))


def discriminator_loss(gan: GAN, real: torch.Tensor, fake: torch.Tensor, noise_std) -> torch.Tensor:
    """The variant's discriminator/critic loss per member, penalty included (fake is detached here)."""
    cfg, d = gan.cfg, gan.d_net
    fake = fake.detach()
    out_real, out_fake = d(real), d(fake)
    if cfg.loss == "ns":
        loss = ns_discriminator_loss(out_real, out_fake)
    else:
        loss = wasserstein_critic_loss(out_real, out_fake)
    if cfg.penalty == "gp":
        loss = loss + gradient_penalty(d, real, fake, cfg.lam)
    elif cfg.penalty == "dragan":
        loss = loss + dragan_penalty(d, real, cfg.lam, noise_std=noise_std)
    return loss


def generator_loss(gan: GAN, real: torch.Tensor, fake: torch.Tensor,
                   d_optimizer: torch.optim.Optimizer | None = None) -> torch.Tensor:
    """The variant's generator loss per member (unrolled through K discriminator steps when ``cfg.unroll``: Adam
    steps continuing ``d_optimizer``'s moments, or plain gradient steps of size ``cfg.unroll_lr``)."""
    cfg = gan.cfg
    if cfg.unroll:
        if cfg.unroll_optimizer == "adam":
            if d_optimizer is None:
                raise ValueError("Adam unrolling needs the discriminator's optimiser (its moments and step size)")
            return unrolled_generator_loss(gan.d_net, real, fake, cfg.unroll, d_optimizer.param_groups[0]["lr"],
                                           adam_state(d_optimizer, gan.d_net))
        return unrolled_generator_loss(gan.d_net, real, fake, cfg.unroll, cfg.unroll_lr)
    out = gan.d_net(fake)
    return ns_generator_loss(out) if cfg.loss == "ns" else wasserstein_generator_loss(out)


def gan_step(trainer: Trainer, batch, step: int) -> dict:
    """One training step: ``n_critic`` discriminator updates, then one generator update (each through
    ``trainer.backward_step`` with its own optimiser); WGAN's clipping after every critic update."""
    gan: GAN = trainer.raw_model
    cfg = gan.cfg
    real, noise_std = batch                                        # real: (n_critic, S, B, D)
    s, b = gan.members, cfg.batch_size
    for i in range(cfg.n_critic):
        fake = gan.g_net(torch.randn(s, b, cfg.z_dim, device=real.device))
        with parametrize.cached():                 # spectral norm: one power iteration per update (Algorithm 1)
            loss_d = discriminator_loss(gan, real[i], fake, noise_std)
            trainer.backward_step(loss_d.sum(), "d")
        if cfg.clip is not None:
            clip_weights_(gan.d_net, cfg.clip)
    fake = gan.g_net(torch.randn(s, b, cfg.z_dim, device=real.device))
    with parametrize.cached():
        loss_g = generator_loss(gan, real[-1], fake, trainer.optimizers["d"])
        trainer.backward_step(loss_g.sum(), "g")
    return {"loss_d": loss_d.detach().mean(), "loss_g": loss_g.detach().mean()}


def sample_members(gmms: Sequence[GaussianMixture], n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """n draws from each member's mixture, shape (S, n, D)."""
    return torch.stack([g.sample(n, generator) for g in gmms])


def make_optimizers(gan: GAN) -> dict[str, torch.optim.Optimizer]:
    cfg = gan.cfg
    if cfg.optimizer == "rmsprop":
        return {"d": torch.optim.RMSprop(gan.d_net.parameters(), lr=cfg.lr_d, foreach=True),
                "g": torch.optim.RMSprop(gan.g_net.parameters(), lr=cfg.lr_g, foreach=True)}
    return {"d": torch.optim.Adam(gan.d_net.parameters(), lr=cfg.lr_d, betas=cfg.betas, foreach=True),
            "g": torch.optim.Adam(gan.g_net.parameters(), lr=cfg.lr_g, betas=cfg.betas, foreach=True)}


@dataclass
class GanRun:
    """A trainer over S members (one mixture and one seed each); :meth:`fit` continues it to a total step count."""
    cfg: GanConfig
    gmms: list
    seeds: list
    seed: int = 0
    device: str = "cpu"
    trainer: Trainer = field(init=False)

    def __post_init__(self):
        if len(self.gmms) != len(self.seeds):
            raise ValueError(f"one mixture per member: {len(self.gmms)} mixtures for {len(self.seeds)} seeds")
        gan = GAN(self.cfg, self.seeds, data_dim=self.gmms[0].dim)
        noise_std = torch.tensor([self.cfg.dragan_noise * float(g.covariance().diagonal().mean().sqrt())
                                  for g in self.gmms]).reshape(-1, 1, 1)
        cfg = self.cfg

        def batches(step, g):
            real = torch.stack([sample_members(self.gmms, cfg.batch_size, g) for _ in range(cfg.n_critic)])
            return real, noise_std

        tcfg = TrainConfig(steps=0, batch_size=cfg.batch_size, grad_clip=None, ema_decay=None, seed=self.seed,
                           progress=False, log_every=50, device=self.device)
        self.trainer = Trainer(gan, None, batches, tcfg, optimizers=make_optimizers(gan), step_fn=gan_step)

    @property
    def gan(self) -> GAN:
        return self.trainer.raw_model

    def fit(self, total_steps: int) -> list[dict]:
        return self.trainer.fit(total_steps)


def train_gan(cfg: GanConfig | str, gmms: Sequence[GaussianMixture], seeds: Sequence[int], steps: int,
              seed: int = 0, device: str = "cpu", **overrides) -> GanRun:
    """Train one variant (a :class:`GanConfig` or a name in :data:`VARIANTS`) for ``steps`` generator updates,
    member s on ``gmms[s]`` from ``seeds[s]``; returns the :class:`GanRun` (call ``.fit`` to continue)."""
    if isinstance(cfg, str):
        if cfg not in VARIANTS:
            raise ValueError(f"unknown GAN variant {cfg!r}; choose one of {sorted(VARIANTS)}")
        cfg = VARIANTS[cfg]
    if overrides:
        cfg = replace(cfg, **overrides)
    run = GanRun(cfg, list(gmms), list(seeds), seed=seed, device=device)
    run.fit(steps)
    return run
