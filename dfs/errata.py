"""Errata for the thesis draft's DDPM derivation (§1.1.1, App. 1), each slip checked numerically.

For every slip there is a function computing the form *as written in the draft* and a check that measures a
quantity both forms should reproduce. The correct forms are not re-derived here: they are the functions of
:mod:`dfs.diffusion` (the one place the maths lives). The checks:

  1. ᾱ_t's product range    1 − ᾱ_t vs the variance of x_t obtained by iterating eq. 1's moments from x_0.
  2. μ̃_t without x_0        the posterior mean of eq. 4 vs Bayes' rule evaluated on a fine 1-D grid.
  3. √(1 − ᾱ_t ε)           the sample variance of the reparameterised x_t vs the variance of eq. 2.
  4. L_{t−1} weight β_t     ‖μ̃_t − μ_θ‖² / 2σ_t² computed directly vs weight · ‖ε − ε_θ‖² (Ho et al. eq. 12).
  5. β_t ε in eq. 1         the sample variance of x_t after one step from x_{t−1} ~ q(x_{t−1}|x_0) vs 1 − ᾱ_t.

``errata_table(sched)`` runs all of them and returns one row per slip; ``errata_markdown(rows)`` renders it.
Timesteps are 0-based as in :mod:`dfs.diffusion` (code step t is the paper's step t+1).
"""
from __future__ import annotations

import math

import torch

from . import diffusion as D

# ----------------------------------------------------------------------------------------------------------
# The draft's forms (deliberately wrong: do not use them outside this module and its tests)
# ----------------------------------------------------------------------------------------------------------


def draft_alpha_bar(sched: D.NoiseSchedule, upper: str = "t+1") -> torch.Tensor:
    """Slip 1: ᾱ_t with the draft's product range.

    ``upper="t+1"``: ᾱ_t = ∏_{s=0}^{t} α_s, read as t + 1 factors α_1 … α_{t+1} (one step too many); it needs
    α_{T+1}, so it is returned for paper t = 1 … T−1 only (length T − 1).
    ``upper="T"``: ᾱ_t = ∏_{s=1}^{T} α_s, the same number for every t (length T).
    Correct: ``sched.alphas_cumprod`` (ᾱ_t = ∏_{s=1}^{t} α_s).
    """
    if upper == "t+1":
        return sched.alphas_cumprod[1:].clone()
    if upper == "T":
        return sched.alphas_cumprod[-1].expand(sched.T).clone()
    raise ValueError(f"upper must be 't+1' (∏_{{s=0}}^{{t}}) or 'T' (∏_{{s=1}}^{{T}}), got {upper!r}")


def draft_posterior_mean(sched: D.NoiseSchedule, x0: torch.Tensor, x_t: torch.Tensor, t) -> torch.Tensor:
    """Slip 2: μ̃_t = √ᾱ_{t−1} β_t/(1 − ᾱ_t) + √α_t (1 − ᾱ_{t−1})/(1 − ᾱ_t) · x_t  (x_0 missing in the first term).

    ``x0`` is taken only to keep the signature of the correct form, :func:`dfs.diffusion.q_posterior_mean_variance`.
    """
    D._check_same_shape(x0=x0, x_t=x_t)
    return D.extract(sched.posterior_mean_coef1, t, x_t) + D.extract(sched.posterior_mean_coef2, t, x_t) * x_t


def draft_q_sample(sched: D.NoiseSchedule, x0: torch.Tensor, t, noise: torch.Tensor) -> torch.Tensor:
    """Slip 3: x_t = √ᾱ_t x_0 + √(1 − ᾱ_t ε)  (ε inside the root; NaN where ᾱ_t ε > 1).

    Correct: :func:`dfs.diffusion.q_sample`, x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) · ε.
    """
    D._check_same_shape(x0=x0, noise=noise)
    abar = D.extract(sched.alphas_cumprod, t, x0)
    return abar.sqrt() * x0 + (1 - abar * noise).sqrt()


def eps_loss_weight(sched: D.NoiseSchedule, t, sigma2: torch.Tensor) -> torch.Tensor:
    """The weight of ‖ε − ε_θ‖² in L_{t−1} − C = β_t² / (2 σ_t² α_t (1 − ᾱ_t))  (Ho et al. eq. 12).

    ``t`` is a (B,) LongTensor of 0-based steps, ``sigma2`` the reverse-step variance σ_t², shape (B,).
    """
    t = D._check_t(t, sigma2, sched.T)
    b, a, abar = sched.betas[t], sched.alphas[t], sched.alphas_cumprod[t]
    return b**2 / (2 * sigma2 * a * (1 - abar))


def draft_eps_loss_weight(sched: D.NoiseSchedule, t, sigma2: torch.Tensor) -> torch.Tensor:
    """Slip 4: the draft's weight β_t / (2 σ_t² α_t (1 − ᾱ_t)) (β_t where β_t² belongs)."""
    t = D._check_t(t, sigma2, sched.T)
    b, a, abar = sched.betas[t], sched.alphas[t], sched.alphas_cumprod[t]
    return b / (2 * sigma2 * a * (1 - abar))


def draft_q_step(sched: D.NoiseSchedule, x_prev: torch.Tensor, t, noise: torch.Tensor) -> torch.Tensor:
    """Slip 5: x_t = √(1 − β_t) x_{t−1} + β_t ε  (the variance β_t used as the standard deviation).

    Correct: :func:`dfs.diffusion.q_step`, x_t = √(1 − β_t) x_{t−1} + √β_t ε  (thesis eq. 1).
    """
    D._check_same_shape(x_prev=x_prev, noise=noise)
    beta = D.extract(sched.betas, t, x_prev)
    return (1 - beta).sqrt() * x_prev + beta * noise


# ----------------------------------------------------------------------------------------------------------
# Independent references
# ----------------------------------------------------------------------------------------------------------


def iterated_forward_variance(sched: D.NoiseSchedule) -> torch.Tensor:
    """Var(x_t | x_0) for t = 1 … T by iterating eq. 1's moments: v_t = (1 − β_t) v_{t−1} + β_t, v_0 = 0."""
    v, out = 0.0, []
    for b in sched.betas.tolist():
        v = (1 - b) * v + b
        out.append(v)
    return torch.tensor(out, dtype=torch.float64)


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


# ----------------------------------------------------------------------------------------------------------
# The checks: each returns (error of the correct form, error of the draft form, tolerance, note)
# ----------------------------------------------------------------------------------------------------------


def default_steps(T: int) -> list[int]:
    """0-based steps the Monte Carlo checks use: early ones (where the slips are largest) and a few later."""
    return sorted({t for t in (0, 1, 4, 9, T // 10, T // 2) if 0 <= t < T})


def check_alpha_bar(sched: D.NoiseSchedule, upper: str = "t+1"):
    """Slip 1: max_t |(1 − ᾱ_t) − v_t| / v_t with v_t from iterating eq. 1 (exact, no sampling)."""
    v = iterated_forward_variance(sched)
    correct = ((1 - sched.alphas_cumprod) - v).abs() / v
    draft_abar = draft_alpha_bar(sched, upper)
    draft = ((1 - draft_abar) - v[: len(draft_abar)]).abs() / v[: len(draft_abar)]
    return float(correct.max()), float(draft.max()), 1e-9, "exact recursion over every t"


def check_posterior_mean(sched: D.NoiseSchedule, k: int = 64, generator: torch.Generator | None = None):
    """Slip 2: max |μ_formula − μ_Bayes| / √β̃_t over K random (x_0, x_t) pairs at each step of ``default_steps``."""
    err_c, err_d = 0.0, 0.0
    for t in [s for s in default_steps(sched.T) if s >= 1]:
        x0 = torch.randn(k, generator=generator, dtype=torch.float64)
        x_t = D.q_sample(sched, x0, t, torch.randn(k, generator=generator, dtype=torch.float64))
        _, _, mean_bayes, _ = posterior_by_bayes_grid(sched, x0, x_t, t)
        mean_c, var, _ = D.q_posterior_mean_variance(sched, x0, x_t, t)
        mean_d = draft_posterior_mean(sched, x0, x_t, t)
        err_c = max(err_c, float(((mean_c - mean_bayes).abs() / var.sqrt()).max()))
        err_d = max(err_d, float(((mean_d - mean_bayes).abs() / var.sqrt()).max()))
    return err_c, err_d, 1e-6, f"{k} random (x_0, x_t) per step, grid of 20001 points; error in posterior std units"


def _mc_tolerance(n: int) -> float:
    """6 standard errors of a sample variance's relative error, √(2/(n−1)) for Gaussian samples."""
    return 6 * math.sqrt(2 / (n - 1))


def check_reparameterisation(sched: D.NoiseSchedule, n: int = 200_000, generator: torch.Generator | None = None):
    """Slip 3: max_t |Var̂(x_t) − (1 − ᾱ_t)| / (1 − ᾱ_t) for x_t from a fixed x_0 = 0.5 (eq. 2's variance)."""
    err_c, err_d, nan_frac = 0.0, 0.0, 0.0
    for t in default_steps(sched.T):
        x0 = torch.full((n,), 0.5, dtype=torch.float64)
        eps = torch.randn(n, generator=generator, dtype=torch.float64)
        _, var = D.q_mean_variance(sched, x0[:1], t)
        var = float(var)
        xc, xd = D.q_sample(sched, x0, t, eps), draft_q_sample(sched, x0, t, eps)
        nan = torch.isnan(xd)
        nan_frac = max(nan_frac, float(nan.double().mean()))
        err_c = max(err_c, abs(float(xc.var()) - var) / var)
        err_d = max(err_d, math.inf if nan.all() else abs(float(xd[~nan].var()) - var) / var)
    note = (f"n={n} per step; the draft's form is NaN for up to {100 * nan_frac:.0f}% of ε (√ of a negative "
            f"number) and its variance on the finite draws is off by up to {100 * err_d:.0f}%")
    return err_c, (math.inf if nan_frac > 0 else err_d), _mc_tolerance(n), note


def check_loss_weight(sched: D.NoiseSchedule, k: int = 64, d: int = 16, generator: torch.Generator | None = None):
    """Slip 4: max |weight · ‖ε − ε_θ‖² / (‖μ̃_t − μ_θ‖² / 2σ_t²) − 1| over random x_0, ε, ε_θ and every t (σ_t² = β_t)."""
    t = torch.arange(sched.T).repeat_interleave(k)
    x0 = torch.randn(len(t), d, generator=generator, dtype=torch.float64)
    eps = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
    eps_theta = eps + 0.3 * torch.randn(x0.shape, generator=generator, dtype=torch.float64)
    x_t = D.q_sample(sched, x0, t, eps)
    mu_tilde, _, _ = D.q_posterior_mean_variance(sched, x0, x_t, t)
    out = D.p_mean_variance(sched, eps_theta, x_t, t, variance="fixed_large")
    sigma2 = out["variance"].flatten()
    kl_direct = ((mu_tilde - out["mean"]) ** 2).sum(1) / (2 * sigma2)
    sq = ((eps - eps_theta) ** 2).sum(1)
    err_c = (eps_loss_weight(sched, t, sigma2) * sq / kl_direct - 1).abs().max()
    err_d = (draft_eps_loss_weight(sched, t, sigma2) * sq / kl_direct - 1).abs().max()
    return float(err_c), float(err_d), 1e-8, f"{k} random (x_0, ε, ε_θ) in R^{d} at every t; σ_t² = β_t"


def check_forward_step(sched: D.NoiseSchedule, n: int = 200_000, generator: torch.Generator | None = None):
    """Slip 5: max_t |Var̂(x_t) − (1 − ᾱ_t)| / (1 − ᾱ_t), x_t one eq. 1 step from x_{t−1} ~ q(x_{t−1}|x_0 = 0.5)."""
    err_c, err_d = 0.0, 0.0
    for t in default_steps(sched.T):
        x0 = torch.full((n,), 0.5, dtype=torch.float64)
        x_prev = x0 if t == 0 else D.q_sample(sched, x0, t - 1, torch.randn(n, generator=generator, dtype=torch.float64))
        eps = torch.randn(n, generator=generator, dtype=torch.float64)
        var = float(1 - sched.alphas_cumprod[t])
        err_c = max(err_c, abs(float(D.q_step(sched, x_prev, t, eps).var()) - var) / var)
        err_d = max(err_d, abs(float(draft_q_step(sched, x_prev, t, eps).var()) - var) / var)
    return err_c, err_d, _mc_tolerance(n), f"n={n} per step, steps {default_steps(sched.T)} (0-based)"


# ----------------------------------------------------------------------------------------------------------
# The table
# ----------------------------------------------------------------------------------------------------------

SLIPS = [
    dict(slip="1", where="ᾱ_t in eq. (2)", what="range of the product in ᾱ_t",
         draft=r"\bar\alpha_t = \prod_{s=0}^{t} \alpha_s", correct=r"\bar\alpha_t = \prod_{s=1}^{t} \alpha_s",
         check="1 − ᾱ_t vs Var(x_t ∣ x_0) from iterating eq. (1)"),
    dict(slip="2", where="eq. (4)", what="x_0 missing in μ̃_t",
         draft=r"\tilde\mu_t = \frac{\sqrt{\bar\alpha_{t-1}}\beta_t}{1-\bar\alpha_t} + \frac{\sqrt{\alpha_t}(1-\bar\alpha_{t-1})}{1-\bar\alpha_t} x_t",
         correct=r"\tilde\mu_t = \frac{\sqrt{\bar\alpha_{t-1}}\beta_t}{1-\bar\alpha_t} x_0 + \frac{\sqrt{\alpha_t}(1-\bar\alpha_{t-1})}{1-\bar\alpha_t} x_t",
         check="μ̃_t vs Bayes' rule on a 1-D grid"),
    dict(slip="3", where="eq. (2) reparameterised", what="ε inside the square root",
         draft=r"x_t = \sqrt{\bar\alpha_t} x_0 + \sqrt{1-\bar\alpha_t \epsilon}",
         correct=r"x_t = \sqrt{\bar\alpha_t} x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon",
         check="sample Var(x_t) vs 1 − ᾱ_t"),
    dict(slip="4", where="L_{t−1} in ε-form", what="β_t instead of β_t² in the weight",
         draft=r"\frac{\beta_t}{2\sigma_t^2\alpha_t(1-\bar\alpha_t)}\lVert\epsilon-\epsilon_\theta\rVert^2",
         correct=r"\frac{\beta_t^2}{2\sigma_t^2\alpha_t(1-\bar\alpha_t)}\lVert\epsilon-\epsilon_\theta\rVert^2",
         check="weight·‖ε − ε_θ‖² vs ‖μ̃_t − μ_θ‖²/2σ_t²"),
    dict(slip="5", where="App. 1, sampling eq. (1)", what="variance β_t used as the std",
         draft=r"x_t = \sqrt{1-\beta_t}\,x_{t-1} + \beta_t \epsilon",
         correct=r"x_t = \sqrt{1-\beta_t}\,x_{t-1} + \sqrt{\beta_t}\,\epsilon",
         check="sample Var(x_t) one step after x_{t−1} ~ q(x_{t−1} ∣ x_0) vs 1 − ᾱ_t"),
]


def errata_table(sched: D.NoiseSchedule, n: int = 200_000, seed: int = 0) -> list[dict]:
    """Run every check on ``sched``; one dict per slip with the LaTeX forms and the measured errors.

    Keys: slip, where, what, draft, correct (LaTeX), check (what is compared), error_correct, error_draft,
    tolerance, correct_passes, draft_passes, note. ``n`` is the Monte Carlo sample size of slips 3 and 5.
    """
    if n < 1000:
        raise ValueError(f"n = {n} Monte Carlo samples is too few for the variance checks; use n ≥ 1000")
    g = torch.Generator().manual_seed(seed)
    results = [check_alpha_bar(sched), check_posterior_mean(sched, generator=g),
               check_reparameterisation(sched, n, generator=g), check_loss_weight(sched, generator=g),
               check_forward_step(sched, n, generator=g)]
    rows = []
    for info, (err_c, err_d, tol, note) in zip(SLIPS, results):
        rows.append({**info, "error_correct": err_c, "error_draft": err_d, "tolerance": tol,
                     "correct_passes": err_c <= tol, "draft_passes": err_d <= tol, "note": note})
    return rows


def errata_markdown(rows: list[dict]) -> str:
    """The table as Markdown (LaTeX in ``$…$``), for ``IPython.display.Markdown``."""
    lines = ["| # | concerns | as written in the draft | correct | numeric check | error (correct) | error (draft) | tolerance | verdict |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        verdict = ("draft fails, correct passes" if r["correct_passes"] and not r["draft_passes"]
                   else f"correct {'passes' if r['correct_passes'] else 'FAILS'}, draft {'passes' if r['draft_passes'] else 'fails'}")
        lines.append(f"| {r['slip']} | {r['where']} | ${r['draft']}$ | ${r['correct']}$ | {r['check']} | "
                     f"{r['error_correct']:.2e} | {r['error_draft']:.2e} | {r['tolerance']:.1e} | {verdict} |")
    return "\n".join(lines)
