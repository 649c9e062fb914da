"""The errata checks: every correct form passes its numeric check, every draft form fails it, and the checks
measure what they claim (the draft's wrong numbers come out as predicted by hand)."""
import math

import pytest
import torch
from scipy import stats

from dfs import diffusion as D
from dfs import errata as E

SCHEDULES = ["linear", "cosine"]


@pytest.fixture(scope="module", params=SCHEDULES)
def table(request):
    sched = D.NoiseSchedule.from_name(request.param, 1000)
    return sched, E.errata_table(sched, n=100_000, seed=1)


def test_every_correct_form_passes_and_every_draft_form_fails(table):
    _, rows = table
    assert [r["slip"] for r in rows] == ["1", "2", "3", "4", "5"]
    for r in rows:
        assert r["correct_passes"], f"slip {r['slip']}: correct form failed its check ({r['error_correct']:.3g} > {r['tolerance']:.3g})"
        assert not r["draft_passes"], f"slip {r['slip']}: the draft form passed its check ({r['error_draft']:.3g})"
        assert r["error_draft"] > 10 * r["tolerance"], f"slip {r['slip']}: the draft fails only marginally"


def test_markdown_has_one_row_per_slip(table):
    _, rows = table
    md = E.errata_markdown(rows).splitlines()
    assert len(md) == 2 + len(rows)
    assert all("draft fails, correct passes" in line for line in md[2:])
    # a "|" inside a cell (e.g. in Var(x_t|x_0) or LaTeX norms) would split it: every line must have 9 cells
    assert all(line.count("|") == 10 for line in md), md


def test_slip1_both_draft_ranges_fail():
    sched = D.NoiseSchedule.from_name("linear", 200, scale_to_T=True)
    for upper in ("t+1", "T"):
        err_c, err_d, tol, _ = E.check_alpha_bar(sched, upper)
        assert err_c < tol < err_d
    with pytest.raises(ValueError, match="upper"):
        E.draft_alpha_bar(sched, "t")


def test_slip1_iterated_variance_matches_hand_computation():
    betas = torch.tensor([0.1, 0.2, 0.5], dtype=torch.float64)
    v1 = 0.1
    v2 = 0.8 * v1 + 0.2
    v3 = 0.5 * v2 + 0.5
    assert torch.allclose(E.iterated_forward_variance(D.NoiseSchedule(betas)), torch.tensor([v1, v2, v3], dtype=torch.float64))


def test_slip2_grid_posterior_is_exact_for_a_gaussian_product():
    # Product of two Gaussian densities in x_{t-1}, solved by hand with precisions: independent of eq. 4's coefficients.
    sched = D.NoiseSchedule.from_name("cosine", 100)
    t, x0, xt = 30, torch.tensor([0.7, -1.2]), torch.tensor([0.1, 0.9])
    x0, xt = x0.double(), xt.double()
    b, ab_prev = float(sched.betas[t]), float(sched.alphas_cumprod[t - 1])
    prec = (1 - b) / b + 1 / (1 - ab_prev)
    mean = (xt * math.sqrt(1 - b) / b + math.sqrt(ab_prev) * x0 / (1 - ab_prev)) / prec
    _, _, m, v = E.posterior_by_bayes_grid(sched, x0, xt, t)
    assert torch.allclose(m, mean, atol=1e-9)
    assert torch.allclose(v, torch.full_like(v, 1 / prec), rtol=1e-7)
    with pytest.raises(ValueError, match="step t"):
        E.posterior_by_bayes_grid(sched, x0, xt, 0)


def test_slip2_draft_agrees_only_when_x0_is_one():
    # The draft's first term is the x_0 coefficient itself, so it is right exactly when x_0 = 1: the check can pass.
    sched = D.NoiseSchedule.from_name("linear", 1000)
    t = 50
    x0 = torch.ones(8, dtype=torch.float64)
    xt = D.q_sample(sched, x0, t, torch.randn(8, dtype=torch.float64))
    _, _, m_bayes, v = E.posterior_by_bayes_grid(sched, x0, xt, t)
    assert torch.allclose(E.draft_posterior_mean(sched, x0, xt, t), m_bayes, atol=1e-6 * float(v.sqrt().min()))
    assert not torch.allclose(E.draft_posterior_mean(sched, -x0, xt, t), D.q_posterior_mean_variance(sched, -x0, xt, t)[0])


def test_slip3_draft_is_nan_exactly_where_alpha_bar_eps_exceeds_one():
    sched = D.NoiseSchedule.from_name("linear", 1000)
    t, eps = 10, torch.linspace(-3, 3, 61, dtype=torch.float64)
    x = E.draft_q_sample(sched, torch.zeros_like(eps), t, eps)
    assert torch.equal(torch.isnan(x), sched.alphas_cumprod[t] * eps > 1)


def test_slip4_draft_weight_is_correct_weight_over_beta():
    sched = D.NoiseSchedule.from_name("cosine", 1000)
    t = torch.arange(sched.T)
    sigma2 = sched.posterior_variance.clamp(min=1e-20)
    ratio = E.draft_eps_loss_weight(sched, t, sigma2) / E.eps_loss_weight(sched, t, sigma2)
    assert torch.allclose(ratio, 1 / sched.betas)
    with pytest.raises(ValueError, match="timesteps"):
        E.eps_loss_weight(sched, torch.tensor([sched.T]), torch.ones(1, dtype=torch.float64))


def test_slip5_draft_one_step_variance_is_what_the_algebra_predicts():
    # Var((1−β)^½ x + β ε) = (1−β)(1 − ᾱ_{t−1}) + β² for x ~ q(x_{t−1}|x_0): the check sees the draft's real variance.
    sched = D.NoiseSchedule.from_name("linear", 1000)
    g = torch.Generator().manual_seed(0)
    n, t = 200_000, 4
    x_prev = D.q_sample(sched, torch.zeros(n, dtype=torch.float64), t - 1, torch.randn(n, generator=g, dtype=torch.float64))
    x = E.draft_q_step(sched, x_prev, t, torch.randn(n, generator=g, dtype=torch.float64))
    b, ab_prev = float(sched.betas[t]), float(sched.alphas_cumprod[t - 1])
    predicted = (1 - b) * (1 - ab_prev) + b**2
    # χ² confidence interval for a sample variance
    lo, hi = stats.chi2.ppf([1e-6, 1 - 1e-6], n - 1) / (n - 1)
    assert lo * predicted < float(x.var()) < hi * predicted


def test_errata_table_rejects_tiny_samples():
    with pytest.raises(ValueError, match="too few"):
        E.errata_table(D.NoiseSchedule.from_name("linear", 10), n=10)
