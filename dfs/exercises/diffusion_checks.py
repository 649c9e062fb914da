"""Checkers for the exercises of notebooks 01–03: the forward process, the posterior, sampling, the losses.

The references are :mod:`dfs.diffusion` and :mod:`dfs.toy` (and a few lines in :mod:`.references`); timesteps are
0-based as there (code step t is the paper's step t + 1, so ``t = 999`` is the last of T = 1000 steps).
"""
from __future__ import annotations

import math

import torch

from .. import diffusion as D
from .. import errata, toy
from . import references as R
from .core import exercise, mc_tolerance

F64 = torch.float64


def _linear() -> D.NoiseSchedule:
    return D.NoiseSchedule.from_name("linear", 1000)


def _mixed_t() -> torch.Tensor:
    return torch.tensor([0, 999, 10, 500])


def _moments(p, x: torch.Tensor, mean: float, var: float, what: str, where: str) -> None:
    """Sample mean and variance of ``x`` against ``mean``/``var`` (6 standard errors)."""
    n = x.numel()
    m, v = float(x.mean()), float(x.var())
    if abs(v - var) > mc_tolerance(n) * var + 1e-12:
        p.fail(f"your {what} has variance {v:.4g} {where}, expected ≈ {var:.4g}")
    if abs(m - mean) > 6 * math.sqrt(var / n) + 1e-9:
        p.fail(f"your {what} has mean {m:.4g} {where}, expected ≈ {mean:.4g}")


def _batch_and_dtype(p, fn_args, ref, what: str, sched) -> None:
    """Per-sample timesteps in a batch (image and square shapes), then float32: the student's output equals the
    reference's. ``fn_args(x_shape, dtype)`` returns the argument tuple (schedule first)."""
    for shape in ((4, 3, 8, 8), (4, 4)):
        args = fn_args(shape, F64)
        out = p.tensor(p(*args), what, shape=shape)
        expected = ref(*args)
        err = (out.double() - expected).flatten(1).abs().max(1).values
        if (err > 1e-9 + 1e-7 * expected.abs().max()).any():
            i = int(err.argmax())
            p.fail(f"in a batch with timesteps {_mixed_t().tolist()} and shape {shape}, your {what} for the sample "
                   f"at t = {int(_mixed_t()[i])} differs from the expected value by {float(err[i]):.3g} "
                   "(each sample must use its own t, counted from 0)")
    p.passed("a batch of different t, shapes (4, 3, 8, 8) and (4, 4)")
    args = fn_args((4, 3, 8, 8), torch.float32)
    out = p.tensor(p(*args), what, shape=(4, 3, 8, 8), dtype=torch.float32)
    p.close(out, ref(*args), what, " with float32 inputs", rtol=2e-3, atol=1e-4)
    p.passed("float32 stays float32")


# ----------------------------------------------------------------------------------------------------------
# 01: forward and reverse process
# ----------------------------------------------------------------------------------------------------------


@exercise("alpha_bar", "01", "ᾱ_t for every step", "thesis eq. (2); Ho et al. eq. (4)", R.alpha_bar)
def check_alpha_bar(p):
    for name, T in (("linear", 1000), ("cosine", 50), ("linear", 1)):
        sched = D.NoiseSchedule.from_name(name, T)
        abar = p.tensor(p(sched.betas.clone()), f"ᾱ for {T} {name} betas", shape=(T,), dtype=F64)
        b1 = float(sched.betas[0])
        if abs(float(1 - abar[0]) - b1) > 1e-12:
            p.fail(f"at t = 0 (one step of noise) your ᾱ is {float(abar[0]):.6g}, so Var(x_1 | x_0) = 1 − ᾱ = "
                   f"{float(1 - abar[0]):.4g}; one step of eq. (1) adds variance β_1 = {b1:.4g}")
        v = errata.iterated_forward_variance(sched)
        rel = ((1 - abar) - v).abs() / v
        if (rel > 1e-9).any():
            t = int(rel.argmax())
            p.fail(f"at t = {t} ({name} schedule, T = {T}) your 1 − ᾱ_t is {float(1 - abar[t]):.6g}, but iterating "
                   f"the one-step variance of eq. (1) from x_0 gives Var(x_t | x_0) = {float(v[t]):.6g}")
    p.passed("t = 0; 1 − ᾱ_t = Var(x_t | x_0) from iterating eq. (1), linear T = 1000, cosine T = 50, T = 1")
    out = p.tensor(p(_linear().betas.float()), "ᾱ", shape=(1000,), dtype=torch.float32)
    p.close(out, R.alpha_bar(_linear().betas), "ᾱ", " for float32 betas", rtol=1e-4)
    p.passed("float32")


def _check_forward_draw(p, reference, seed: int, given: str, mean_var, where: str, passed: str):
    """The checks q_sample and q_step share: output shapes, the mean and variance of x_t drawn 50 000 times from a
    fixed input 0.5 at t = 0, 499, 999 (``mean_var(sched, t)`` gives the expected pair; ``where`` names the case,
    with ``{t}``), then batching and dtype against ``reference``."""
    sched = _linear()

    def args(shape, dtype):
        g = torch.Generator().manual_seed(seed)
        return (sched, torch.randn(shape, generator=g, dtype=dtype), _mixed_t(),
                torch.randn(shape, generator=g, dtype=dtype))

    for shape in ((4, 3, 8, 8), (4, 4)):
        p.tensor(p(*args(shape, F64)), f"x_t for {given} of shape {shape}", shape=shape)
    n = 100_000
    for t in (0, 499, 999):
        x_in, eps = torch.full((n // 50, 50), 0.5, dtype=F64), torch.randn(n // 50, 50, dtype=F64)
        x_t = p.tensor(p(sched, x_in, torch.full((n // 50,), t), eps), "x_t")
        mean, var = mean_var(sched, t)
        _moments(p, x_t, mean, var, "x_t", where.format(t=t))
    p.passed(passed)
    _batch_and_dtype(p, args, reference, "x_t", sched)


@exercise("q_sample", "01", "sample x_t ~ q(x_t | x_0) in one go", "thesis eq. (2); Ho et al. eq. (4)", D.q_sample)
def check_q_sample(p):
    def mean_var(sched, t):
        abar = float(sched.alphas_cumprod[t])
        return math.sqrt(abar) * 0.5, 1 - abar
    _check_forward_draw(p, D.q_sample, 1, "x0", mean_var, "at t = {t} for x_0 = 0.5",
                        "mean and variance of q(x_t | x_0) at t = 0, 499, 999")


@exercise("q_step", "01", "one forward step x_{t−1} → x_t", "thesis eq. (1); Ho et al. eq. (2)", D.q_step)
def check_q_step(p):
    def mean_var(sched, t):
        beta = float(sched.betas[t])
        return math.sqrt(1 - beta) * 0.5, beta
    _check_forward_draw(p, D.q_step, 2, "x_prev", mean_var, "one step from a fixed x_(t−1) = 0.5 at t = {t}",
                        "mean and variance of one step at t = 0, 499, 999")


def _posterior_ref(sched, x0, x_t, t):
    mean, var, _ = D.q_posterior_mean_variance(sched, x0, x_t, t)
    return mean, var


def _pair(p, out, what):
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        p.fail(f"your {what} should return two things, (mean, variance); got {type(out).__name__}")
    return out


@exercise("posterior_mean_variance", "01", "the posterior q(x_{t−1} | x_t, x_0)",
          "thesis eq. (4); Ho et al. eq. (6)–(7)", _posterior_ref)
def check_posterior(p):
    sched = _linear()
    g = torch.Generator().manual_seed(3)
    x0, x_t = torch.randn(4, 3, 8, 8, generator=g, dtype=F64), torch.randn(4, 3, 8, 8, generator=g, dtype=F64)
    mean, var = _pair(p, p(sched, x0, x_t, torch.zeros(4, dtype=torch.long)), "posterior")
    mean = p.tensor(mean, "posterior mean", shape=x0.shape)
    var = p.tensor(torch.as_tensor(var), "posterior variance")
    if (mean - x0).abs().max() > 1e-9:
        p.fail(f"at t = 0 the posterior q(x_(t−1) | x_t, x_0) is a point mass at x_0, but your mean differs from "
               f"x_0 by {float((mean - x0).abs().max()):.3g}")
    if var.abs().max() > 1e-12:
        p.fail(f"at t = 0 the posterior is a point mass at x_0, so its variance is 0; yours is {float(var.max()):.3g}")
    p.passed("t = 0 is a point mass at x_0")
    for t in (1, 10, 500, 999):
        x0 = torch.randn(16, generator=g, dtype=F64)
        x_t = D.q_sample(sched, x0, t, torch.randn(16, generator=g, dtype=F64))
        _, _, m_bayes, v_bayes = errata.posterior_by_bayes_grid(sched, x0, x_t, t)
        mean, var = _pair(p, p(sched, x0, x_t, torch.full((16,), t)), "posterior")
        mean, var = p.tensor(mean, "posterior mean", shape=(16,)), torch.as_tensor(var).double().expand(16)
        off = ((mean.double() - m_bayes).abs() / v_bayes.sqrt())
        if off.max() > 1e-4:
            i = int(off.argmax())
            p.fail(f"at t = {t} your posterior mean is {float(mean[i]):.5g} for x_0 = {float(x0[i]):.3f}, "
                   f"x_t = {float(x_t[i]):.3f}, but Bayes' rule q(x_(t−1) | x_t, x_0) ∝ q(x_t | x_(t−1)) q(x_(t−1) | x_0), "
                   f"evaluated on a grid, gives {float(m_bayes[i]):.5g} ({float(off[i]):.3g} posterior std away)")
        if ((var - v_bayes).abs() / v_bayes).max() > 1e-4:
            p.fail(f"at t = {t} your posterior variance is {float(var[0]):.5g}; Bayes' rule on a grid gives "
                   f"{float(v_bayes[0]):.5g}")
    p.passed("mean and variance equal Bayes' rule on a grid at t = 1, 10, 500, 999")

    def ref_mean(*a):
        return _posterior_ref(*a)[0]

    def args(shape, dtype):
        g = torch.Generator().manual_seed(4)
        return sched, torch.randn(shape, generator=g, dtype=dtype), torch.randn(shape, generator=g, dtype=dtype), _mixed_t()

    saved = p.fn                  # the batch/dtype helper compares one tensor: the mean
    p.fn = lambda *a: _pair(p, saved(*a), "posterior")[0]
    try:
        _batch_and_dtype(p, args, ref_mean, "posterior mean", sched)
    finally:
        p.fn = saved


@exercise("mu_theta", "01", "the reverse-step mean from an ε-model", "Ho et al. eq. (11)", R.mu_theta)
def check_mu_theta(p):
    sched = _linear()
    g = torch.Generator().manual_seed(5)
    for t in (0, 1, 10, 999):
        x0, eps = torch.randn(8, 5, generator=g, dtype=F64), torch.randn(8, 5, generator=g, dtype=F64)
        tt = torch.full((8,), t)
        x_t = D.q_sample(sched, x0, tt, eps)
        mu = p.tensor(p(sched, x_t, tt, eps), "μ_θ", shape=x0.shape)
        mu_tilde, _, _ = D.q_posterior_mean_variance(sched, x0, x_t, tt)
        err = float((mu.double() - mu_tilde).abs().max())
        if err > 1e-8 * max(1.0, float(mu_tilde.abs().max())):
            p.fail(f"given the true noise ε of x_t, μ_θ must equal the posterior mean μ̃_t(x_t, x_0) of eq. (4); "
                   f"yours differs from it by up to {err:.3g} at t = {t}")
    p.passed("equals μ̃_t(x_t, x_0) when ε is the true noise, t = 0, 1, 10, 999")

    def args(shape, dtype):
        g = torch.Generator().manual_seed(6)
        return sched, torch.randn(shape, generator=g, dtype=dtype), _mixed_t(), torch.randn(shape, generator=g, dtype=dtype)

    _batch_and_dtype(p, args, R.mu_theta, "μ_θ", sched)


# ----------------------------------------------------------------------------------------------------------
# 02: sampling (score, DDIM, Langevin)
# ----------------------------------------------------------------------------------------------------------


def _score_ref(sched, eps, t):
    return toy.eps_to_score(eps, sched, t)


@exercise("score_from_eps", "02", "the score an ε-model implies", "Song et al. 2021 (Tweedie); thesis App. 2", _score_ref)
def check_score(p):
    sched = _linear()
    g = torch.Generator().manual_seed(7)
    for t in (0, 500, 999):
        x_t = torch.randn(64, 2, generator=g, dtype=F64)
        eps_hat = math.sqrt(1 - float(sched.alphas_cumprod[t])) * x_t
        s = p.tensor(p(sched, eps_hat, torch.full((64,), t)), "score", shape=x_t.shape)
        err = float((s.double() + x_t).abs().max())
        if err > 1e-8:
            p.fail(f"for data x_0 ~ N(0, I) every x_t is N(0, I), whose score is −x_t, and the ideal ε-model "
                   f"predicts E[ε | x_t] = √(1 − ᾱ_t) x_t; from that ε your score differs from −x_t by {err:.3g} at t = {t}")
    p.passed("the exact score −x_t of N(0, I) data at t = 0, 500, 999")

    def args(shape, dtype):
        g = torch.Generator().manual_seed(8)
        return sched, torch.randn(shape, generator=g, dtype=dtype), _mixed_t()

    _batch_and_dtype(p, args, _score_ref, "score", sched)


@exercise("ddim_step", "02", "one DDIM step t → t'", "Song et al. 2021, eq. (12)", D.ddim_step)
def check_ddim(p):
    sched = _linear()
    g = torch.Generator().manual_seed(9)
    x0, eps = torch.randn(4, 3, 8, 8, generator=g, dtype=F64), torch.randn(4, 3, 8, 8, generator=g, dtype=F64)
    x_t = D.q_sample(sched, x0, 999, eps)
    out = p.tensor(p(sched, eps, x_t, 999, 499), "x_(t')", shape=x0.shape)
    err = float((out - D.q_sample(sched, x0, 499, eps)).abs().max())
    if err > 1e-8:
        p.fail(f"with the true noise ε and η = 0, a DDIM step from t = 999 to t' = 499 must land where eq. (2) puts "
               f"the same x_0 and ε at t'; yours is off by {err:.3g}")
    out = p.tensor(p(sched, eps, x_t, 999, -1), "x_(t')", shape=x0.shape)
    if float((out - x0).abs().max()) > 1e-7:
        p.fail(f"a step to t' = −1 (the end of sampling) with the true ε must return x_0; yours is off by "
               f"{float((out - x0).abs().max()):.3g}")
    p.passed("η = 0 lands on q's point for the same ε (999 → 499, 999 → −1)")
    z = torch.randn(4, 3, 8, 8, generator=g, dtype=F64)
    x10 = D.q_sample(sched, x0, 10, eps)
    moved = p(sched, eps, x10, 10, 9, 1.0, z) - p(sched, eps, x10, 10, 9, 1.0, torch.zeros_like(z))
    sigma2 = float((moved / z).pow(2).median())
    expected = float(sched.posterior_variance[10])
    if abs(sigma2 - expected) > 1e-6 * expected:
        p.fail(f"with η = 1 between consecutive steps (t = 10 → 9) DDIM is DDPM: your step adds noise of variance "
               f"σ² = {sigma2:.5g}, expected the posterior variance β̃_t = {expected:.5g}")
    p.passed("η = 1, consecutive steps: σ² = β̃_t")
    n = 100_000
    x0 = torch.full((n // 50, 50), 0.5, dtype=F64)
    eps, z = torch.randn(x0.shape, dtype=F64), torch.randn(x0.shape, dtype=F64)
    out = p.tensor(p(sched, eps, D.q_sample(sched, x0, 800, eps), 800, 600, 0.5, z), "x_(t')", shape=x0.shape)
    abar = float(sched.alphas_cumprod[600])
    _moments(p, out, math.sqrt(abar) * 0.5, 1 - abar, "x_(t')",
             "after an η = 0.5 step 800 → 600 (DDIM keeps the marginal q(x_(t') | x_0))")
    p.passed("η = 0.5 keeps the marginal q(x_t' | x_0)")
    g = torch.Generator().manual_seed(10)
    for dtype in (F64, torch.float32):
        eps_model, x_t = torch.randn(2, 3, 4, 4, generator=g, dtype=dtype), torch.randn(2, 3, 4, 4, generator=g, dtype=dtype)
        z = torch.randn(2, 3, 4, 4, generator=g, dtype=dtype)
        out = p.tensor(p(sched, eps_model, x_t, 800, 600, 0.5, z), "x_(t')", shape=x_t.shape, dtype=dtype)
        p.close(out, D.ddim_step(sched, eps_model, x_t, 800, 600, 0.5, z), "x_(t')",
                f" for a model's ε (not the true noise), η = 0.5, 800 → 600, {str(dtype)[6:]}",
                rtol=1e-6 if dtype == F64 else 1e-4, atol=1e-9 if dtype == F64 else 1e-5)
    p.passed("a model's ε at η = 0.5; float32")


@exercise("langevin_step", "02", "one step of Langevin dynamics", "thesis App. 2; Welling & Teh 2011, eq. (4)",
          R.langevin_step)
def check_langevin(p):
    def score(x):
        return -(x - 2.0)
    x = torch.randn(4, 2, dtype=F64)
    p.tensor(p(score, x, 0.1, torch.randn(4, 2, dtype=F64)), "new x", shape=(4, 2))
    delta, steps, n = 0.2, 100, 20_000
    x = torch.randn(n // 5, 5, dtype=F64)
    for _ in range(steps):
        x = p(score, x, delta, torch.randn(x.shape, dtype=F64))
        if not isinstance(x, torch.Tensor) or x.shape != (n // 5, 5):
            p.tensor(x, "new x", shape=(n // 5, 5))
    p.tensor(x, "new x")
    var = 1 / (1 - delta / 4)
    m, v = float(x.mean()), float(x.var())
    if abs(v - var) > mc_tolerance(n) * var:
        p.fail(f"after {steps} steps of δ = {delta} towards N(2, 1) (score −(x − 2)) your chain has variance {v:.3g}; "
               f"Langevin dynamics should keep it near 1 (exactly {var:.4g} for this δ)")
    if abs(m - 2) > 6 * math.sqrt(var / n):
        p.fail(f"after {steps} steps of δ = {delta} towards N(2, 1) your chain has mean {m:.3g}, expected ≈ 2")
    p.passed(f"{steps} steps towards N(2, 1) reach mean 2 and variance 1/(1 − δ/4)")
    for dtype in (F64, torch.float32):
        x, z = torch.randn(6, 3, dtype=dtype), torch.randn(6, 3, dtype=dtype)
        out = p.tensor(p(score, x, 0.03, z), "new x", shape=x.shape, dtype=dtype)
        p.close(out, R.langevin_step(score, x, 0.03, z), "new x", f" for δ = 0.03 with the noise given ({str(dtype)[6:]})",
                rtol=1e-5, atol=1e-6)
    p.passed("one step with the noise given; float32")


# ----------------------------------------------------------------------------------------------------------
# 03: the ELBO and its losses
# ----------------------------------------------------------------------------------------------------------


@exercise("normal_kl", "03", "KL between two Gaussians", "Ho et al. eq. (5) terms; iDDPM §2", D.normal_kl)
def check_normal_kl(p):
    g = torch.Generator().manual_seed(11)
    m, lv = torch.randn(4, 3, generator=g, dtype=F64), torch.randn(4, 3, generator=g, dtype=F64)
    kl = p.tensor(p(m, lv, m, lv), "KL", shape=(4, 3))
    if float(kl.abs().max()) > 1e-10:
        i = int(kl.abs().flatten().argmax())
        p.fail(f"KL(p ‖ p) must be 0; yours is {float(kl.flatten()[i]):.4g} for μ = {float(m.flatten()[i]):.3f}, "
               f"log σ² = {float(lv.flatten()[i]):.3f}")
    p.passed("KL(p ‖ p) = 0")
    m1, lv1, m2, lv2 = 0.3, -1.0, -0.5, 0.7
    n = 400_000
    x = m1 + math.exp(lv1 / 2) * torch.randn(n, dtype=F64)
    log_ratio = D.gaussian_log_likelihood(x, m1, torch.tensor(lv1)) - D.gaussian_log_likelihood(x, m2, torch.tensor(lv2))
    est, se = float(log_ratio.mean()), float(log_ratio.std()) / math.sqrt(n)
    kl = float(p.tensor(p(*(torch.tensor([v], dtype=F64) for v in (m1, lv1, m2, lv2))), "KL", shape=(1,)))
    if abs(kl - est) > 6 * se:
        p.fail(f"your KL(N({m1}, e^{lv1}) ‖ N({m2}, e^{lv2})) is {kl:.4g}; a Monte Carlo estimate "
               f"E_p[log p(x) − log q(x)] from {n} draws gives {est:.4g} ± {se:.1g}")
    p.passed("equals a Monte Carlo estimate")
    for dtype in (F64, torch.float32):
        a = [torch.randn(4, 3, generator=g, dtype=dtype) for _ in range(3)] + [torch.randn(1, generator=g, dtype=dtype)]
        out = p.tensor(p(*a), "KL", shape=(4, 3), dtype=dtype)
        p.close(out, D.normal_kl(*a), "KL", f" for random parameters, the last one broadcast ({str(dtype)[6:]})",
                rtol=1e-5, atol=1e-6)
    p.passed("broadcasting; float32")


def _levels(dtype=F64) -> torch.Tensor:
    return torch.arange(256, dtype=dtype) / 127.5 - 1


@exercise("discretized_log_likelihood", "03", "the discretised Gaussian decoder", "Ho et al. eq. (13)",
          D.discretized_gaussian_log_likelihood)
def check_discretized(p):
    g = torch.Generator().manual_seed(12)
    x = _levels()[torch.randint(0, 256, (4, 3, 8, 8), generator=g)]
    p.tensor(p(x, torch.zeros_like(x), torch.zeros_like(x)), "log P", shape=x.shape)
    for mu, sigma in ((0.0, 0.1), (0.3, 0.01), (0.995, 0.05), (-1.0, 0.2), (0.5, 2.0)):
        lv = torch.full((256,), 2 * math.log(sigma), dtype=F64)
        logp = p.tensor(p(_levels(), torch.full((256,), mu, dtype=F64), lv), "log P", shape=(256,))
        total = float(logp.exp().sum())
        if abs(total - 1) > 1e-4:
            p.fail(f"the probabilities of the 256 pixel levels must sum to 1; yours sum to {total:.4g} for μ = {mu}, "
                   f"σ = {sigma}")
    p.passed("the 256 levels' probabilities sum to 1 (μ inside and at the edges, σ from 0.01 to 2)")
    far = p.tensor(p(torch.tensor([1.0, -1.0, 0.5], dtype=F64), torch.zeros(3, dtype=F64),
                     torch.full((3,), 2 * math.log(0.01), dtype=F64)), "log P", shape=(3,))
    if not torch.isfinite(far).all():
        p.fail(f"your log P is {far.tolist()} for pixels at 1, −1 and 0.5 when μ = 0, σ = 0.01: it must stay finite "
               "(a probability of exactly 0 makes the loss infinite)")
    p.passed("finite far from μ")
    for dtype in (F64, torch.float32):
        x = _levels(dtype)[torch.randint(0, 256, (4, 3, 8, 8), generator=g)]
        mean = (x + 0.05 * torch.randn(x.shape, generator=g, dtype=dtype)).clamp(-1.2, 1.2)
        lv = torch.empty(x.shape, dtype=dtype).uniform_(2 * math.log(0.005), 2 * math.log(0.2), generator=g)
        out = p.tensor(p(x, mean, lv), "log P", shape=x.shape, dtype=dtype)
        ref = D.discretized_gaussian_log_likelihood(x, mean, lv)
        keep = ref > -20
        p.close(out[keep], ref[keep], "log P", f" for a pixel near μ ({str(dtype)[6:]})", rtol=1e-4, atol=1e-5)
    p.passed("equals the Gaussian integrated over the pixel's bin; float32")


@exercise("learned_log_variance", "03", "the learned variance interpolation", "Nichol & Dhariwal 2021, eq. (15)",
          D.learned_log_variance)
def check_learned_variance(p):
    sched = _linear()
    t = _mixed_t()
    for v, name, target in ((0.0, "the lower end log β̃_t (clipped at t = 0, where β̃ = 0)",
                             sched.posterior_log_variance_clipped[t]),
                            (1.0, "the upper end log β_t", sched.betas[t].log()),
                            (0.5, "halfway between log β̃_t and log β_t",
                             0.5 * (sched.posterior_log_variance_clipped[t] + sched.betas[t].log()))):
        out = p.tensor(p(sched, torch.full((4, 3, 2, 2), v, dtype=F64), t), "log Σ_θ", shape=(4, 3, 2, 2))
        err = (out.double() - target[:, None, None, None]).abs().flatten(1).max(1).values
        if (err > 1e-9).any() or not torch.isfinite(out).all():
            i = int(err.nan_to_num(math.inf).argmax())
            p.fail(f"with v = {v} your log Σ_θ at t = {int(t[i])} is {float(out[i].flatten()[0]):.5g}, expected "
                   f"{name} = {float(target[i]):.5g}")
    p.passed("v = 0, 1, ½ at t = 0, 10, 500, 999")
    g = torch.Generator().manual_seed(13)
    for dtype in (F64, torch.float32):
        v = torch.rand(4, 3, 2, 2, generator=g, dtype=dtype)
        out = p.tensor(p(sched, v, t), "log Σ_θ", shape=v.shape, dtype=dtype)
        p.close(out, D.learned_log_variance(sched, v, t), "log Σ_θ", f" for a v that varies per dimension ({str(dtype)[6:]})",
                rtol=1e-5)
    p.passed("per-dimension v; float32")


def _hybrid_ref(model, sched, x0, t, noise, lam=0.001):
    return D.loss_hybrid(model, sched, x0, lam=lam, t=t, noise=noise)


@exercise("l_hybrid", "03", "L_hybrid = L_simple + λ L_vlb", "Nichol & Dhariwal 2021, eq. (16) and §3.1", _hybrid_ref)
def check_l_hybrid(p):
    sched = D.NoiseSchedule.from_name("linear", 100, scale_to_T=True)
    g = torch.Generator().manual_seed(14)
    x0 = _levels()[torch.randint(0, 256, (8, 1, 4, 4), generator=g)]
    t, noise = torch.tensor([0, 1, 5, 50, 99, 0, 30, 99]), torch.randn(8, 1, 4, 4, generator=g, dtype=F64)
    init = 0.5 * torch.randn(8, 2, 4, 4, generator=g, dtype=F64)

    def run(fn, lam):
        out = init.clone().requires_grad_(True)
        loss = fn(lambda x_t, t_: out, sched, x0, t, noise, lam)
        return loss, out

    loss0, _ = run(p, 0.0)
    loss0 = p.tensor(loss0, "loss", shape=())
    mse = float(((noise - init[:, :1]) ** 2).mean())
    if abs(float(loss0.detach()) - mse) > 1e-9:
        p.fail(f"with λ = 0 your loss is {float(loss0):.6g}; it should be L_simple, the mean squared error of ε_θ, "
               f"= {mse:.6g}")
    p.passed("λ = 0 gives L_simple")
    loss1, out = run(p, 1.0)
    loss1 = p.tensor(loss1, "loss", shape=())
    ref = D.loss_hybrid(lambda x_t, t_: init, sched, x0, lam=1.0, t=t, noise=noise, return_terms=True)
    vb, vb_ref = float(loss1.detach()) - float(loss0.detach()), float(ref["vb"])
    if abs(vb - vb_ref) > 1e-6 * abs(vb_ref):
        p.fail(f"your L_vlb part, L_hybrid(λ = 1) − L_simple, is {vb:.6g}, expected {vb_ref:.6g} (ratio "
               f"{vb / vb_ref:.4g}): L_vlb in bits per dimension, estimated at the sampled t as T · L_t")
    p.passed("L_vlb term in bits/dim")
    if not loss1.requires_grad:
        p.fail("your loss has no gradient: the model's output must flow into it")
    loss1.backward()
    ref_out = init.clone().requires_grad_(True)
    D.loss_hybrid(lambda x_t, t_: ref_out, sched, x0, lam=1.0, t=t, noise=noise).backward()
    grad, ref_grad = out.grad, ref_out.grad
    if grad is None:
        p.fail("your loss gives the model's output no gradient")
    if (grad[:, :1] - ref_grad[:, :1]).abs().max() > 1e-9:
        p.fail("the L_vlb term of your loss sends gradient into ε_θ (the first half of the model's output): in "
               "L_hybrid the mean is trained by L_simple alone and L_vlb trains only Σ_θ (iDDPM §3.1)")
    if (grad[:, 1:] - ref_grad[:, 1:]).abs().max() > 1e-9 * max(1.0, float(ref_grad.abs().max())):
        p.fail(f"the gradient your loss gives the variance output v differs from the expected one by up to "
               f"{float((grad[:, 1:] - ref_grad[:, 1:]).abs().max()):.3g}")
    p.passed("gradients: L_vlb trains only Σ_θ")


@exercise("schedule_for_snr", "03", "choose a linear schedule for a target SNR at T", "Ho et al. §4; Kingma et al. 2021",
          R.schedule_for_snr)
def check_schedule_for_snr(p):
    for T, snr, start in ((1000, 4e-5, 1e-4), (100, 1e-3, 1e-4), (10, 0.05, 1e-3), (1000, 1e-2, 1e-4)):
        betas = p.tensor(p(T, snr, start), f"schedule for T = {T}", shape=(T,))
        betas = betas.double()
        if not ((betas > 0) & (betas < 1)).all():
            p.fail(f"for T = {T}, SNR = {snr:g} your betas leave (0, 1): from {float(betas.min()):.3g} to {float(betas.max()):.3g}")
        if abs(float(betas[0]) - start) > 1e-9:
            p.fail(f"for T = {T} your β_1 is {float(betas[0]):.4g}, expected beta_start = {start:g}")
        if T > 2:
            d = betas.diff()
            if (d - d.mean()).abs().max() > 1e-6 * d.abs().mean() + 1e-15 or float(d.mean()) < 0:
                p.fail(f"for T = {T} your schedule is not linear and increasing: β_(t+1) − β_t ranges from "
                       f"{float(d.min()):.3g} to {float(d.max()):.3g}")
        abar = torch.cumprod(1 - betas, 0)[-1]
        got = float(abar / (1 - abar))
        if abs(got - snr) > 0.01 * snr:
            p.fail(f"with T = {T} your schedule ends at SNR(T) = ᾱ_T/(1 − ᾱ_T) = {got:.4g}; the target was {snr:g}")
    p.passed("linear, β_1 = beta_start, SNR(T) within 1 % of the target for T = 10, 100, 1000")
