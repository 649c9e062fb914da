"""The variational bound (thesis App. 3), its pieces, learned variances and the L_hybrid / L_vlb losses.

References: closed forms, scipy.stats.norm, and a direct Monte-Carlo estimate of
E_q[log q(x_{1:T} | x_0) − log p_θ(x_{0:T})] along simulated forward chains.
"""
import math

import numpy as np
import pytest
import torch
from scipy import stats

from dfs import diffusion as D

# --------------------------------------------------------------------------------------------------------
# Pieces against closed forms / scipy
# --------------------------------------------------------------------------------------------------------


def test_normal_kl_matches_monte_carlo_and_is_zero_for_equal():
    g = torch.Generator().manual_seed(0)
    m1, lv1, m2, lv2 = 0.3, math.log(0.5), -0.4, math.log(2.0)
    x = m1 + math.exp(0.5 * lv1) * torch.randn(400_000, generator=g, dtype=torch.float64)
    mc = (stats.norm.logpdf(x.numpy(), m1, math.exp(0.5 * lv1)) - stats.norm.logpdf(x.numpy(), m2, math.exp(0.5 * lv2))).mean()
    kl = D.normal_kl(torch.tensor(m1), torch.tensor(lv1), torch.tensor(m2), torch.tensor(lv2))
    assert abs(kl.item() - mc) < 5e-3
    assert D.normal_kl(torch.tensor(1.0), torch.tensor(0.3), torch.tensor(1.0), torch.tensor(0.3)).item() == pytest.approx(0, abs=1e-12)


def test_gaussian_log_likelihood_matches_scipy():
    x, m, lv = torch.randn(50, dtype=torch.float64), torch.randn(50, dtype=torch.float64), torch.randn(50, dtype=torch.float64)
    ref = stats.norm.logpdf(x.numpy(), m.numpy(), np.exp(0.5 * lv.numpy()))
    np.testing.assert_allclose(D.gaussian_log_likelihood(x, m, lv).numpy(), ref, rtol=1e-12, atol=1e-12)


def _discretized_ref(x, mean, std, bins=256):
    half = 1 / (bins - 1)
    lo = np.where(x <= -1 + 1e-9, -np.inf, x - half)
    hi = np.where(x >= 1 - 1e-9, np.inf, x + half)
    # difference of CDFs taken on the side where it is largest (the survival function in the right tail)
    right = (lo - mean) / std > 0
    p = np.where(right, stats.norm.sf(lo, mean, std) - stats.norm.sf(hi, mean, std),
                 stats.norm.cdf(hi, mean, std) - stats.norm.cdf(lo, mean, std))
    with np.errstate(divide="ignore"):
        return np.log(p)


@pytest.mark.parametrize("std", [1e-3, 0.02, 0.3, 2.0])
def test_discretized_log_likelihood_matches_scipy(std):
    g = torch.Generator().manual_seed(1)
    u = torch.randint(0, 256, (400,), generator=g)
    u[:3] = torch.tensor([0, 255, 128])                      # both open-ended edge bins
    x = u.double() / 127.5 - 1
    mean = (x + 0.05 * torch.randn(400, generator=g, dtype=torch.float64)).clamp(-1.2, 1.2)
    ours = D.discretized_gaussian_log_likelihood(x, mean, torch.full_like(x, 2 * math.log(std)))
    ref = _discretized_ref(x.numpy(), mean.numpy(), std)
    finite = np.isfinite(ref) & (ref > -700)                  # scipy underflows far in the tails, we do not
    assert finite.mean() > 0.5
    np.testing.assert_allclose(ours.numpy()[finite], ref[finite], rtol=1e-7, atol=1e-9)
    assert torch.isfinite(ours).all() and (ours <= 0).all()


def test_discretized_likelihood_sums_to_one_over_the_bins():
    x = torch.arange(256, dtype=torch.float64) / 127.5 - 1
    for mean, std in [(0.1, 0.05), (-0.9, 0.5), (0.99, 3.0)]:
        lp = D.discretized_gaussian_log_likelihood(x, torch.full_like(x, mean), torch.full_like(x, 2 * math.log(std)))
        assert lp.exp().sum().item() == pytest.approx(1.0, abs=1e-10)


def test_discretized_likelihood_rejects_unscaled_data():
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        D.discretized_gaussian_log_likelihood(torch.tensor([0.0, 255.0]), torch.zeros(2), torch.zeros(2))


def test_prior_kl_closed_form():
    sched = D.NoiseSchedule.from_name("linear", 50)
    x0 = torch.tensor([[0.5, -1.0]], dtype=torch.float64)
    a = sched.alphas_cumprod[-1]
    ref = sum(0.5 * (-torch.log(1 - a) + (1 - a) + a * xi**2 - 1) for xi in (0.5, -1.0))
    assert D.prior_kl(sched, x0).item() == pytest.approx(ref.item(), rel=1e-12)


# --------------------------------------------------------------------------------------------------------
# Learned variance (iDDPM eq. 15)
# --------------------------------------------------------------------------------------------------------


def test_learned_variance_endpoints_and_interpolation():
    sched = D.NoiseSchedule.from_name("cosine", 100)
    t = torch.arange(100)
    x_t, eps = torch.randn(100, 3, dtype=torch.float64), torch.randn(100, 3, dtype=torch.float64)
    lo = D.p_mean_variance(sched, eps, x_t, t, "learned_range", v=torch.zeros_like(eps))
    hi = D.p_mean_variance(sched, eps, x_t, t, "learned_range", v=torch.ones_like(eps))
    small = D.p_mean_variance(sched, eps, x_t, t, "fixed_small")
    large = D.p_mean_variance(sched, eps, x_t, t, "fixed_large")
    torch.testing.assert_close(lo["log_variance"], small["log_variance"].expand_as(eps))
    torch.testing.assert_close(hi["variance"], large["variance"].expand_as(eps))
    torch.testing.assert_close(lo["mean"], small["mean"])      # v changes only the variance
    mid = D.p_mean_variance(sched, eps, x_t, t, "learned_range", v=torch.full_like(eps, 0.5))
    geo_mean = (0.5 * (small["log_variance"] + large["log_variance"])).exp()   # β̃ via its clipped log
    torch.testing.assert_close(mid["variance"], geo_mean.expand_as(eps))
    # the model's raw output r ∈ [−1, 1] maps to v = (r + 1)/2
    e, v = D.split_model_output(torch.cat([eps, -torch.ones_like(eps)], 1))
    assert torch.equal(e, eps) and torch.all(v == 0)


def test_learned_variance_needs_v_and_even_channels():
    sched = D.NoiseSchedule.from_name("linear", 10)
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="learned_range"):
        D.p_mean_variance(sched, x, x, torch.zeros(2, dtype=torch.long), "learned_range")
    with pytest.raises(ValueError, match="2·C channels"):
        D.split_model_output(torch.randn(2, 3))


# --------------------------------------------------------------------------------------------------------
# The decomposition of App. 3 vs a direct Monte-Carlo estimate, for 1-D Gaussian data
# --------------------------------------------------------------------------------------------------------

M, S = 0.7, 0.5          # data N(M, S²)


class GaussianOptimalModel:
    """The exact ε* = E[ε | x_t] for data N(M, S²): x_t = √ᾱ x_0 + √(1−ᾱ) ε is jointly Gaussian with ε, so
    E[ε | x_t] = √(1−ᾱ)/(ᾱ S² + 1 − ᾱ) · (x_t − √ᾱ M). With ``learned`` it also outputs a v-channel
    (raw r = tanh(x_t)) so that the learned-variance path is exercised with an x-dependent Σ."""

    def __init__(self, sched, learned=False):
        self.sched, self.learned = sched, learned

    def __call__(self, x_t, t):
        a = D.extract(self.sched.alphas_cumprod, t, x_t)
        eps = (1 - a).sqrt() / (a * S**2 + 1 - a) * (x_t - a.sqrt() * M)
        return torch.cat([eps, torch.tanh(x_t)], 1) if self.learned else eps


def _direct_monte_carlo(model, sched, variance, n, g):
    """log q(x_{1:T}|x_0) − log p_θ(x_{0:T}) along n simulated forward chains (eq. 1), per chain."""
    x = M + S * torch.randn(n, 1, generator=g, dtype=torch.float64)
    log_q, log_p, xs = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64), [x]
    for t in range(sched.T):
        nxt = D.q_step(sched, xs[-1], t, torch.randn(n, 1, generator=g, dtype=torch.float64))
        b = sched.betas[t]
        log_q += D.gaussian_log_likelihood(nxt, (1 - b).sqrt() * xs[-1], b.log()).sum(1)
        xs.append(nxt)
    log_p += D.gaussian_log_likelihood(xs[-1], torch.zeros(1), torch.zeros(1)).sum(1)
    for t in range(sched.T):           # p_θ(x_{t} | x_{t+1}) at code step t (x_0 | x_1 at t = 0)
        p = D.model_p_mean_variance(model, sched, xs[t + 1], torch.full((n,), t), variance)
        log_p += D.gaussian_log_likelihood(xs[t], p["mean"], p["log_variance"]).sum(1)
    return log_q - log_p


@pytest.mark.parametrize("schedule,T,variance", [("cosine", 10, "fixed_small"), ("linear", 20, "fixed_large"),
                                                 ("cosine", 12, "learned_range")])
def test_decomposition_equals_direct_monte_carlo(schedule, T, variance):
    """E_q[log q(x_{1:T}|x_0) − log p_θ(x_{0:T})] = E[L_T + Σ L_{t−1} + L_0] (thesis App. 3).

    The data are continuous, so L_0 uses the Gaussian density decoder (``decoder="gaussian"``): then both sides
    are the same expectation and agree up to Monte-Carlo error. The linear chain (T = 20, β up to 0.1) ends
    at ᾱ_T ≈ 0.36, far from N(0, 1), so L_T ≈ 0.18 nats is a visible part of the check (dropping it fails).
    """
    kw = dict(beta_start=1e-3, beta_end=0.1) if schedule == "linear" else {}
    sched = D.NoiseSchedule.from_name(schedule, T, **kw)
    model = GaussianOptimalModel(sched, learned=variance == "learned_range")
    g = torch.Generator().manual_seed(0)
    direct = _direct_monte_carlo(model, sched, variance, 200_000, g)
    x0 = M + S * torch.randn(50_000, 1, generator=g, dtype=torch.float64)
    total = D.vlb_terms(model, sched, x0, variance, decoder="gaussian", max_batch=200_000, generator=g)["total"]
    se = math.sqrt(direct.var().item() / len(direct) + total.var().item() / len(total))
    assert abs(direct.mean().item() - total.mean().item()) < 4 * se + 1e-4, (direct.mean(), total.mean(), se)
    # and it is a bound: L_vlb ≥ −E log p_θ(x_0) ≥ H[N(M, S²)] = ½ log(2πe S²)
    assert total.mean().item() > 0.5 * math.log(2 * math.pi * math.e * S**2) - 4 * se


def test_vlb_terms_batching_does_not_change_the_result():
    sched = D.NoiseSchedule.from_name("linear", 30)
    model = GaussianOptimalModel(sched)
    x0 = (torch.randint(0, 256, (7, 1), generator=torch.Generator().manual_seed(3)).double() / 127.5 - 1)
    r1 = D.vlb_terms(model, sched, x0, generator=torch.Generator().manual_seed(5), max_batch=7 * 30)
    bpd = D.nll_bits_per_dim(model, sched, x0, batch_size=7, generator=torch.Generator().manual_seed(5), max_batch=7 * 30)
    torch.testing.assert_close(r1["bits_per_dim"], bpd)
    torch.testing.assert_close(r1["total"], r1["prior"] + r1["terms"].sum(1))
    torch.testing.assert_close(r1["bits_per_dim"], r1["total"] / math.log(2))
    # a smaller chunk draws the same number of normals in another order: different draws, same expectation
    r2 = D.vlb_terms(model, sched, x0, generator=torch.Generator().manual_seed(5), max_batch=7 * 4)
    assert r2["terms"].shape == (7, 30) and torch.isfinite(r2["total"]).all()


@pytest.mark.parametrize("learned", [False, True])
def test_vlb_terms_of_several_variances_share_one_network_pass_and_equal_separate_bounds(learned):
    """Σ_θ does not enter the network, so one pass per draw serves every variance: each result is the bound
    vlb_terms gives for that variance alone with the same generator, for half the network calls of two bounds."""
    sched = D.NoiseSchedule.from_name("cosine", 12)
    model, calls = GaussianOptimalModel(sched, learned=learned), []
    counted = lambda x_t, t: calls.append(len(x_t)) or model(x_t, t)
    x0 = (torch.randint(0, 256, (5, 1), generator=torch.Generator().manual_seed(1)).double() / 127.5 - 1)
    variances = ("learned_range",) if learned else ("fixed_small", "fixed_large")
    both = D.vlb_terms_per_variance(counted, sched, x0, variances, generator=torch.Generator().manual_seed(4),
                                    max_batch=5 * 4)
    assert sum(calls) == 5 * 12 and len(calls) == 3                  # every (sample, t) once, in 3 chunks of 4 steps
    for v in variances:
        alone = D.vlb_terms(model, sched, x0, v, generator=torch.Generator().manual_seed(4), max_batch=5 * 4)
        for key in ("terms", "total", "bits_per_dim", "x0_sq_error"):
            torch.testing.assert_close(both[v][key], alone[key], rtol=0, atol=0)
    if not learned:          # the two variances give different bounds: the loop does not reuse one for both
        assert not torch.allclose(both["fixed_small"]["total"], both["fixed_large"]["total"])
    with pytest.raises(ValueError, match="distinct names"):
        D.vlb_terms_per_variance(model, sched, x0, ("fixed_small", "fixed_small"))


# --------------------------------------------------------------------------------------------------------
# L_hybrid (iDDPM eq. 16) and importance-sampled L_vlb (§3.3)
# --------------------------------------------------------------------------------------------------------


def _fixed_output_model(out):
    return lambda x_t, t: out


def test_hybrid_vlb_term_gives_no_gradient_to_the_mean():
    sched = D.NoiseSchedule.from_name("cosine", 50)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, 256, (8, 4), generator=g).float() / 127.5 - 1
    out = (0.3 * torch.randn(8, 8, generator=g)).requires_grad_()
    t = torch.randint(0, 50, (8,), generator=g)
    t[0] = 0                                                    # include the decoder term L_0
    noise = torch.randn(8, 4, generator=g)
    terms = D.loss_hybrid(_fixed_output_model(out), sched, x0, t=t, noise=noise, return_terms=True)
    g_vb, = torch.autograd.grad(terms["vb"], out, retain_graph=True)
    g_mse, = torch.autograd.grad(terms["mse"], out, retain_graph=True)
    g_all, = torch.autograd.grad(terms["loss"], out)
    assert torch.all(g_vb[:, :4] == 0), "the L_vlb term must not train the mean (stop-gradient, iDDPM §3.1)"
    assert g_vb[:, 4:].abs().sum() > 0
    assert torch.all(g_mse[:, 4:] == 0)
    torch.testing.assert_close(g_all, g_mse + 0.001 * g_vb)
    # plain L_vlb, by contrast, trains the mean too
    vlb = D.loss_vlb(_fixed_output_model(out), sched, x0, t=t, noise=noise)
    g_plain, = torch.autograd.grad(vlb, out)
    assert g_plain[:, :4].abs().sum() > 0
    torch.testing.assert_close(terms["vb"], sched.T * vlb)      # same L_t, scaled by T


def test_hybrid_value_is_mse_plus_lambda_T_times_the_bits_per_dim_term():
    sched = D.NoiseSchedule.from_name("linear", 40)
    g = torch.Generator().manual_seed(1)
    x0 = torch.randint(0, 256, (5, 2, 2, 2), generator=g).double() / 127.5 - 1
    out = torch.randn(5, 4, 2, 2, generator=g, dtype=torch.float64)
    t, noise = torch.tensor([0, 3, 10, 20, 39]), torch.randn(5, 2, 2, 2, generator=g, dtype=torch.float64)
    terms = D.loss_hybrid(_fixed_output_model(out), sched, x0, lam=0.01, t=t, noise=noise, return_terms=True)
    x_t = D.q_sample(sched, x0, t, noise)
    eps, v = D.split_model_output(out)
    p = D.p_mean_variance(sched, eps, x_t, t, "learned_range", v=v)
    ref_vb = D.vlb_term(sched, x0, x_t, t, p) / (8 * math.log(2))
    assert terms["mse"].item() == pytest.approx(((eps - noise) ** 2).mean().item())
    assert terms["loss"].item() == pytest.approx(terms["mse"].item() + 0.01 * 40 * ref_vb.mean().item())


def test_importance_sampler_is_uniform_until_warm_then_proportional_to_rms_loss():
    s = D.ImportanceSampler(T=4, history=3, uniform_prob=0.0)
    for _ in range(3):
        s.update(torch.tensor([0, 1, 2]), torch.tensor([1.0, 2.0, 3.0]))
        assert not s.warm and torch.allclose(s.probs(), torch.full((4,), 0.25, dtype=torch.float64))
    s.update(torch.tensor([3, 3, 3]), torch.tensor([4.0, 4.0, 0.0]))       # t = 3: rms of (4, 4, 0) = √(32/3)
    assert s.warm
    rms = torch.tensor([1.0, 2.0, 3.0, math.sqrt(32 / 3)], dtype=torch.float64)
    torch.testing.assert_close(s.probs(), rms / rms.sum())
    s.update(torch.tensor([3]), torch.tensor([4.0]))                     # FIFO: now (4, 0, 4), same rms
    torch.testing.assert_close(s.probs(), rms / rms.sum())


def test_importance_weights_make_the_estimate_unbiased():
    T = 6
    s = D.ImportanceSampler(T, history=1, uniform_prob=0.1)
    L = torch.tensor([5.0, 1.0, 0.5, 0.2, 0.1, 0.05])
    s.update(torch.arange(T), L)
    t, w = s.sample(400_000, generator=torch.Generator().manual_seed(0))
    est = (L[t] * w).mean().item()
    assert est == pytest.approx(L.mean().item(), rel=0.01)
    # and its variance is lower than uniform sampling's
    assert (L[t] * w).var().item() < L.var(unbiased=False).item()


def test_loss_vlb_with_sampler_updates_history_and_checks_T():
    sched = D.NoiseSchedule.from_name("linear", 5)
    x0 = torch.zeros(4, 3)
    out = torch.zeros(4, 6)
    s = D.ImportanceSampler(5, history=2)
    D.loss_vlb(_fixed_output_model(out), sched, x0, sampler=s, generator=torch.Generator().manual_seed(0))
    assert s._count.sum().item() == 4
    with pytest.raises(ValueError, match="T=7"):
        D.loss_vlb(_fixed_output_model(out), sched, x0, sampler=D.ImportanceSampler(7))


def test_vlb_terms_over_selected_dimensions_add_up_to_the_whole_bound():
    """``dims`` counts only some dimensions (an inpainting model's face region): q and p_θ are diagonal, so the
    bound over a selection plus the bound over the rest is the whole bound, term by term, from the same draws."""
    sched = D.NoiseSchedule.from_name("cosine", 20)
    model = GaussianOptimalModel(sched)
    g = torch.Generator().manual_seed(3)
    x0 = torch.randint(0, 256, (6, 5), generator=g).double() / 127.5 - 1
    dims = (torch.rand(6, 5, generator=g) < 0.5).double()
    dims[:, 0], dims[:, 1] = 1, 0                             # every row has both parts
    run = lambda d: D.vlb_terms(model, sched, x0, generator=torch.Generator().manual_seed(5), max_batch=6 * 7, dims=d)
    whole, part, rest = run(None), run(dims), run(1 - dims)
    torch.testing.assert_close(run(torch.ones(5, dtype=torch.float64))["total"], whole["total"])   # broadcast
    for key in ("prior", "total"):
        torch.testing.assert_close(part[key] + rest[key], whole[key])
    torch.testing.assert_close(part["terms"] + rest["terms"], whole["terms"])
    torch.testing.assert_close(part["dims"], dims.sum(1))
    torch.testing.assert_close(part["bits_per_dim"], part["total"] / (dims.sum(1) * math.log(2)))
    torch.testing.assert_close(part["x0_sq_error"] * part["dims"][:, None] + rest["x0_sq_error"] * rest["dims"][:, None],
                               whole["x0_sq_error"] * 5)
    assert not torch.allclose(part["bits_per_dim"], whole["bits_per_dim"])
    with pytest.raises(ValueError, match="only 0 and 1"):
        run(dims * 0.5)
    with pytest.raises(ValueError, match=r"no dimension of sample\(s\) \[2\]"):
        run(torch.where(torch.arange(6)[:, None] == 2, 0.0, dims))
    with pytest.raises(ValueError, match="broadcastable"):
        run(dims[:, :3])
