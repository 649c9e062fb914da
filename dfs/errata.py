"""Errata of the thesis draft (``draft_ru.txt``), each entry quoted verbatim from its line and, where the slip
is in a formula, checked numerically: the draft's form fails a check that the corrected form passes.

An entry (:class:`Erratum`) holds the 1-based line of ``draft_ru.txt``, the draft's text exactly as it stands
there (``tests/test_errata.py`` finds it at that line), what is wrong, the corrected form, and optionally a check
(a function returning a :class:`Check`: the quantity compared, its value for the corrected and for the draft's
form, whether each passes, and how much the slip matters in numbers). ``ERRATA`` lists them in the order of the
draft; :func:`errata_table` runs the checks, :func:`errata_markdown` renders the result for a notebook.

The draft is found by :func:`dfs.paths.draft_path` (``DFS_SHARED``, else ``<repo>/../shared``); the checks do not need it,
:func:`verify_quotes` does. Timesteps in the code are 0-based as in :mod:`dfs.diffusion`: code step t is the
paper's step t + 1.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import diffusion as D
from . import fokker_planck as FP
from . import toy
from .paths import draft_lines
from .stats import mean_se

# ----------------------------------------------------------------------------------------------------------
# Entries and checks
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One numeric check: ``quantity`` is what is compared, ``criterion`` when a form passes.

    ``correct``/``draft`` are the measured values (``draft`` None when the draft has no evaluable form),
    ``impact`` says in numbers how much the slip matters."""

    quantity: str
    criterion: str
    correct: float
    draft: float | None
    correct_passes: bool
    draft_passes: bool | None
    impact: str


@dataclass(frozen=True)
class Erratum:
    key: str
    section: str                     # "§1.1.1", "§1.1.2", "App. 1", "App. 2", "App. 3"
    kind: str                        # "formula", "derivation", "notation", "wording"
    line: int                        # 1-based line of draft_ru.txt
    quote: str                       # verbatim from that line
    problem: str
    correction: str                  # Markdown (LaTeX in $…$) or the corrected Russian text
    check: Callable[..., Check] | None = field(default=None, compare=False)
    impact: str = ""                 # for entries without a check: why it matters


def _rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- §1.1.1 and App. 1: ᾱ_t --------------------------------------------------------------------------------


def iterated_forward_variance(sched: D.NoiseSchedule) -> torch.Tensor:
    """Var(x_t | x_0) for t = 1 … T by iterating eq. 1's moments: v_t = (1 − β_t) v_{t−1} + β_t, v_0 = 0."""
    v, out = 0.0, []
    for b in sched.betas.tolist():
        v = (1 - b) * v + b
        out.append(v)
    return torch.tensor(out, dtype=torch.float64)


def draft_alpha_bar_l84(sched: D.NoiseSchedule) -> torch.Tensor:
    """l.84 as written: ᾱ_t = ∏_{s=0}^{t} (1 − β_t) = (1 − β_t)^{t+1} (the factor does not depend on s)."""
    t_paper = torch.arange(1, sched.T + 1, dtype=torch.float64)
    return (1 - sched.betas) ** (t_paper + 1)


def draft_alpha_bar_l236(sched: D.NoiseSchedule) -> torch.Tensor:
    """l.236 as written: ᾱ_t = ∏_{s=0}^{t} α_s, read as t + 1 schedule steps (the schedule has no α_0):
    ᾱ_{t+1} of the schedule, for paper t = 1 … T − 1."""
    return sched.alphas_cumprod[1:].clone()


def check_alpha_bar_l84(sched: D.NoiseSchedule, seed: int = 0) -> Check:
    v = iterated_forward_variance(sched)
    err = lambda abar: float((((1 - abar) - v[: len(abar)]).abs() / v[: len(abar)]).max())
    draft = draft_alpha_bar_l84(sched)
    shown = [t for t in (10, 100, 500) if t <= sched.T]
    impact = "; ".join(f"t = {t}: ᾱ_t = {float(sched.alphas_cumprod[t - 1]):.3g}, draft {float(draft[t - 1]):.3g}"
                       for t in shown)
    e_c, e_d = err(sched.alphas_cumprod), err(draft)
    return Check("max_t |(1 − ᾱ_t) − Var(x_t|x_0)| / Var(x_t|x_0), the variance from iterating eq. (1)",
                 "≤ 1e-9", e_c, e_d, e_c <= 1e-9, e_d <= 1e-9, impact + " (linear schedule, T = 1000)")


def check_alpha_bar_l236(sched: D.NoiseSchedule, seed: int = 0) -> Check:
    v = iterated_forward_variance(sched)
    draft = draft_alpha_bar_l236(sched)
    rel = ((1 - draft) - v[: len(draft)]).abs() / v[: len(draft)]
    e_c = float((((1 - sched.alphas_cumprod) - v).abs() / v).max())
    impact = (f"harmless if α_0 := 1 is stated; read as t + 1 steps, 1 − ᾱ_t is off by {100 * float(rel[0]):.0f}% "
              f"at t = 1 and {100 * float(rel[min(99, len(rel) - 1)]):.2g}% at t = 100")
    return Check("max_t |(1 − ᾱ_t) − Var(x_t|x_0)| / Var(x_t|x_0)", "≤ 1e-9", e_c, float(rel.max()),
                 e_c <= 1e-9, float(rel.max()) <= 1e-9, impact)


# --- §1.1.1: posterior mean, x_0 inversion, loss weights ------------------------------------------------


def _log_normal(x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    return -0.5 * (x - mean) ** 2 / var - 0.5 * torch.log(2 * math.pi * var)


def posterior_by_bayes_grid(sched: D.NoiseSchedule, x0: torch.Tensor, x_t: torch.Tensor, t: int,
                            n: int = 20001, width: float = 12.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """q(x_{t−1} | x_t, x_0) ∝ q(x_t | x_{t−1}) q(x_{t−1} | x_0) by Bayes' rule on a grid, for 1-D x.

    ``x0`` and ``x_t`` are (K,) float64 tensors, ``t`` ≥ 1 a 0-based step (at t = 0 the posterior is a point
    mass at x_0). The likelihood is eq. 1's density, the prior eq. 2's at t − 1; the grid spans ``width``
    standard deviations of both around their centres. Returns ``grid`` (K, n), normalised ``density`` (K, n),
    and the posterior ``mean`` and ``variance`` (K,) by trapezoidal quadrature.
    """
    if not (isinstance(t, int) and 1 <= t < sched.T):
        raise ValueError(f"the grid posterior needs a 0-based step t in [1, {sched.T - 1}], got {t!r}")
    x0, x_t = torch.as_tensor(x0, dtype=torch.float64), torch.as_tensor(x_t, dtype=torch.float64)
    D._check_same_shape(x0=x0, x_t=x_t)
    if x0.dim() != 1:
        raise ValueError(f"x0 and x_t must be 1-D tensors of K scalar examples, got shape {tuple(x0.shape)}")
    beta, abar_prev = sched.betas[t], sched.alphas_cumprod[t - 1]
    prior_m, prior_v = abar_prev.sqrt() * x0, (1 - abar_prev).expand_as(x0)
    lik_m, lik_v = x_t / (1 - beta).sqrt(), (beta / (1 - beta)).expand_as(x0)  # q(x_t|x_{t−1}) as a function of x_{t−1}
    lo = torch.minimum(prior_m - width * prior_v.sqrt(), lik_m - width * lik_v.sqrt())
    hi = torch.maximum(prior_m + width * prior_v.sqrt(), lik_m + width * lik_v.sqrt())
    grid = lo[:, None] + (hi - lo)[:, None] * torch.linspace(0, 1, n, dtype=torch.float64)
    log_p = _log_normal(x_t[:, None], (1 - beta).sqrt() * grid, beta) + _log_normal(grid, prior_m[:, None], prior_v[:, None])
    p = torch.exp(log_p - log_p.max(dim=1, keepdim=True).values)
    p = p / torch.trapezoid(p, grid, dim=1)[:, None]
    mean = torch.trapezoid(p * grid, grid, dim=1)
    var = torch.trapezoid(p * (grid - mean[:, None]) ** 2, grid, dim=1)
    return grid, p, mean, var


def draft_posterior_mean(sched: D.NoiseSchedule, x0: torch.Tensor, x_t: torch.Tensor, t) -> torch.Tensor:
    """l.107 as written: μ̃_t = x_0 + √α_t (1 − ᾱ_{t−1})/(1 − ᾱ_t) · x_t (x_0 kept, its coefficient dropped)."""
    D._check_same_shape(x0=x0, x_t=x_t)
    return x0 + D.extract(sched.posterior_mean_coef2, t, x_t) * x_t


def draft_posterior_mean_l319(sched: D.NoiseSchedule, x0: torch.Tensor, x_t: torch.Tensor, t) -> torch.Tensor:
    """The mean read off l.319's last exponent as typeset, −½ A x² − B x + C (the −½ multiplies A only):
    the maximiser −B/A, where A = α_t/β_t + 1/(1 − ᾱ_{t−1}) and B = 2√α_t/β_t x_t + 2√ᾱ_{t−1}/(1 − ᾱ_{t−1}) x_0."""
    D._check_same_shape(x0=x0, x_t=x_t)
    b, a = D.extract(sched.betas, t, x_t), D.extract(sched.alphas, t, x_t)
    abar_prev = D.extract(sched.alphas_cumprod_prev, t, x_t)
    A = a / b + 1 / (1 - abar_prev)
    B = 2 * a.sqrt() / b * x_t + 2 * abar_prev.sqrt() / (1 - abar_prev) * x0
    return -B / A


def _posterior_errors(sched: D.NoiseSchedule, draft_fn, seed: int, k: int = 32):
    """max |μ − μ_Bayes| / √β̃_t over K random (x_0, x_t) at a few steps, for eq. (4) and for ``draft_fn``."""
    g, err_c, err_d = _gen(seed), 0.0, 0.0
    for t in sorted({s for s in (1, 9, 99, sched.T // 2) if 1 <= s < sched.T}):
        x0 = torch.randn(k, generator=g, dtype=torch.float64)
        x_t = D.q_sample(sched, x0, t, torch.randn(k, generator=g, dtype=torch.float64))
        _, _, mean_bayes, _ = posterior_by_bayes_grid(sched, x0, x_t, t)
        mean_c, var, _ = D.q_posterior_mean_variance(sched, x0, x_t, t)
        err_c = max(err_c, float(((mean_c - mean_bayes).abs() / var.sqrt()).max()))
        err_d = max(err_d, float(((draft_fn(sched, x0, x_t, t) - mean_bayes).abs() / var.sqrt()).max()))
    return err_c, err_d


def check_posterior_mean_l107(sched: D.NoiseSchedule, seed: int = 0) -> Check:
    err_c, err_d = _posterior_errors(sched, draft_posterior_mean, seed)
    coef = sched.posterior_mean_coef1
    shown = [t for t in (2, 10, 100) if t <= sched.T]
    impact = ("the dropped coefficient √ᾱ_{t−1}β_t/(1 − ᾱ_t) is " + " / ".join(f"{float(coef[t - 1]):.3f}" for t in shown)
              + f" at t = {' / '.join(map(str, shown))}: the draft's mean is off by up to {err_d:.3g} posterior "
              "standard deviations")
    return Check("max |μ̃_t − μ_Bayes| / √β̃_t, Bayes' rule on a 1-D grid, random (x_0, x_t) at t = 2, 10, 100, T/2",
                 "≤ 1e-6", err_c, err_d, err_c <= 1e-6, err_d <= 1e-6, impact)


def check_posterior_mean_l319(sched: D.NoiseSchedule, seed: int = 0) -> Check:
    err_c, err_d = _posterior_errors(sched, draft_posterior_mean_l319, seed)
    return Check("max |μ − μ_Bayes| / √β̃_t for the mean completed from the exponent", "≤ 1e-6", err_c, err_d,
                 err_c <= 1e-6, err_d <= 1e-6,
                 "as typeset the mean comes out as −2 μ̃_t: the sign and a factor 2 hang on the misplaced bracket; "
                 "l.323–325 then state the right β̃_t and μ̃_t")


def draft_x0_from_eps(sched: D.NoiseSchedule, x_t: torch.Tensor, t, eps: torch.Tensor) -> torch.Tensor:
    """l.111 (and l.327) as written: x_0 = (x_t − √(1 − ᾱ_t ε)) / √ᾱ_t (ε inside the root; NaN where ᾱ_t ε > 1)."""
    D._check_same_shape(x_t=x_t, eps=eps)
    abar = D.extract(sched.alphas_cumprod, t, x_t)
    return (x_t - (1 - abar * eps).sqrt()) / abar.sqrt()


def check_x0_inversion(sched: D.NoiseSchedule, seed: int = 0, n: int = 20_000) -> Check:
    g, err_c, err_d, nan_frac = _gen(seed), 0.0, 0.0, 0.0
    per_t = []
    for t in sorted({s for s in (0, 9, 99, sched.T // 2) if s < sched.T}):
        x0 = torch.randn(n, generator=g, dtype=torch.float64)
        eps = torch.randn(n, generator=g, dtype=torch.float64)
        x_t = D.q_sample(sched, x0, t, eps)
        xc, xd = D.predict_x0_from_eps(sched, x_t, t, eps), draft_x0_from_eps(sched, x_t, t, eps)
        nan = torch.isnan(xd)
        nan_frac = max(nan_frac, float(nan.double().mean()))
        err_c = max(err_c, float((xc - x0).abs().max()))
        med = float((xd[~nan] - x0[~nan]).abs().median())
        err_d = max(err_d, math.inf if nan.any() else med)
        per_t.append(f"t = {t + 1}: median |x̂_0 − x_0| = {med:.2g}")
    impact = (f"the draft's x̂_0 is not a real number for up to {100 * nan_frac:.0f}% of ε (√ of a negative number); "
              "on the rest " + "; ".join(per_t))
    return Check("max |x̂_0 − x_0| recovering x_0 from x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε with the true ε",
                 "≤ 1e-9", err_c, err_d, err_c <= 1e-9, err_d <= 1e-9, impact)


def eps_loss_weight(sched: D.NoiseSchedule, t, sigma2: torch.Tensor) -> torch.Tensor:
    """The weight of ‖ε − ε_θ‖² in L_{t−1} − C = β_t² / (2 σ_t² α_t (1 − ᾱ_t))  (Ho et al. eq. 12).

    ``t`` is a (B,) LongTensor of 0-based steps, ``sigma2`` the reverse-step variance σ_t², shape (B,).
    """
    t = D._check_t(t, sigma2, sched.T)
    b, a, abar = sched.betas[t], sched.alphas[t], sched.alphas_cumprod[t]
    return b**2 / (2 * sigma2 * a * (1 - abar))


def draft_loss_weight(sigma2: torch.Tensor) -> torch.Tensor:
    """l.123 as written, for Σ_θ = σ_t² I: 1/(2‖Σ_θ‖²₂) = 1/(2σ_t⁴), used in front of both the μ- and the ε-form."""
    return 1 / (2 * sigma2 ** 2)


def _kl_pieces(sched: D.NoiseSchedule, seed: int, k: int = 16, d: int = 8):
    """Random (x_0, ε, ε_θ) at every t with σ_t² = β_t: the mean part of the KL, ‖μ̃ − μ_θ‖², ‖ε − ε_θ‖², σ²."""
    g = _gen(seed)
    t = torch.arange(1, sched.T).repeat_interleave(k)
    x0 = torch.randn(len(t), d, generator=g, dtype=torch.float64)
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    eps_theta = eps + 0.3 * torch.randn(x0.shape, generator=g, dtype=torch.float64)
    x_t = D.q_sample(sched, x0, t, eps)
    mu_tilde, _, log_var_q = D.q_posterior_mean_variance(sched, x0, x_t, t)
    out = D.p_mean_variance(sched, eps_theta, x_t, t, variance="fixed_large")
    # KL(q ‖ p_θ) minus the same KL with μ_θ = μ̃: exactly the part of L_{t−1} that depends on the mean
    kl = D.normal_kl(mu_tilde, log_var_q, out["mean"], out["log_variance"]).sum(1)
    kl0 = D.normal_kl(mu_tilde, log_var_q, mu_tilde, out["log_variance"]).sum(1)
    return t, kl - kl0, ((mu_tilde - out["mean"]) ** 2).sum(1), ((eps - eps_theta) ** 2).sum(1), out["variance"].flatten()


def check_loss_weight_mu(sched: D.NoiseSchedule, seed: int = 0) -> Check:
    _, kl_mean, sq_mu, _, sigma2 = _kl_pieces(sched, seed)
    err_c = float((sq_mu / (2 * sigma2) / kl_mean - 1).abs().max())
    err_d = float((draft_loss_weight(sigma2) * sq_mu / kl_mean - 1).abs().max())
    b = sched.betas
    impact = (f"for Σ_θ = σ_t² I, ‖Σ_θ‖²₂ = σ_t⁴: the draft's weight is 1/σ_t² times too large, with σ_t² = β_t "
              f"that is ×{1 / float(b[0]):.3g} at t = 1 and ×{1 / float(b[-1]):.3g} at t = T")
    return Check("max relative error of weight · ‖μ̃_t − μ_θ‖² against the mean part of KL(q(x_{t−1}|x_t,x_0) ‖ p_θ), "
                 "σ_t² = β_t, every t ≥ 2", "≤ 1e-8", err_c, err_d, err_c <= 1e-8, err_d <= 1e-8, impact)


def check_loss_weight_eps(sched: D.NoiseSchedule, seed: int = 0) -> Check:
    t, kl_mean, _, sq_eps, sigma2 = _kl_pieces(sched, seed)
    err_c = float((eps_loss_weight(sched, t, sigma2) * sq_eps / kl_mean - 1).abs().max())
    err_d = float((draft_loss_weight(sigma2) * sq_eps / kl_mean - 1).abs().max())
    all_t = torch.arange(sched.T)
    ratio = draft_loss_weight(sched.betas) / eps_loss_weight(sched, all_t, sched.betas)
    impact = ("the draft's weight over the correct one, α_t(1 − ᾱ_t)/(σ_t² β_t²) with σ_t² = β_t: "
              + ", ".join(f"{float(ratio[t - 1]):.3g} at t = {t}" for t in (1, 10, 100, sched.T) if t <= sched.T)
              + "; not a constant, so the draft's L_t is not L_simple up to a factor either")
    return Check("max relative error of weight · ‖ε − ε_θ‖² against the mean part of KL(q ‖ p_θ), σ_t² = β_t, every t ≥ 2",
                 "≤ 1e-8", err_c, err_d, err_c <= 1e-8, err_d <= 1e-8, impact)


def check_reverse_gaussian(sched: D.NoiseSchedule, seed: int = 0) -> Check:
    """q(x_{t−1} | x_t) for two-mode 1-D data on a grid vs the Gaussian with its mean and variance, at three β."""
    grid = torch.linspace(-6, 6, 24001, dtype=torch.float64)
    data = toy.GaussianMixture([[-1.0], [1.0]], [0.2, 0.2], [0.5, 0.5])
    kls = {}
    for beta in (0.5, 0.05, float(sched.betas.max())):
        prior = data.noised(0.5).log_prob(grid[:, None]).double()                 # q_{t−1} with ᾱ_{t−1} = 0.5
        x_t = 0.5 * math.sqrt(1 - beta)                                             # between the two modes
        logp = prior + _log_normal(torch.tensor(x_t, dtype=torch.float64), math.sqrt(1 - beta) * grid, torch.tensor(beta))
        p = torch.exp(logp - logp.max())
        p = p / torch.trapezoid(p, grid)
        m = torch.trapezoid(p * grid, grid)
        v = torch.trapezoid(p * (grid - m) ** 2, grid)
        gauss = torch.exp(_log_normal(grid, m, v))
        kls[beta] = float(torch.trapezoid(p * (torch.log(p.clamp(min=1e-300)) - torch.log(gauss.clamp(min=1e-300))), grid))
    vals = list(kls.values())
    decreasing = vals[0] > vals[1] > vals[2]
    impact = ("KL(q(x_{t−1}|x_t) ‖ its moment-matched Gaussian) = "
              + ", ".join(f"{kl:.2g} nats at β = {b:.3g}" for b, kl in kls.items())
              + " (two-mode data, ᾱ_{t−1} = 0.5, x_t between the modes): small for DDPM's β, but not zero")
    return Check("KL of the true reverse conditional from its moment-matched Gaussian at β = 0.5, 0.05 and the "
                 "schedule's largest β_t (the value shown; one measurement judged against each claim)",
                 "corrected ('approximately Gaussian, → exact as β → 0'): KL decreases with β; "
                 "draft ('guaranteed Gaussian'): KL ≤ 1e-12", vals[-1], vals[-1],
                 decreasing, vals[-1] <= 1e-12, impact)


# --- App. 1: merging two Gaussian noises --------------------------------------------------------------------


def check_merged_noise(sched: D.NoiseSchedule, seed: int = 0, n: int = 200_000) -> Check:
    """Var(√(1 − α_t) ε₁ + √(α_t (1 − α_{t−1})) ε₂) against 1 − α_t α_{t−1} (right) and √(1 − α_t α_{t−1}) (l.243)."""
    g, err_c, err_d, impact = _gen(seed), 0.0, 0.0, []
    for t in sorted({s for s in (1, 9, 99, sched.T - 1) if 1 <= s < sched.T}):
        a, a_prev = float(sched.alphas[t]), float(sched.alphas[t - 1])
        e1, e2 = torch.randn(n, generator=g, dtype=torch.float64), torch.randn(n, generator=g, dtype=torch.float64)
        var = float((math.sqrt(1 - a) * e1 + math.sqrt(a * (1 - a_prev)) * e2).var())
        right = 1 - a * a_prev
        err_c, err_d = max(err_c, _rel(var, right)), max(err_d, _rel(var, math.sqrt(right)))
        impact.append(f"t = {t + 1}: variance {right:.3g}, draft's {math.sqrt(right):.3g}")
    tol = 6 * math.sqrt(2 / (n - 1))
    return Check("max relative error of the sample variance of the merged noise against the stated variance",
                 f"≤ {tol:.2g} (six standard errors)", err_c, err_d, err_c <= tol, err_d <= tol,
                 "; ".join(impact))


def check_sum_not_mixture(sched: D.NoiseSchedule, seed: int = 0, n: int = 200_000) -> Check:
    """The merged noise is a *sum* of independent Gaussians (variance a + b), not a mixture (variance ≤ max(a, b))."""
    g = _gen(seed)
    t = min(9, sched.T - 1)
    a, b = 1 - float(sched.alphas[t]), float(sched.alphas[t]) * (1 - float(sched.alphas[t - 1]))
    e1, e2 = torch.randn(n, generator=g, dtype=torch.float64), torch.randn(n, generator=g, dtype=torch.float64)
    pick = torch.rand(n, generator=g, dtype=torch.float64) < 0.5
    summed = math.sqrt(a) * e1 + math.sqrt(b) * e2
    mixture = torch.where(pick, math.sqrt(a) * e1, math.sqrt(b) * e2)
    right = a + b
    err_c, err_d = _rel(float(summed.var()), right), _rel(float(mixture.var()), right)
    tol = 6 * math.sqrt(2 / (n - 1))
    return Check(f"relative error of the sample variance against 1 − α_t α_{{t−1}} at t = {t + 1}",
                 f"≤ {tol:.2g}", err_c, err_d, err_c <= tol, err_d <= tol,
                 "any mixture w N(0, a) + (1 − w) N(0, b) has variance ≤ max(a, b) < a + b; the equal-weight one "
                 f"has {float(mixture.var()) / right:.2f} of the variance eq. (2) needs")


def check_alpha_bar_decreases(sched: D.NoiseSchedule, seed: int = 0, draws: int = 200) -> Check:
    """ᾱ_t = ᾱ_{t−1}(1 − β_t) decreases for any β_t ∈ (0, 1): random non-monotone schedules, all decreasing."""
    g = _gen(seed)
    betas = 1e-4 + (0.05 - 1e-4) * torch.rand(draws, sched.T, generator=g, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 1)
    decreasing = bool((abar[:, 1:] < abar[:, :-1]).all())
    monotone = float(((betas[:, 1:] > betas[:, :-1]).all(1)).double().mean())
    reversed_abar = torch.cumprod(1 - sched.betas.flip(0), 0)
    return Check(f"over {draws} random β schedules in (1e-4, 0.05): the share whose ᾱ_t fails to decrease (the corrected "
                 "claim predicts 0) and the share that are not increasing although ᾱ_t decreases (the draft's «т.е.» "
                 "predicts 0)", "= 0", 0.0 if decreasing else 1.0, 1.0 - monotone,
                 decreasing, monotone == 1.0,
                 f"{100 * (1 - monotone):.0f}% of these schedules are not increasing yet every ᾱ_t decreases; the "
                 f"linear schedule reversed (β decreasing) gives ᾱ_T = {float(reversed_abar[-1]):.2g}, as small as "
                 f"forwards ({float(sched.alphas_cumprod[-1]):.2g})")


# --- App. 2: Fokker–Planck ---------------------------------------------------------------------------------


def check_taylor_sign(sched: D.NoiseSchedule | None = None, seed: int = 0) -> Check:
    """l.271: f(x) = f(x̂) ∓ f'(x̂) f(x) dt + o(dt) with x̂ = x + f(x) dt; the remainder over dt must vanish."""
    f, df = (lambda x: math.sin(2 * x) + 0.5 * x * x), (lambda x: 2 * math.cos(2 * x) + x)
    x, dt = 0.7, 1e-5
    xh = x + f(x) * dt
    right = abs(f(x) - (f(xh) - df(xh) * f(x) * dt)) / dt
    draft = abs(f(x) - (f(xh) + df(xh) * f(x) * dt)) / dt
    return Check(f"|f(x) − expansion| / dt at dt = {dt:g}, f = sin 2x + x²/2, x = {x} (o(dt) means → 0)",
                 "≤ 1e-3", right, draft, right <= 1e-3, draft <= 1e-3,
                 f"the displayed identity is false (remainder/dt → 2 f' f = {2 * df(x) * f(x):.3g} here), but the "
                 "term is multiplied by dt in l.275 and drops out, so the final equation is unaffected")


def check_jacobian_dt(sched: D.NoiseSchedule | None = None, seed: int = 0) -> Check:
    """l.275, second row: the Jacobian factor must be (1 + ∂f/∂x dt)^{-1}; the draft drops dt.

    Exact reference: x̂ = (1 − λ dt) x pushes N(0, 1) to N(0, (1 − λ dt)²); compare the density at x̂ = 0.3."""
    lam, dt, xh = 0.5, 1e-3, 0.3
    exact = float(FP.normal_pdf(np.array(xh), 0.0, (1 - lam * dt) ** 2))
    shifted = float(FP.normal_pdf(np.array(xh + lam * xh * dt), 0.0, 1.0))     # p(x̂ − f(x̂) dt) with f = −λx
    right, draft = shifted / (1 - lam * dt), shifted / (1 - lam)
    return Check(f"relative error of the one-step density p(x̂ | t + dt) for f = −{lam}x, dt = {dt:g}",
                 "≤ 1e-4 (O(dt²))", _rel(right, exact), _rel(draft, exact),
                 _rel(right, exact) <= 1e-4, _rel(draft, exact) <= 1e-4,
                 f"without dt the factor is 1/(1 + f') = {1 / (1 - lam):.3g} instead of 1 + O(dt): the next row's "
                 "expansion (1 − f' dt + o(dt)) only follows with dt restored")


def _langevin_setup(n: int = 200):
    grid = FP.Grid(-5.0, 5.0, n)
    target = FP.Mixture1D((-0.8, 1.0), (0.5, 0.6), (0.7, 0.3))
    return grid, target, FP.normal_pdf(grid.x, 2.0, 0.25)


def check_langevin_target(sched: D.NoiseSchedule | None = None, seed: int = 0) -> Check:
    """Does the equation single out p*? ∫|∂p/∂t| dx at a density p_0 ≠ p*, for the fixed target and the draft."""
    grid, target, p0 = _langevin_setup()
    fixed = FP.rhs_norm(FP.fixed_target_rhs(p0, grid, target.score), grid)
    at_target = FP.rhs_norm(FP.fixed_target_rhs(target.pdf(grid.x), grid, target.score), grid)
    draft = FP.rhs_norm(FP.draft_langevin_rhs(p0, grid), grid)
    tol = 20 * grid.h ** 2
    return Check("∫|∂p/∂t| dx at p_0 = N(2, 0.5²) ≠ p* (finite volumes, h = 0.05); a statement about p* must "
                 "leave p_0 non-stationary", f"> {tol:.2g} (the O(h²) discretisation level)", fixed, draft,
                 fixed > tol and at_target <= tol, draft > tol,
                 f"fixed p*: ∫|∂p/∂t| = {at_target:.1e} at p*, {fixed:.3g} at p_0, so p* and only p* is stationary; "
                 f"draft: {draft:.1e} at p_0, i.e. zero (to O(h²)) for every density, so it says nothing about a target")


# --- App. 3: the bound ---------------------------------------------------------------------------------------


def _toy_bound(seed: int, T: int = 10, n: int = 4000):
    gmm = toy.default_gmm()
    x = gmm.sample(n, _gen(seed)).double()
    s = D.NoiseSchedule.from_name("cosine", T)
    out = D.vlb_terms(toy.exact_eps_model(gmm, s), s, x, "fixed_small", decoder="gaussian", generator=_gen(seed + 1))
    return gmm, x, s, out


def check_elbo_direction(sched: D.NoiseSchedule | None = None, seed: int = 0) -> Check:
    gmm, x, _, out = _toy_bound(seed)
    total = out["total"]
    nll = -gmm.log_prob(x).double()
    gap = total - nll                                # L_VLB − (−log p) per sample, ≥ 0 in expectation
    m, se = mean_se(gap.detach().cpu())              # mean and its standard error s/√n
    mean_logp = float(-nll.mean())
    draft_gap = float(total.mean()) - mean_logp      # "lower bound on log p" would need L_VLB ≤ E log p
    return Check("E[L_VLB] − E[−log p(x_0)] (upper bound on the NLL ⇒ ≥ 0) and E[L_VLB] − E[log p(x_0)] "
                 "(a lower bound on log p ⇒ ≤ 0); 2-D mixture, exact ε*, T = 10, σ_t² = β̃_t",
                 "corrected: gap ≥ −2 s.e.; draft: L_VLB ≤ E log p", m, draft_gap, m >= -2 * se, draft_gap <= 0,
                 f"E[L_VLB] = {float(total.mean()):.3f} nats ≥ E[−log p] = {float(nll.mean()):.3f} (gap {m:.3f} ± {se:.3f}); "
                 f"E[log p] = {mean_logp:.3f}: L_VLB bounds −log p from above, −L_VLB is the ELBO")


def telescoping_error(sched: D.NoiseSchedule, seed: int = 0, n: int = 64, upper: int | None = None) -> float:
    """max over sampled chains of |Σ_{t=2}^{T} log q(x_t|x_0)/q(x_{t−1}|x_0) − log q(x_u|x_0)/q(x_1|x_0)|,
    u = T (right) or the draft's free index read as ``upper``."""
    g = _gen(seed)
    x0 = torch.randn(n, generator=g, dtype=torch.float64)
    x, logq = x0, []
    for t in range(sched.T):
        x = D.q_step(sched, x, t, torch.randn(n, generator=g, dtype=torch.float64))
        m, v = D.q_mean_variance(sched, x0, t)
        logq.append(_log_normal(x, m, v))
    logq = torch.stack(logq)                           # row t: log q(x_{t+1} | x_0) in paper steps
    telescoped = (logq[1:] - logq[:-1]).sum(0)
    u = sched.T if upper is None else upper
    return float((telescoped - (logq[u - 1] - logq[0])).abs().max())


def check_telescoping(sched: D.NoiseSchedule, seed: int = 0) -> Check:
    s = D.NoiseSchedule.from_name("linear", 50, scale_to_T=True)
    right, draft = telescoping_error(s, seed), telescoping_error(s, seed, upper=s.T // 2)
    return Check("max |Σ_{t=2}^T log q(x_t|x_0)/q(x_{t−1}|x_0) − log q(x_u|x_0)/q(x_1|x_0)| over 64 sampled chains, "
                 "T = 50; u = T (corrected) or the draft's t read as T/2", "≤ 1e-9", right, draft,
                 right <= 1e-9, draft <= 1e-9,
                 f"with t in place of T the identity fails by up to {draft:.3g} nats; with T it is exact, and the "
                 "term log q(x_T|x_0)/q(x_1|x_0) is what turns the first sum into L_T")


def check_decomposition(sched: D.NoiseSchedule | None = None, seed: int = 0, n: int = 4000) -> Check:
    """L_T + Σ L_{t−1} + L_0 (closed-form KLs) against a Monte Carlo estimate of E_q[log q(x_{1:T}|x_0)/p_θ(x_{0:T})]."""
    gmm, x, s, out = _toy_bound(seed, n=n)
    eps_model = toy.exact_eps_model(gmm, s)
    g = _gen(seed + 2)
    chain, log_ratio = x, torch.zeros(len(x), dtype=torch.float64)
    xs = [x]
    for t in range(s.T):                                 # forward chain, accumulate log q(x_t | x_{t−1})
        mean, var = D.extract(s.alphas, t, chain).sqrt() * chain, D.extract(s.betas, t, chain)
        chain = D.q_step(s, chain, t, torch.randn(chain.shape, generator=g, dtype=torch.float64))
        log_ratio += _log_normal(chain, mean, var).sum(1)
        xs.append(chain)
    log_ratio -= _log_normal(xs[-1], torch.zeros(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)).sum(1)
    for t in range(s.T):                                 # reverse model: − log p_θ(x_{t} | x_{t+1}) in paper steps
        tt = torch.full((len(x),), t)
        p = D.p_mean_variance(s, eps_model(xs[t + 1], tt), xs[t + 1], tt, "fixed_small")
        log_ratio -= _log_normal(xs[t], p["mean"], p["log_variance"].exp()).sum(1)   # clipped at t = 1, as in L_0
    diff = float(out["total"].mean() - log_ratio.mean())
    se = float(torch.sqrt(out["total"].var() / n + log_ratio.var() / n))
    return Check("(L_T + Σ L_{t−1} + L_0) − Monte Carlo E_q[log q(x_{1:T}|x_0)/p_θ(x_{0:T})], in standard errors; "
                 "2-D mixture, exact ε*, T = 10", "|difference| ≤ 3 s.e.", abs(diff) / se, None,
                 abs(diff) <= 3 * se, None,
                 f"both sides agree ({float(out['total'].mean()):.3f} vs {float(log_ratio.mean()):.3f} nats); "
                 "the draft's derivation stops before this form, so it has no final line to evaluate")


# ----------------------------------------------------------------------------------------------------------
# The entries, in the order of the draft
# ----------------------------------------------------------------------------------------------------------

ERRATA: list[Erratum] = [
    Erratum("wgan-mechanism", "§1.1.1", "wording", 55,
            "мотивируя дискриминатор выявлять повторяющие выходы, в которых стабилизировался генератор",
            "WGAN does not detect repeated outputs (that is minibatch discrimination, Salimans et al. 2016). Its critic "
            "estimates the Wasserstein-1 distance (Kantorovich–Rubinstein duality, a Lipschitz critic enforced by weight "
            "clipping), which gives the generator useful gradients even when the two distributions do not overlap.",
            "«…авторы заменяют дивергенцию Йенсена–Шеннона расстоянием Вассерштейна, которое оценивает критик с "
            "ограниченной константой Липшица; оно даёт генератору информативный градиент даже при непересекающихся "
            "носителях распределений»",
            impact="a reader would learn the wrong mechanism of reference [1]"),
    Erratum("ugan-name", "§1.1.1", "wording", 55, "UGAN [13]",
            "Reference [13] is *Unrolled Generative Adversarial Networks* (Metz et al. 2017), usually called "
            "Unrolled GAN; \"UGAN\" is not its name (and is used by other papers). The description that follows "
            "(the generator's loss through future versions of the discriminator) is right.",
            "«Unrolled GAN [13]»", impact="a reader searching for \"UGAN\" finds other papers"),
    Erratum("alpha-bar-l84", "§1.1.1", "formula", 84, r"\overline{\alpha_t} = \prod_{s=0}^t (1-\beta_t)",
            "The factor carries the index t instead of s, so the product is (1 − β_t)^{t+1}, not ᾱ_t; the range also "
            "starts at s = 0 although β_s exists for s ≥ 1 only.",
            r"$\bar\alpha_t = \prod_{s=1}^{t} (1-\beta_s)$", check_alpha_bar_l84),
    Erratum("x-T-superscript", "§1.1.1", "notation", 84, r"x_T \sim \mathcal{N}(x^T|0,I)",
            "x^T (a superscript, elsewhere the sample index x^i) where x_T is meant.",
            r"$x_T \sim \mathcal N(x_T \mid 0, I)$", impact="notation only"),
    Erratum("reverse-gaussian", "§1.1.1", "wording", 88,
            "В условиях выбора малых β_t можно гарантировать, что $q(x_{t-1}|x_t)$ также гауссово распределение",
            "q(x_{t−1}|x_t) is only approximately Gaussian for small β_t (exactly Gaussian only for Gaussian data); "
            "it becomes Gaussian in the limit β_t → 0 (Feller 1949; Sohl-Dickstein et al. 2015). Nothing is guaranteed "
            "at a finite β_t.",
            "«При малых β_t распределение $q(x_{t-1}|x_t)$ близко к гауссовому (и становится гауссовым в пределе "
            "β_t → 0)»", check_reverse_gaussian),
    Erratum("comma-for-bar", "§1.1.1", "notation", 100, r"\mathcal{N}(x_{t-1}, \tilde{\mu}(x_t, x_0), \tilde{\beta}_t I)",
            "A comma where eq. (1)–(3) use \"|\" (or \";\"), so the density reads as a function of three arguments; "
            "μ̃ also lacks its subscript t (l.107 has it). The same comma for \"|\" appears in p(x̂,t) at l.275 and l.285.",
            r"$q(x_{t-1}\mid x_t, x_0) = \mathcal N\big(x_{t-1}\mid\tilde\mu_t(x_t, x_0),\ \tilde\beta_t I\big)$",
            impact="notation only"),
    Erratum("posterior-mean", "§1.1.1", "formula", 107,
            r"\tilde{\mu}_t(x_t, x_0) = x_0 + \frac{\sqrt{\alpha_t}(1 - \overline{\alpha}_{t-1})}{1 - \overline{\alpha}_t} x_t",
            "x_0 is kept but its coefficient √ᾱ_{t−1}β_t/(1 − ᾱ_t) is dropped. App. 3 (l.325) derives the right form, "
            "and l.115 follows only from the right form.",
            r"$\tilde\mu_t(x_t, x_0) = \frac{\sqrt{\bar\alpha_{t-1}}\,\beta_t}{1-\bar\alpha_t}\,x_0 + "
            r"\frac{\sqrt{\alpha_t}(1-\bar\alpha_{t-1})}{1-\bar\alpha_t}\,x_t$", check_posterior_mean_l107),
    Erratum("x0-inversion", "§1.1.1", "formula", 111,
            r"x_0 = \frac{1}{\sqrt{\overline{\alpha}_t}} (x_t - \sqrt{1 - \overline{\alpha}_t \epsilon})",
            "ε is inside the square root. Eq. (2) at l.81 is right; only this inversion is wrong.",
            r"$x_0 = \frac{1}{\sqrt{\bar\alpha_t}}\big(x_t - \sqrt{1-\bar\alpha_t}\,\epsilon\big)$", check_x0_inversion),
    Erratum("mu-theta-tilde", "§1.1.1", "notation", 119, r"\tilde{\mu}_{\theta}(x_t, t) = \frac{1}{\sqrt{\alpha_t}}",
            "The tilde marks the posterior mean μ̃_t of eq. (4); the model's mean is μ_θ (Ho et al. eq. 11). "
            "Same at l.123.", r"$\mu_\theta(x_t, t) = \frac{1}{\sqrt{\alpha_t}}\Big(x_t - "
            r"\frac{\beta_t}{\sqrt{1-\bar\alpha_t}}\,\epsilon_\theta(x_t, t)\Big)$", impact="notation only"),
    Erratum("loss-weight-mu", "§1.1.1", "formula", 123,
            r"\left[\frac{1}{2||\Sigma_{\theta}(x_{t},t)||_{2}^{2}} ||\tilde{\mu}_{t} - \tilde{\mu}_{\theta}(x_{t},t)||_{2}^{2} \right]",
            "For Σ_θ = σ_t² I the weight is 1/(2σ_t²) (Ho et al. eq. 8); ‖Σ_θ‖²₂ = σ_t⁴. The term is L_{t−1} "
            "(it compares x_{t−1} distributions), not L_t.",
            r"$L_{t-1} = \mathbb E_{q}\Big[\frac{1}{2\sigma_t^2}\lVert\tilde\mu_t(x_t, x_0) - \mu_\theta(x_t, t)\rVert^2\Big] + C$",
            check_loss_weight_mu),
    Erratum("loss-weight-eps", "§1.1.1", "formula", 123,
            r"= \left[\frac{1}{2||\Sigma_{\theta}(x_{t},t)||_{2}^{2}} ||\epsilon_{t} - \epsilon_{\theta}(",
            "Substituting μ̃_t and μ_θ multiplies the squared error by β_t²/(α_t(1 − ᾱ_t)); the draft keeps the μ-form's "
            "weight. The expectation E_{x_0, ε} is also dropped on the right.",
            r"$L_{t-1} - C = \mathbb E_{x_0,\epsilon}\Big[\frac{\beta_t^2}{2\sigma_t^2\alpha_t(1-\bar\alpha_t)}"
            r"\lVert\epsilon - \epsilon_\theta(\sqrt{\bar\alpha_t}x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon, t)\rVert^2\Big]$"
            " (Ho et al. eq. 12)", check_loss_weight_eps),
    Erratum("vq-vae-ldm", "§1.1.2", "wording", 138, "пространстве латентных эмбеддингов, полученных помощью автоэнкодера (VQ-VAE)",
            "LDM's autoencoder is not a VQ-VAE: it is trained with a perceptual and a patch-adversarial loss and "
            "regularised either by a KL term or by a VQ layer (as l.145–150 say). Two words are also missing "
            "(«не в пространстве пикселей, а в пространстве…, полученных с помощью…»).",
            "«…не в пространстве пикселей, а в пространстве латентных представлений, полученных с помощью "
            "автоэнкодера (с KL- или VQ-регуляризацией)»", impact="contradicts the draft's own l.145–150"),
    Erratum("phi-z-i", "§1.1.2", "notation", 154, r"\varphi_i(z_i) \in \mathbb{R}^{N \times d_\epsilon^i}",
            "LDM §3.3 writes φ_i(z_t): z_t is the noisy latent at step t, i indexes the U-Net layer. (The draft's "
            "shapes of W_Q and W_V are the dimensionally consistent ones; the LDM paper itself swaps them.)",
            r"$Q = W_Q^{(i)}\cdot\varphi_i(z_t)$, $\varphi_i(z_t) \in \mathbb R^{N\times d_\epsilon^i}$",
            impact="notation only"),
    Erratum("alpha-bar-l236", "App. 1", "formula", 236, r"\overline{\alpha}_t=\prod_{s=0}^t\alpha_s",
            "The product starts at s = 0, but α_s is defined for s ≥ 1 only: either one factor too many or an "
            "undefined α_0.", r"$\bar\alpha_t = \prod_{s=1}^{t}\alpha_s$", check_alpha_bar_l236),
    Erratum("eps-bar-notation", "App. 1", "notation", 238, r"\sqrt{1 - \alpha_{t} \alpha_{t-1}} \epsilon_{t-2}",
            "After merging two noises the result is a new variable, ε̄_{t−2} (l.241 calls it so), not ε_{t−2}; "
            "likewise the last ε_0 at l.239 is a merged ε̄, not the noise of step 1.",
            r"$x_t = \sqrt{\alpha_t\alpha_{t-1}}\,x_{t-2} + \sqrt{1-\alpha_t\alpha_{t-1}}\,\bar\epsilon_{t-2} = \dots = "
            r"\sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\bar\epsilon$", impact="notation only"),
    Erratum("sum-not-mixture", "App. 1", "wording", 241, r"$\overline{\epsilon}_{t-2}$ смесь нормальных распределений",
            "ε̄_{t−2} is a sum of two independent Gaussian variables (a convolution of their densities), which is "
            "again Gaussian with the variances added; a mixture of Gaussians is a different object and is not Gaussian.",
            "«$\\bar\\epsilon_{t-2}$ — сумма независимых нормальных случайных величин, поэтому снова нормальная "
            "величина с суммой дисперсий»", check_sum_not_mixture),
    Erratum("merged-noise-variance", "App. 1", "formula", 243,
            r"\mathcal{N}(0, \sqrt{(1 - \alpha_t) + \alpha_t (1 - \alpha_{t-1})}I) = \mathcal{N}(0, \sqrt{1 - \alpha_t \alpha_{t-1}})",
            "The second argument of N(·,·) is the variance (as in eq. 1–2), but a standard deviation is written; "
            "the I is also lost on the right.",
            r"$\bar\epsilon_{t-2} \sim \mathcal N\big(0,\ [(1-\alpha_t) + \alpha_t(1-\alpha_{t-1})]\,I\big) = "
            r"\mathcal N\big(0,\ (1-\alpha_t\alpha_{t-1})\,I\big)$", check_merged_noise),
    Erratum("monotone-beta", "App. 1", "wording", 245, "Обычно по мере зашумления используется больший шаг зашумлений, т.е.:",
            "«т.е.» (l.245–249) presents increasing β_t as the reason ᾱ_t decreases. But ᾱ_t = ᾱ_{t−1}(1 − β_t) < ᾱ_{t−1} "
            "for any β_t ∈ (0, 1); increasing β_t is a design choice of the schedule, not the cause.",
            "«Поскольку $\\bar\\alpha_t = \\bar\\alpha_{t-1}(1-\\beta_t)$ и $\\beta_t\\in(0,1)$, при любом расписании "
            "$\\bar\\alpha_1 > \\bar\\alpha_2 > \\ldots > \\bar\\alpha_T$. Обычно по мере зашумления шаг увеличивают: "
            "$\\beta_1 < \\beta_2 < \\ldots < \\beta_T$.»", check_alpha_bar_decreases),
    Erratum("taylor-sign", "App. 2", "derivation", 271,
            r"f(x,t) = f(\hat{x},t) + \frac{\partial f(\hat{x},t)}{\partial x} f(x,t) dt + o(dt).",
            "Since x = x̂ − f(x,t) dt, the first-order term has a minus sign.",
            r"$f(x,t) = f(\hat x,t) - \frac{\partial f(\hat x,t)}{\partial x}\,f(x,t)\,dt + o(dt)$", check_taylor_sign),
    Erratum("jacobian-dt", "App. 2", "derivation", 275,
            r"p(\hat{x} - f(\hat{x},t) dt + o(dt)|t) \cdot \left(1 + \frac{\partial f(x,t)}{\partial x} \right)^{-1} = ",
            "The dt of the Jacobian (present in the row above) is lost in the second row.",
            r"$p(\hat x - f(\hat x,t)\,dt + o(dt)\mid t)\cdot\Big(1 + \frac{\partial f(x,t)}{\partial x}\,dt\Big)^{-1}$",
            check_jacobian_dt),
    Erratum("o-of-t", "App. 2", "notation", 275, r"\frac{\partial f(x,t)}{\partial x} p(\hat{x}|t) dt + o(t) =",
            "o(t) where o(dt) is meant (twice in l.275): as dt → 0 with t fixed, o(t) is not small.",
            r"$\ldots - \frac{\partial f(x,t)}{\partial x}\,p(\hat x\mid t)\,dt + o(dt)$", impact="notation only"),
    Erratum("langevin-evolving-density", "App. 2", "derivation", 307,
            r"\log p(x|t).$ Запишем эволюцию распределения для этого СЛУ:",
            "The drift ½∂ₓ log p(x|t) uses the evolving density itself; then −∂ₓ(½ p ∂ₓ log p) + ½∂ₓ²p = 0 for every "
            "p, so l.309 holds for any density and shows nothing about a target. The statement is about a fixed "
            "target p*: with f = ½∂ₓ log p*(x), p* is stationary (and p(·,t) → p* from other starts). «СЛУ» is a typo "
            "for «СДУ».",
            r"$dx = \tfrac12\,\partial_x\log p^*(x)\,dt + dW$: $\ \partial_t p = -\partial_x\big(\tfrac12 p\,\partial_x"
            r"\log p^*\big) + \tfrac12\partial_x^2 p$, which vanishes at $p = p^*$: $p^*$ is stationary",
            check_langevin_target),
    Erratum("langevin-conclusion", "App. 2", "wording", 311,
            "динамика Ланжевена как стохастическая реализация уравнения Фоккера-Планка сохраняет распределение",
            "What is shown (once the drift uses a fixed p*) is that Langevin dynamics leaves its target p* invariant; "
            "\"preserves the distribution\" without naming p* is the tautology of the previous entry.",
            "«…динамика Ланжевена с дрейфом $\\tfrac12\\partial_x\\log p^*(x)$ оставляет целевое распределение "
            "$p^*$ стационарным»", impact="the appendix's conclusion as stated is empty"),
    Erratum("bracket-l319", "App. 3", "derivation", 319,
            r"x_{t-1}^2 - (\frac{2\sqrt{\alpha_t}}{\beta_t}x_t + \frac{2\sqrt{\bar{\alpha}_{t-1}}}{1-\bar{\alpha}_{t-1}}x_0)x_{t-1} + C(x_t,x_0)\right)\right)",
            "A misplaced bracket: as typeset −½ multiplies only the quadratic term (there is one \\right) too many), "
            "which changes the mean read off the exponent.",
            r"$\exp\Big(-\tfrac12\Big[\big(\tfrac{\alpha_t}{\beta_t} + \tfrac{1}{1-\bar\alpha_{t-1}}\big)x_{t-1}^2 - "
            r"\big(\tfrac{2\sqrt{\alpha_t}}{\beta_t}x_t + \tfrac{2\sqrt{\bar\alpha_{t-1}}}{1-\bar\alpha_{t-1}}x_0\big)x_{t-1} + "
            r"C(x_t,x_0)\Big]\Big)$", check_posterior_mean_l319),
    Erratum("double-tilde", "App. 3", "notation", 325, r"\tilde{\tilde{\mu}}_t(x_t, x_0)",
            "A double tilde; the same μ̃_t as eq. (4).", r"$\tilde\mu_t(x_t, x_0)$", impact="notation only"),
    Erratum("x0-inversion-app3", "App. 3", "formula", 327,
            r"x_0 = \frac{1}{\sqrt{\overline{\alpha}_t}}(x_t - \sqrt{1 - \overline{\alpha}_t \epsilon_t})",
            "ε_t inside the square root again (l.329 then uses the right form).",
            r"$x_0 = \frac{1}{\sqrt{\bar\alpha_t}}\big(x_t - \sqrt{1-\bar\alpha_t}\,\epsilon_t\big)$", check_x0_inversion),
    Erratum("elbo-direction", "App. 3", "wording", 331, "Запишем наконец нижнюю вариационную границу (ELBO):",
            "What follows is L_VLB ≥ −log p_θ(x_0), an *upper* bound on the negative log-likelihood; the ELBO is "
            "−L_VLB ≤ log p_θ(x_0).",
            "«Запишем вариационную верхнюю границу на $-\\log p_\\theta(x_0)$ ($L_{VLB} = -\\mathrm{ELBO}$):»",
            check_elbo_direction),
    Erratum("informal-register", "App. 3", "wording", 335,
            "Финалочка: переписываем этот весь треш в комбинацию нескольких KL-дивергенций и энтропии",
            "Slang («финалочка», «треш») in a thesis; and the result is a sum of KL divergences and one "
            "log-likelihood term, not an entropy.",
            "«Наконец, перепишем $L_{VLB}$ как сумму KL-дивергенций и члена реконструкции:»",
            impact="register; the final form is in the next entries"),
    Erratum("telescoping-index", "App. 3", "derivation", 337,
            r"+ \log \frac{q(x_t|x_0)}{q(x_1|x_0)} + \log \frac{q(x_1|x_0)}{p_{\theta}(x_0|x_1)} \Big]",
            "The telescoped sum Σ_{t=2}^T log q(x_t|x_0)/q(x_{t−1}|x_0) equals log q(x_T|x_0)/q(x_1|x_0): T, not the "
            "summation index t (which is no longer bound).",
            r"$\ldots + \log\frac{q(x_T\mid x_0)}{q(x_1\mid x_0)} + \log\frac{q(x_1\mid x_0)}{p_\theta(x_0\mid x_1)}\Big]$",
            check_telescoping),
    Erratum("decomposition-unfinished", "App. 3", "derivation", 337, r"\frac{q(x_{t-1}|x_t,x_0)}{p_{\theta}(x_t|x_t)}",
            "The last correct line is then repeated six times and ends in garbled terms (p_θ(x_t|x_t), unbalanced "
            "brackets); the derivation never states the result L_T + Σ L_{t−1} + L_0 that §1.1.1 (l.121–123) relies on.",
            r"$L_{VLB} = \mathbb E_q\Big[\underbrace{D_{KL}(q(x_T\mid x_0)\,\|\,p(x_T))}_{L_T} + \sum_{t=2}^{T}"
            r"\underbrace{D_{KL}(q(x_{t-1}\mid x_t,x_0)\,\|\,p_\theta(x_{t-1}\mid x_t))}_{L_{t-1}}"
            r"\underbrace{-\log p_\theta(x_0\mid x_1)}_{L_0}\Big]$", check_decomposition),
]


def errata_table(sched: D.NoiseSchedule | None = None, seed: int = 0) -> list[dict]:
    """Run every entry's check; one dict per entry (the entry's fields plus the :class:`Check`'s, or None)."""
    sched = sched or D.NoiseSchedule.from_name("linear", 1000)
    rows = []
    for e in ERRATA:
        c = e.check(sched, seed=seed) if e.check else None
        rows.append({"key": e.key, "section": e.section, "kind": e.kind, "line": e.line, "quote": e.quote,
                     "problem": e.problem, "correction": e.correction,
                     "impact": c.impact if c else e.impact, "check": c})
    return rows


def verify_quotes(path: Path | None = None) -> list[str]:
    """The keys of entries whose quote is *not* found verbatim at its line of the draft (empty: all found)."""
    lines = draft_lines(path)
    return [e.key for e in ERRATA if not (1 <= e.line <= len(lines) and e.quote in lines[e.line - 1])]


def _fmt(x: float | None) -> str:
    if x is None:
        return "—"
    return "∞ (NaN draws)" if x == math.inf else f"{x:.3g}"


def verdict(c: Check | None) -> str:
    if c is None:
        return "no numeric check"
    if c.draft_passes is None:
        return "corrected form passes" if c.correct_passes else "corrected form FAILS"
    if c.correct_passes and not c.draft_passes:
        return "draft fails, corrected passes"
    return f"corrected {'passes' if c.correct_passes else 'FAILS'}, draft {'passes' if c.draft_passes else 'fails'}"


def errata_markdown(rows: list[dict]) -> str:
    """A summary table, then one block per entry: quote (verbatim source), problem, correction, check, impact."""
    out = ["| # | line | section | kind | verdict |", "|---|---|---|---|---|"]
    out += [f"| {i} | {r['line']} | {r['section']} | {r['kind']} | {verdict(r['check'])} |" for i, r in enumerate(rows, 1)]
    for i, r in enumerate(rows, 1):
        c = r["check"]
        out += ["", f"**{i}. l.{r['line']} ({r['section']}, {r['kind']})** — {r['problem']}", "",
                "Draft, verbatim:", "", "```latex", r["quote"], "```", "", f"Corrected: {r['correction']}", ""]
        if c is not None:
            out.append(f"Check: {c.quantity}; passes if {c.criterion}. Corrected form: {_fmt(c.correct)}; "
                       f"draft: {_fmt(c.draft)} → **{verdict(c)}**.")
            out.append("")
        out.append(f"How much it matters: {r['impact']}.")
    return "\n".join(out)
