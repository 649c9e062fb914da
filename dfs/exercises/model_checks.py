"""Checkers for the exercises of notebook 04 (latent diffusion) and of the face/GAN notebooks (05, 08)."""
from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn

from .. import latent, metrics
from ..swap import faceshifter
from ..swap.faceshifter import AADLayer
from . import references as R
from .core import exercise

F64 = torch.float64


# ----------------------------------------------------------------------------------------------------------
# 04: latent diffusion
# ----------------------------------------------------------------------------------------------------------


@exercise("kl_to_standard_normal", "04", "the KL term of the KL-autoencoder",
          "Kingma & Welling 2014, App. B; LDM App. G", R.kl_to_standard_normal)
def check_kl_term(p):
    z = torch.zeros(2, 4, 3, 3, dtype=F64)
    kl = p.tensor(p(z, z), "KL", shape=(2,))
    if float(kl.abs().max()) > 1e-12:
        p.fail(f"KL(N(0, I) ‖ N(0, I)) must be 0; yours is {float(kl.abs().max()):.4g} for mean 0 and log σ² = 0")
    p.passed("0 at the prior")
    mu, lv, n = 0.8, -1.5, 400_000
    x = mu + math.exp(lv / 2) * torch.randn(n, dtype=F64)
    ratio = -0.5 * (x - mu) ** 2 / math.exp(lv) - 0.5 * lv + 0.5 * x**2
    est, se = float(ratio.mean()), float(ratio.std()) / math.sqrt(n)
    kl = float(p.tensor(p(torch.full((1, 1, 1, 1), mu, dtype=F64), torch.full((1, 1, 1, 1), lv, dtype=F64)), "KL", shape=(1,)))
    if abs(kl - est) > 6 * se:
        p.fail(f"for one latent dimension with mean {mu} and log σ² = {lv} your KL is {kl:.4g}; a Monte Carlo estimate "
               f"E_q[log q(z) − log N(z; 0, 1)] from {n} draws gives {est:.4g} ± {se:.1g}")
    p.passed("one dimension equals a Monte Carlo estimate")
    g = torch.Generator().manual_seed(20)
    m, lv = torch.randn(3, 4, 2, 2, generator=g, dtype=F64), torch.randn(3, 4, 2, 2, generator=g, dtype=F64)
    one, two = p(m, lv), p(torch.cat([m, m], 1), torch.cat([lv, lv], 1))
    one, two = p.tensor(one, "KL", shape=(3,)), p.tensor(two, "KL", shape=(3,))
    if ((two - 2 * one).abs() > 1e-9 * one.abs().max()).any():
        p.fail(f"the KL of independent latent dimensions adds up: with every channel repeated twice it should double; "
               f"yours changes by a factor {float((two / one).mean()):.3g}")
    p.passed("adds up over the latent's dimensions, one value per sample")
    for dtype in (F64, torch.float32):
        m, lv = torch.randn(3, 4, 5, 5, generator=g, dtype=dtype), torch.randn(3, 4, 5, 5, generator=g, dtype=dtype)
        out = p.tensor(p(m, lv), "KL", shape=(3,), dtype=dtype)
        p.close(out, R.kl_to_standard_normal(m, lv), "KL", f" for random means and log-variances ({str(dtype)[6:]})",
                rtol=1e-5)
    p.passed("float32")


@exercise("cfg_eps", "04", "classifier-free guidance", "Ho & Salimans 2022, eq. (6)", latent.cfg_eps)
def check_cfg(p):
    g = torch.Generator().manual_seed(21)
    u, c = torch.randn(2, 4, 8, 8, generator=g, dtype=F64), torch.randn(2, 4, 8, 8, generator=g, dtype=F64)
    for s, target, name in ((0.0, u, "the unconditional ε(z, ∅)"), (1.0, c, "the conditional ε(z, y)")):
        out = p.tensor(p(u, c, s), "guided ε", shape=u.shape)
        if float((out - target).abs().max()) > 1e-12:
            p.fail(f"with guidance scale s = {s} your guided ε should be {name}; it differs by "
                   f"{float((out - target).abs().max()):.3g}")
    p.passed("s = 0 and s = 1")
    for s in (3.0, 7.5):
        out = p.tensor(p(u, c, s), "guided ε", shape=u.shape)
        p.close(out, latent.cfg_eps(u, c, s), "guided ε",
                f" at s = {s} (guidance moves along the line from ε(z, ∅) through ε(z, y))")
    p.passed("s > 1 extrapolates along the line")


@exercise("vq_losses", "04", "the two VQ terms with stop-gradients", "van den Oord et al. 2017, eq. (3)",
          latent.vq_losses)
def check_vq(p):
    g = torch.Generator().manual_seed(22)
    z0, e0 = torch.randn(2, 4, 3, 3, generator=g, dtype=F64), torch.randn(2, 4, 3, 3, generator=g, dtype=F64)
    z_e, e = z0.clone().requires_grad_(True), e0.clone().requires_grad_(True)
    out = p(z_e, e)
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        p.fail(f"vq_losses should return two scalars (codebook, commitment); got {type(out).__name__}")
    codebook, commit = (p.tensor(x, name, shape=()) for x, name in zip(out, ("codebook term", "commitment term")))
    d = float(((z0 - e0) ** 2).mean())
    for x, name in ((codebook, "codebook"), (commit, "commitment")):
        if abs(float(x.detach()) - d) > 1e-9:
            p.fail(f"your {name} term is {float(x.detach()):.5g}; its value is the mean squared distance between z_e and e, {d:.5g}")
    p.passed("values: the mean squared distance")
    for x, name, moves, still in ((codebook, "codebook", e, z_e), (commit, "commitment", z_e, e)):
        z_e.grad = e.grad = None
        if not x.requires_grad:
            p.fail(f"your {name} term has no gradient at all")
        x.backward(retain_graph=True)
        if still.grad is not None and float(still.grad.abs().max()) > 0:
            p.fail(f"your {name} term sends gradient into {'z_e, the encoder output' if still is z_e else 'the codebook vectors e'}; "
                   f"it should move only {'the codebook vectors e' if moves is e else 'the encoder output z_e'}")
        if moves.grad is None or float(moves.grad.abs().max()) == 0:
            p.fail(f"your {name} term gives {'the codebook vectors e' if moves is e else 'the encoder output z_e'} no gradient")
    p.passed("stop-gradients: codebook moves e, commitment moves z_e")


# ----------------------------------------------------------------------------------------------------------
# faces and the GAN reference: identity, AAD, WGAN-GP
# ----------------------------------------------------------------------------------------------------------


def _cosine_ref(a, b):
    return torch.as_tensor(metrics.cosine(np.asarray(a), np.asarray(b)))


def _as_tensor(p, out, what, shape):
    if isinstance(out, (np.ndarray, float)):
        out = torch.as_tensor(out)
    return p.tensor(out, what, shape=shape)


@exercise("identity_cosine", "05", "the identity score", "ArcFace (Deng et al. 2019) cosine; thesis §1.1.4", _cosine_ref)
def check_cosine(p):
    g = torch.Generator().manual_seed(23)
    a, b = torch.randn(5, 16, generator=g, dtype=F64), torch.randn(5, 16, generator=g, dtype=F64)
    c = _as_tensor(p, p(a, a), "cosine", (5,))
    if float((c - 1).abs().max()) > 1e-9:
        p.fail(f"an embedding compared with itself must score 1; yours scores {c.tolist()}")
    c = _as_tensor(p, p(a, -a), "cosine", (5,))
    if float((c + 1).abs().max()) > 1e-9:
        p.fail(f"an embedding compared with its opposite must score −1; yours scores {c.tolist()}")
    p.passed("cos(a, a) = 1, cos(a, −a) = −1")
    base = _as_tensor(p, p(a, b), "cosine", (5,))
    scaled = _as_tensor(p, p(3 * a, 0.5 * b), "cosine", (5,))
    if float((scaled - base).abs().max()) > 1e-9:
        p.fail("your score changes when an embedding is rescaled (a → 3a, b → b/2): an identity score should "
               "depend only on the directions")
    single = _as_tensor(p, p(a[:1], b[:1]), "cosine", (1,))
    if float((single[0] - base[0]).abs()) > 1e-9:
        p.fail(f"your score for a pair depends on the other pairs in the batch: {float(single[0]):.4g} alone, "
               f"{float(base[0]):.4g} in a batch of 5")
    p.passed("scale-invariant; each pair independent of the batch")
    x, y = torch.randn(2, 3, 8, generator=g, dtype=F64), torch.randn(2, 3, 8, generator=g, dtype=F64)
    p.close(_as_tensor(p, p(x, y), "cosine", (2, 3)), _cosine_ref(x, y), "cosine", " for (2, 3, 8) embeddings")
    p.close(_as_tensor(p, p(x[0, 0], y[0, 0]), "cosine", ()), _cosine_ref(x[0, 0], y[0, 0]), "cosine",
            " for single (8,) embeddings")
    p.passed("shapes (…, D) → (…)")


def _aad_ref(layer, h, z_att, z_id):
    return layer(h, z_att, z_id)[0]


def _aad_layer(seed: int) -> AADLayer:
    torch.manual_seed(seed)
    return AADLayer(8, 4, 16).double()


@exercise("aad", "05", "FaceShifter's adaptive attentional denormalisation", "Li et al. 2020 (FaceShifter), §3.1",
          _aad_ref)
def check_aad(p):
    layer = _aad_layer(24)
    g = torch.Generator().manual_seed(25)
    h = 3 * torch.randn(2, 8, 6, 6, generator=g, dtype=F64) + 1
    z_att, z_id = torch.randn(2, 4, 6, 6, generator=g, dtype=F64), torch.randn(2, 16, generator=g, dtype=F64)
    with torch.no_grad():
        out = p.tensor(p(layer, h, z_att, z_id), "h_out", shape=h.shape)
        moved = p.tensor(p(layer, 2.5 * h + 1.3, z_att, z_id), "h_out", shape=h.shape)
        if float((moved - out).abs().max()) > 1e-4:
            p.fail("your output changes when each channel of h is scaled and shifted (h → 2.5 h + 1.3): AAD should "
                   "not see the per-channel statistics of h")
        p.passed("invariant to per-channel scale and shift of h")
        for bias, varied, name, other in ((30.0, "z_att", "identity", "z_id"), (-30.0, "z_id", "attribute", "z_att")):
            forced = copy.deepcopy(layer)
            forced.mask.weight.zero_()
            forced.mask.bias.fill_(bias)
            a = p(forced, h, z_att, z_id)
            b = p(forced, h, z_att + 1 if varied == "z_att" else z_att, z_id + 1 if varied == "z_id" else z_id)
            if float((a - b).abs().max()) > 1e-6:
                p.fail(f"with the attention mask M = {1 if bias > 0 else 0} everywhere your output still depends on "
                       f"{varied}; there AAD should take the {name} branch alone (the one built from {other})")
        p.passed("M = 1 uses identity only, M = 0 attributes only")
        for seed in (26, 27):
            layer = _aad_layer(seed)
            p.close(p.tensor(p(layer, h, z_att, z_id), "h_out", shape=h.shape), _aad_ref(layer, h, z_att, z_id),
                    "h_out", f" for a random AADLayer (seed {seed})", rtol=1e-6, atol=1e-8)
        layer32 = _aad_layer(26).float()
        p.close(p.tensor(p(layer32, h.float(), z_att.float(), z_id.float()), "h_out", shape=h.shape, dtype=torch.float32),
                _aad_ref(layer32, h.float(), z_att.float(), z_id.float()), "h_out", " in float32", rtol=1e-4, atol=1e-5)
    p.passed("equals dfs.swap.faceshifter.AADLayer; float32")


@exercise("wgan_gp", "05", "the WGAN-GP gradient penalty", "Gulrajani et al. 2017, eq. (3) and Algorithm 1", R.wgan_gp)
def check_wgan_gp(p):
    g = torch.Generator().manual_seed(28)
    real, fake = torch.randn(6, 3, 4, 4, generator=g, dtype=F64), torch.randn(6, 3, 4, 4, generator=g, dtype=F64)
    alpha = torch.rand(6, 1, 1, 1, generator=g, dtype=F64)
    w = torch.randn(48, generator=g, dtype=F64)
    w = 3 * w / w.norm()

    def linear_critic(x):
        return x.flatten(1) @ w

    gp = p.tensor(p(linear_critic, real, fake, alpha, 10.0), "penalty", shape=())
    if abs(float(gp.detach()) - 40.0) > 1e-8:
        p.fail(f"for a linear critic whose gradient has norm 3 everywhere your penalty (λ = 10) is {float(gp.detach()):.5g}, "
               "expected 40")
    p.passed("a linear critic with ‖∇D‖ = 3 gives λ (3 − 1)²")

    def quadratic_critic(x):
        return 0.5 * (x.flatten(1) ** 2).sum(1)

    gp = p.tensor(p(quadratic_critic, real, fake, alpha, 10.0), "penalty", shape=())
    ref = R.wgan_gp(quadratic_critic, real, fake, alpha, 10.0)
    if abs(float(gp.detach()) - float(ref.detach())) > 1e-8 * float(ref.detach()):
        p.fail(f"for the critic D(x) = ½‖x‖² (whose gradient at x is x) your penalty is {float(gp.detach()):.6g}, expected "
               f"{float(ref.detach()):.6g}: check where the gradient is taken (the interpolates, one α per sample) and that "
               "each sample's gradient norm is penalised")
    p.passed("a quadratic critic: per-sample norms at the interpolates")
    torch.manual_seed(29)
    critic = nn.Sequential(nn.Flatten(), nn.Linear(48, 16), nn.Tanh(), nn.Linear(16, 1)).double()
    gp = p.tensor(p(critic, real, fake, alpha, 10.0), "penalty", shape=())
    if not gp.requires_grad:
        p.fail("your penalty gives the critic's weights no gradient: the critic must be trained through it")
    params = list(critic.parameters())
    grads = torch.autograd.grad(gp, params, allow_unused=True)
    ref_grads = torch.autograd.grad(R.wgan_gp(critic, real, fake, alpha, 10.0), params, allow_unused=True)
    if any(a is None and b is not None for a, b in zip(grads, ref_grads)):
        p.fail("your penalty gives some of the critic's weights no gradient: the critic must be trained through it")
    err = max(float((a - b).abs().max()) for a, b in zip(grads, ref_grads) if b is not None)
    if err > 1e-8:
        p.fail(f"the gradient of your penalty with respect to the critic's weights is off by up to {err:.3g}")
    p.passed("differentiable with respect to the critic's weights")


@exercise("hinge_d_loss", "05", "the multi-scale hinge loss of the discriminator",
          "Lim & Ye 2017; FaceShifter §3.1 (pix2pixHD's multi-scale discriminator)", faceshifter.hinge_d_loss)
def check_hinge(p):
    g = torch.Generator().manual_seed(30)
    real = [1 + torch.rand(4, 1, 6, 6, generator=g, dtype=F64), 1 + torch.rand(4, 1, 3, 3, generator=g, dtype=F64)]
    fake = [-1 - torch.rand(4, 1, 6, 6, generator=g, dtype=F64), -1 - torch.rand(4, 1, 3, 3, generator=g, dtype=F64)]
    loss = p.tensor(p(real, fake), "loss", shape=())
    if abs(float(loss.detach())) > 1e-12:
        p.fail(f"with every real logit ≥ 1 and every fake logit ≤ −1 no hinge is active, so the loss must be 0; "
               f"yours is {float(loss.detach()):.4g}")
    zeros = [torch.zeros(4, 1, 6, 6, dtype=F64), torch.zeros(4, 1, 3, 3, dtype=F64)]
    loss = p.tensor(p(zeros, zeros), "loss", shape=())
    if abs(float(loss.detach()) - 2) > 1e-12:
        p.fail(f"with every logit 0 each of the two hinges costs 1, so the loss must be 2; yours is {float(loss.detach()):.4g}")
    p.passed("0 past the margins, 2 at zero logits")
    real = [torch.randn(4, 1, 6, 6, generator=g, dtype=F64).requires_grad_(True),
            (3 * torch.randn(4, 1, 2, 2, generator=g, dtype=F64)).requires_grad_(True)]
    fake = [torch.randn(4, 1, 6, 6, generator=g, dtype=F64).requires_grad_(True),
            (3 * torch.randn(4, 1, 2, 2, generator=g, dtype=F64)).requires_grad_(True)]
    loss = p.tensor(p(real, fake), "loss", shape=())
    ref = faceshifter.hinge_d_loss(real, fake)
    if abs(float(loss.detach()) - float(ref.detach())) > 1e-9:
        p.fail(f"with two scales of different sizes (6×6 and 2×2 logits) your loss is {float(loss.detach()):.6g}, expected "
               f"{float(ref.detach()):.6g}: each scale's hinge terms are averaged over its own logits, then over the scales")
    p.passed("two scales of different sizes")
    if not loss.requires_grad:
        p.fail("your loss gives the logits no gradient")
    grads = torch.autograd.grad(loss, real + fake, allow_unused=True)
    ref_grads = torch.autograd.grad(ref, real + fake)
    for which, got, exp, logits in zip(["real"] * 2 + ["fake"] * 2, grads, ref_grads, real + fake):
        got = torch.zeros_like(exp) if got is None else got
        bad = (got - exp).abs() > 1e-12
        if bad.any():
            v = float(logits.detach()[bad][0])
            p.fail(f"a {which} logit of {v:.3g} gets gradient {float(got[bad][0]):.3g} from your loss, expected "
                   f"{float(exp[bad][0]):.3g} (a logit past its margin gets none)")
    p.passed("gradients: none past the margins")


@exercise("ns_generator_loss", "05", "the non-saturating GAN generator loss",
          "Goodfellow et al. 2014, eq. (1) and §3", R.ns_generator_loss)
def check_ns_generator_loss(p):
    zero = torch.zeros(8, dtype=F64)
    loss = p.tensor(p(zero), "loss", shape=())
    if abs(float(loss.detach()) - math.log(2)) > 1e-9:
        p.fail(f"at logit 0 (D(G(z)) = ½) your loss is {float(loss.detach()):.6g}, expected −log ½ = log 2 ≈ 0.693147")
    p.passed("log 2 where the discriminator cannot tell")
    g = torch.Generator().manual_seed(31)
    logits = (3 * torch.randn(16, generator=g, dtype=F64))
    loss = p.tensor(p(logits), "loss", shape=())
    ref = R.ns_generator_loss(logits)
    if abs(float(loss.detach()) - float(ref)) > 1e-9 * max(1.0, float(ref)):
        p.fail(f"on 16 random logits your loss is {float(loss.detach()):.6g}, expected {float(ref):.6g}: check which log of D "
               "the generator minimises, and that you average over the batch")
    p.passed("the batch mean of −log D(G(z))")
    rejected = torch.full((4,), -10.0, dtype=F64, requires_grad=True)
    loss = p.tensor(p(rejected), "loss", shape=())
    if not loss.requires_grad:
        p.fail("your loss gives the logits no gradient")
    (grad,) = torch.autograd.grad(loss, rejected)
    per_sample = float(grad.abs().mean()) * len(rejected)
    if per_sample < 0.5:
        p.fail(f"where the discriminator rejects the fakes (logit −10) your loss's gradient is {per_sample:.2g} per "
               "sample: it saturates, as log(1 − D(G(z))) does; the non-saturating loss keeps it near 1 there")
    p.passed("does not saturate where D rejects the fakes")
    far = torch.tensor([-200.0, 200.0], dtype=torch.float32)
    loss = p.tensor(p(far), "loss", shape=())
    if not torch.isfinite(loss):
        p.fail(f"at logits ±200 (float32) your loss is {float(loss)}: compute it from the logit (softplus), not from "
               "log(sigmoid(·))")
    p.passed("finite for extreme logits")
