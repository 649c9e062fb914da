"""The DDPM maths of dfs.diffusion against independent computations: Monte Carlo, Bayes' rule on a grid,
numpy/scipy re-derivations of the schedules and Ho et al.'s formulas. (diffusers equivalence: test_diffusers_equivalence.py.)"""
import math

import numpy as np
import pytest
import torch
from scipy import stats

from dfs import diffusion as D

SCHEDULES = ["linear", "cosine"]


def _gaussian_ci(samples: torch.Tensor, mean: float, var: float, z: float = 6.0):
    """Assert a 1-D sample has the given mean (z standard errors) and variance (χ² interval at the same level)."""
    n = samples.numel()
    assert abs(float(samples.mean()) - mean) < z * math.sqrt(var / n), (float(samples.mean()), mean)
    p = stats.norm.sf(z)
    lo, hi = stats.chi2.ppf([p, 1 - p], n - 1) / (n - 1)
    assert lo * var < float(samples.var()) < hi * var, (float(samples.var()), var)


# ---------------------------------------------------------------------------------------------------------- forward


@pytest.mark.parametrize("name", SCHEDULES)
def test_iterating_eq1_matches_closed_form_eq2(name):
    sched = D.NoiseSchedule.from_name(name, 1000)
    g = torch.Generator().manual_seed(0)
    n, x0_values = 20_000, (-1.0, 0.8)
    x0 = torch.tensor(x0_values, dtype=torch.float64).repeat_interleave(n)
    x, checked = x0.clone(), 0
    for t in range(sched.T):
        x = D.q_step(sched, x, t, torch.randn(x.shape, generator=g, dtype=torch.float64))
        if t in (0, 9, 99, 499, 999):
            abar = float(np.prod(1 - sched.betas[: t + 1].numpy()))  # ᾱ_t = ∏_{s=1}^{t} α_s, independently
            for i, v in enumerate(x0_values):
                _gaussian_ci(x[i * n:(i + 1) * n], math.sqrt(abar) * v, 1 - abar)
            checked += 1
    assert checked == 5


@pytest.mark.parametrize("name", SCHEDULES)
def test_q_sample_matches_q_mean_variance(name):
    sched = D.NoiseSchedule.from_name(name, 200, **({"scale_to_T": True} if name == "linear" else {}))
    g = torch.Generator().manual_seed(1)
    n, t = 50_000, 60
    x0 = torch.full((n,), 0.3, dtype=torch.float64)
    x = D.q_sample(sched, x0, t, torch.randn(n, generator=g, dtype=torch.float64))
    mean, var = D.q_mean_variance(sched, x0[:1], t)
    _gaussian_ci(x, float(mean), float(var))


# ---------------------------------------------------------------------------------------------------------- posterior


def _bayes_grid_posterior(beta, abar_prev, x0, xt, n=40_001):
    """Mean and variance of p(x_{t−1}|x_t,x_0) ∝ q(x_t|x_{t−1}) q(x_{t−1}|x_0), both densities from scipy."""
    prior_sd, lik_sd = math.sqrt(1 - abar_prev), math.sqrt(beta / (1 - beta))
    centre = math.sqrt(abar_prev) * x0
    lo = min(centre - 12 * prior_sd, xt / math.sqrt(1 - beta) - 12 * lik_sd)
    hi = max(centre + 12 * prior_sd, xt / math.sqrt(1 - beta) + 12 * lik_sd)
    grid = np.linspace(lo, hi, n)
    log_p = stats.norm.logpdf(xt, math.sqrt(1 - beta) * grid, math.sqrt(beta)) + stats.norm.logpdf(grid, centre, prior_sd)
    p = np.exp(log_p - log_p.max())
    p /= np.trapezoid(p, grid)
    mean = np.trapezoid(p * grid, grid)
    return mean, np.trapezoid(p * (grid - mean) ** 2, grid)


@pytest.mark.parametrize("name", SCHEDULES)
def test_posterior_eq4_matches_bayes_rule_on_a_grid(name):
    sched = D.NoiseSchedule.from_name(name, 1000)
    rng = np.random.default_rng(0)
    for t in (1, 5, 50, 300, 700, 998):
        # x_0 from a two-component 1-D mixture, x_t from eq. 2 given it
        x0 = np.where(rng.random(4) < 0.5, rng.normal(-1, 0.3, 4), rng.normal(1.2, 0.5, 4))
        abar = float(sched.alphas_cumprod[t])
        xt = math.sqrt(abar) * x0 + math.sqrt(1 - abar) * rng.normal(size=4)
        mean, var, log_var = D.q_posterior_mean_variance(sched, torch.tensor(x0), torch.tensor(xt), t)
        for i in range(4):
            m_ref, v_ref = _bayes_grid_posterior(float(sched.betas[t]), float(sched.alphas_cumprod[t - 1]), x0[i], xt[i])
            assert abs(float(mean[i]) - m_ref) < 1e-7 * math.sqrt(v_ref)
            assert float(var[i]) == pytest.approx(v_ref, rel=1e-6)
            assert float(log_var[i]) == pytest.approx(math.log(v_ref), rel=1e-6)


def test_posterior_at_first_step_is_x0():
    sched = D.NoiseSchedule.from_name("linear", 1000)
    x0, xt = torch.randn(5, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    mean, var, _ = D.q_posterior_mean_variance(sched, x0, xt, 0)
    assert torch.allclose(mean, x0) and torch.all(var == 0)


# ---------------------------------------------------------------------------------------------------------- reverse


@pytest.mark.parametrize("name", SCHEDULES)
def test_predict_x0_from_eps_inverts_q_sample(name):
    sched = D.NoiseSchedule.from_name(name, 1000)
    t = torch.tensor([0, 1, 10, 250, 500, 900])
    x0, eps = torch.randn(6, 3, 4, 4, dtype=torch.float64), torch.randn(6, 3, 4, 4, dtype=torch.float64)
    x_t = D.q_sample(sched, x0, t, eps)
    assert torch.allclose(D.predict_x0_from_eps(sched, x_t, t, eps), x0, atol=1e-9)
    assert torch.allclose(D.predict_eps_from_x0(sched, x_t, t, x0), eps, atol=1e-9)


@pytest.mark.parametrize("name", SCHEDULES)
def test_p_mean_variance_is_ho_eq11(name):
    sched = D.NoiseSchedule.from_name(name, 1000)
    betas = sched.betas.numpy()
    alphas, abar = 1 - betas, np.cumprod(1 - betas)
    abar_prev = np.concatenate([[1.0], abar[:-1]])
    t = np.array([0, 3, 77, 500, 998, 999])
    x_t, eps = np.random.default_rng(2).normal(size=(2, 6, 5))
    out = D.p_mean_variance(sched, torch.tensor(eps), torch.tensor(x_t), torch.tensor(t))
    b, a, ab = betas[t, None], alphas[t, None], abar[t, None]
    mu_ho = (x_t - b / np.sqrt(1 - ab) * eps) / np.sqrt(a)      # Ho et al. eq. 11
    assert np.allclose(out["mean"].numpy(), mu_ho, atol=1e-9)
    assert np.allclose(out["variance"].numpy()[:, 0], (1 - abar_prev[t]) / (1 - abar[t]) * betas[t])
    large = D.p_mean_variance(sched, torch.tensor(eps), torch.tensor(x_t), torch.tensor(t), variance="fixed_large")
    assert np.allclose(large["variance"].numpy()[:, 0], betas[t])
    assert np.allclose(large["mean"].numpy(), mu_ho, atol=1e-9)


def test_ddpm_step_adds_noise_except_at_t0():
    sched = D.NoiseSchedule.from_name("cosine", 100)
    x, eps, z = torch.randn(3, 2, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64), torch.ones(3, 2, dtype=torch.float64)
    t = torch.tensor([0, 1, 50])
    mean = D.p_mean_variance(sched, eps, x, t)["mean"]
    out = D.ddpm_step(sched, eps, x, t, z)
    assert torch.allclose(out[0], mean[0])
    assert torch.allclose(out[1:], mean[1:] + sched.posterior_variance[t[1:], None].sqrt())


def test_loss_simple_is_the_mean_squared_noise_error():
    sched = D.NoiseSchedule.from_name("linear", 100, scale_to_T=True)
    x0, noise, t = torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0, 5, 50, 99])
    assert float(D.loss_simple(lambda x, tt: torch.zeros_like(x), sched, x0, t, noise)) == pytest.approx(float((noise**2).mean()), rel=1e-6)
    # a model that knows the noise that was added has zero loss
    assert float(D.loss_simple(lambda x, tt: noise, sched, x0, t, noise)) == 0.0


def test_ddpm_sampling_with_the_exact_eps_recovers_a_gaussian():
    # Data N(m, s²): x_t ~ N(√ᾱ m, ᾱ s² + 1 − ᾱ) and E[ε | x_t] = √(1−ᾱ)(x_t − √ᾱ m)/(ᾱ s² + 1 − ᾱ), in closed form.
    sched = D.NoiseSchedule.from_name("linear", 200, scale_to_T=True)
    m, s = 1.5, 0.4

    def eps_model(x, t):
        ab = sched.alphas_cumprod[t].to(x.dtype).reshape(-1, 1)
        return (1 - ab).sqrt() * (x - ab.sqrt() * m) / (ab * s**2 + 1 - ab)

    g = torch.Generator().manual_seed(3)
    x = D.ddpm_sample(eps_model, sched, (20_000, 1), generator=g, progress=False).double()
    assert abs(float(x.mean()) - m) < 0.02
    assert abs(float(x.std()) - s) < 0.02


# ---------------------------------------------------------------------------------------------------------- schedules


def test_linear_schedule_is_ho_et_al():
    sched = D.NoiseSchedule.from_name("linear", 1000)
    assert np.allclose(sched.betas.numpy(), np.linspace(1e-4, 0.02, 1000))
    assert float(sched.alphas_cumprod[-1]) < 1e-4


def test_cosine_alpha_bar_matches_cos2_formula():
    T, s = 1000, 0.008
    sched = D.NoiseSchedule.from_name("cosine", T)
    tau = np.arange(1, T + 1) / T
    f = lambda u: np.cos((u + s) / (1 + s) * np.pi / 2) ** 2  # noqa: E731
    expected = f(tau) / f(0.0)
    unclipped = sched.betas.numpy() < 0.999          # the cap (iDDPM) only bites in the last steps
    assert unclipped[: T - 5].all()
    first_clipped = int(np.argmin(unclipped)) if not unclipped.all() else T
    assert np.allclose(sched.alphas_cumprod.numpy()[:first_clipped], expected[:first_clipped], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("T", [10, 100, 1000])
def test_schedule_properties(name, T):
    sched = D.NoiseSchedule.from_name(name, T, **({"scale_to_T": True} if name == "linear" else {}))
    assert sched.T == T and sched.betas.dtype == torch.float64
    assert torch.all((sched.betas > 0) & (sched.betas < 1))
    snr = sched.snr()
    assert torch.all(snr[1:] < snr[:-1]), "SNR must decrease strictly with t"
    assert torch.all(sched.alphas_cumprod[1:] < sched.alphas_cumprod[:-1])
    assert torch.allclose(sched.alphas_cumprod_prev[1:], sched.alphas_cumprod[:-1])
    assert float(sched.alphas_cumprod_prev[0]) == 1.0


# ---------------------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("T", [0, -5, 2.5, True, "10"])
def test_bad_T_raises(T):
    with pytest.raises(ValueError, match="T must be a positive integer"):
        D.make_beta_schedule("linear", T)


def test_unknown_schedule_raises():
    with pytest.raises(ValueError, match="unknown beta schedule 'sigmoid'"):
        D.NoiseSchedule.from_name("sigmoid", 100)


@pytest.mark.parametrize("betas", [[0.1, 1.0], [0.0, 0.1], [-0.1], [0.5, 1.5], []])
def test_betas_outside_unit_interval_raise(betas):
    with pytest.raises(ValueError, match="beta"):
        D.NoiseSchedule(torch.tensor(betas, dtype=torch.float64))


def test_linear_endpoints_outside_unit_interval_raise():
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        D.linear_beta_schedule(10, beta_start=0.0)


def test_shape_mismatches_raise():
    sched = D.NoiseSchedule.from_name("linear", 100, scale_to_T=True)
    x, t = torch.randn(4, 3), torch.zeros(4, dtype=torch.long)
    calls = [lambda: D.q_step(sched, x, t, torch.randn(4, 2)),
             lambda: D.q_sample(sched, x, t, torch.randn(3, 3)),
             lambda: D.q_posterior_mean_variance(sched, x, torch.randn(4, 4), t),
             lambda: D.predict_x0_from_eps(sched, x, t, torch.randn(4)),
             lambda: D.p_mean_variance(sched, torch.randn(4, 1), x, t),
             lambda: D.ddpm_step(sched, x, x, t, torch.randn(2, 3))]
    for call in calls:
        with pytest.raises(ValueError, match="same shape"):
            call()


@pytest.mark.parametrize("t", [100, -1, [0, 1, 2], [[0, 0, 0, 0]]])
def test_out_of_range_or_misshaped_t_raises(t):
    sched = D.NoiseSchedule.from_name("linear", 100, scale_to_T=True)
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match="timesteps must"):
        D.q_sample(sched, x, torch.tensor(t), torch.randn(4, 3))


def test_other_bad_arguments_raise():
    sched = D.NoiseSchedule.from_name("cosine", 50)
    x, t = torch.randn(2, 2), torch.tensor([5, 5])
    with pytest.raises(ValueError, match="unknown variance"):
        D.p_mean_variance(sched, x, x, t, variance="learned")
    with pytest.raises(ValueError, match="eta"):
        D.ddim_step(sched, x, x, t, 4, eta=-0.5)
    with pytest.raises(ValueError, match="t_prev < t"):
        D.ddim_step(sched, x, x, t, 5)
    with pytest.raises(ValueError, match="sampling steps"):
        D.ddim_timesteps(50, 51)


def test_ddim_sample_over_given_timesteps():
    """``timesteps`` = the default list reproduces the default loop; a tail of it starts from x_T at its first
    timestep (what SDEdit needs); a non-descending list is refused."""
    sched = D.NoiseSchedule.from_name("cosine", 100)
    eps = lambda x, t: 0.1 * x  # noqa: E731
    x_T = torch.randn(3, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    full = D.ddim_sample(eps, sched, x_T.shape, 10, x_T=x_T, progress=False)
    torch.testing.assert_close(D.ddim_sample(eps, sched, x_T.shape, 10, x_T=x_T, progress=False,
                                             timesteps=D.ddim_timesteps(100, 10)), full, rtol=0, atol=0)
    ts = D.ddim_timesteps(100, 10)
    x = x_T.clone()
    for a, b in zip(ts[6:], ts[7:] + [-1]):
        x = D.ddim_step(sched, eps(x, None), x, a, b)
    torch.testing.assert_close(D.ddim_sample(eps, sched, x_T.shape, 10, x_T=x_T, progress=False, timesteps=ts[6:]), x)
    with pytest.raises(ValueError, match="descending"):
        D.ddim_sample(eps, sched, x_T.shape, 10, x_T=x_T, progress=False, timesteps=[10, 20])


def test_low_pass_is_a_mean_preserving_projection_and_ilvr_takes_the_references_low_pass():
    """φ_N of ILVR (Choi et al. 2021): block means; φ_N∘φ_N = φ_N; one refinement (eq. 8) gives φ_N(x') = φ_N(y_t')."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 3, 16, 16, generator=g), torch.randn(2, 3, 16, 16, generator=g)
    lp = D.low_pass(x, 4)
    assert lp[0, 1, 5, 6].item() == pytest.approx(x[0, 1, 4:8, 4:8].mean().item(), abs=1e-6)
    torch.testing.assert_close(D.low_pass(lp, 4), lp)
    torch.testing.assert_close(lp.mean((-2, -1)), x.mean((-2, -1)))
    sched = D.NoiseSchedule.from_name("cosine", 100)
    noise = torch.randn(x.shape, generator=g)
    out = D.ilvr_refine(sched, x, y, 30, 4, noise)
    torch.testing.assert_close(D.low_pass(out, 4), D.low_pass(D.q_sample(sched, y, 30, noise), 4))
    torch.testing.assert_close(out - D.low_pass(out, 4), x - lp)               # x's own detail is kept
    torch.testing.assert_close(D.low_pass(D.ilvr_refine(sched, x, y, -1, 4, noise), 4), D.low_pass(y, 4))
    with pytest.raises(ValueError, match="divisor of the image size"):
        D.low_pass(x, 5)
