"""dfs.toy: the Gaussian mixture's closed forms, the exact ε-model, samplers and sample distances.

References are independent of the code under test: torch.autograd, scipy, Monte Carlo of eq. 2, Gaussian
conditioning, diffusers' timestep embedding, brute-force loops.
"""
import math

import numpy as np
import pytest
import torch
from scipy import stats

from dfs.diffusion import NoiseSchedule, ddim_sample, ddpm_sample, loss_simple, q_sample
from dfs.toy import (DATASETS, GaussianMixture, MLPEpsModel, default_gmm, eight_gaussians_gmm, eps_error_per_t,
                     eps_to_score, exact_eps_model, grid_points, langevin, langevin_step, make_toy, mmd_rbf,
                     sinusoidal_embedding, sliced_wasserstein, train_toy)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(autouse=True)
def one_thread():
    """Everything here is tiny: one torch thread is faster, and much faster on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- Gaussian mixture ------------------------------------------------------------------------------------


def test_gmm_log_prob_matches_scipy():
    gmm = default_gmm()
    x = 2 * torch.randn(50, 2, generator=gen(), dtype=torch.float64)
    ref = sum(w * stats.multivariate_normal(m.numpy(), s**2 * np.eye(2)).pdf(x.numpy())
              for w, m, s in zip(gmm.weights.numpy(), gmm.means, gmm.stds.numpy()))
    np.testing.assert_allclose(gmm.log_prob(x).numpy(), np.log(ref), rtol=1e-10)


def test_gmm_score_matches_autograd():
    gmm = GaussianMixture(torch.randn(4, 3, generator=gen(1), dtype=torch.float64), [0.3, 0.5, 1.0, 0.2],
                          [0.1, 0.2, 0.3, 0.4])
    x = (3 * torch.randn(200, 3, generator=gen(2), dtype=torch.float64)).requires_grad_()
    (grad,) = torch.autograd.grad(gmm.log_prob(x).sum(), x)
    torch.testing.assert_close(gmm.score(x.detach()), grad, rtol=1e-9, atol=1e-9)


def test_gmm_sample_matches_its_moments():
    gmm = default_gmm()
    x, k = gmm.sample(200_000, gen(), return_labels=True)
    np.testing.assert_allclose(np.bincount(k.numpy(), minlength=5) / len(k), gmm.weights.numpy(), atol=5e-3)
    torch.testing.assert_close(x.double().mean(0), gmm.weights @ gmm.means, atol=1e-2, rtol=0)
    torch.testing.assert_close(torch.cov(x.double().T), gmm.covariance(), atol=2e-2, rtol=0)


@pytest.mark.parametrize("abar", [0.9, 0.4, 0.05])
def test_noised_gmm_matches_monte_carlo_of_eq2(abar):
    gmm = default_gmm()
    x0 = gmm.sample(100_000, gen(3))
    noise = torch.randn(x0.shape, generator=gen(4))
    x_t = math.sqrt(abar) * x0.double() + math.sqrt(1 - abar) * noise.double()   # eq. 2 by hand
    q_t = gmm.noised(abar)
    # moments: Cov q_t = ᾱ Cov p + (1 − ᾱ) I straight from eq. 2
    torch.testing.assert_close(q_t.covariance(), abar * gmm.covariance() + (1 - abar) * torch.eye(2))
    torch.testing.assert_close(torch.cov(x_t.T), q_t.covariance(), atol=2e-2, rtol=0)
    torch.testing.assert_close(x_t.mean(0), q_t.weights @ q_t.means, atol=1e-2, rtol=0)
    # the noised samples are more likely under q_t than under a neighbouring ᾱ (Gibbs' inequality)
    # (paired per sample: the mean log-likelihood ratio estimates KL(q_t ‖ q_wrong) > 0; demand z > 4).
    # At small ᾱ both mixtures are ≈ N(0, I) and the KL is too small to resolve with 10⁵ samples.
    ll = q_t.log_prob(x_t)
    for wrong in (abar * 0.5, min(abar * 1.6, 0.99)) if abar > 0.3 else ():
        diff = ll - gmm.noised(wrong).log_prob(x_t)
        assert diff.mean() > 4 * diff.std() / math.sqrt(len(diff))
    # and fresh draws of q_t are indistinguishable from them
    assert abs(mmd_rbf(q_t.sample(2000, gen(5)), x_t[:2000].float())) < 3e-3


def test_gmm_rejects_bad_parameters():
    with pytest.raises(ValueError, match="shape"):
        GaussianMixture([0.0, 1.0], [1.0])
    with pytest.raises(ValueError, match="std"):
        GaussianMixture([[0.0, 0.0]], [-1.0])
    with pytest.raises(ValueError, match="weights"):
        GaussianMixture([[0.0, 0.0], [1.0, 1.0]], [1.0, 1.0], [1.0, -1.0])
    with pytest.raises(ValueError, match="alpha_bar"):
        default_gmm().noised(0.0)


# --- the exact ε-model -----------------------------------------------------------------------------------


def test_exact_eps_equals_gaussian_posterior_mean():
    """1-D Gaussian data x_0 ~ N(m, s²): (x_t, ε) is jointly Gaussian with Cov(ε, x_t) = √(1−ᾱ),
    Var x_t = ᾱ s² + 1 − ᾱ, so E[ε | x_t] = √(1−ᾱ)(x_t − √ᾱ m)/(ᾱ s² + 1 − ᾱ)."""
    m, s = 0.7, 0.4
    sched = NoiseSchedule.from_name("cosine", 1000)
    model = exact_eps_model(GaussianMixture([[m]], [s]), sched)
    t = torch.tensor([0, 10, 250, 500, 900, 999])
    x_t = torch.linspace(-3, 3, len(t), dtype=torch.float64)[:, None]
    a = sched.alphas_cumprod[t][:, None]
    expected = (1 - a).sqrt() * (x_t - a.sqrt() * m) / (a * s**2 + 1 - a)
    torch.testing.assert_close(model(x_t, t), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("t", [50, 300, 700])
def test_exact_eps_is_bayes_optimal_on_gmm(t):
    """E[ε | x_t] is the only function whose residual ε − f(x_t) is orthogonal to every function of x_t."""
    gmm, sched = default_gmm(), NoiseSchedule.from_name("linear", 1000)
    x0 = gmm.sample(100_000, gen(6))
    eps = torch.randn(x0.shape, generator=gen(7))
    tt = torch.full((len(x0),), t)
    x_t = q_sample(sched, x0, tt, eps)

    def max_z(model):  # largest |z-score| of E[(ε − f(x_t))_i · g_j(x_t)] over a few test functions g
        r = eps - model(x_t, tt)
        tests = [x_t, torch.tanh(2 * x_t), torch.ones_like(x_t), x_t.roll(1, dims=1)]
        z = [(r * g).mean(0) / ((r * g).std(0) / math.sqrt(len(r))) for g in tests]
        return torch.cat(z).abs().max().item()

    assert max_z(exact_eps_model(gmm, sched)) < 4.5
    assert max_z(exact_eps_model(eight_gaussians_gmm(), sched)) > 10           # another mixture's ε* is not
    mse = ((eps - exact_eps_model(gmm, sched)(x_t, tt)) ** 2).mean()
    assert mse < ((eps - 1.1 * exact_eps_model(gmm, sched)(x_t, tt)) ** 2).mean()


def test_eps_to_score_inverts_the_exact_model():
    gmm, sched = default_gmm(), NoiseSchedule.from_name("linear", 1000)
    x = torch.randn(64, 2, generator=gen(), dtype=torch.float64)
    t = torch.full((64,), 400)
    model = exact_eps_model(gmm, sched)
    torch.testing.assert_close(eps_to_score(model(x, t), sched, t),
                               gmm.noised(sched.alphas_cumprod[400].item()).score(x))


def test_ddpm_and_ddim_with_exact_eps_reproduce_the_gmm():
    gmm = default_gmm()
    sched = NoiseSchedule.from_name("linear", 200, scale_to_T=True)
    model = exact_eps_model(gmm, sched)
    ref = gmm.sample(1500, gen(8))
    x_ddpm = ddpm_sample(model, sched, (1500, 2), generator=gen(9), progress=False)
    x_ddim = ddim_sample(model, sched, (1500, 2), steps=50, generator=gen(10), progress=False)
    d_ddpm, d_ddim = mmd_rbf(x_ddpm, ref), mmd_rbf(x_ddim, ref)
    d_wrong = mmd_rbf(eight_gaussians_gmm().sample(1500, gen(11)), ref)
    assert d_ddpm < 5e-3 and d_ddim < 5e-3, (d_ddpm, d_ddim)
    assert d_wrong > 20 * 5e-3
    # the mixture weights come out right too: nearest-component frequencies
    comp = torch.cdist(x_ddpm.double(), gmm.means).argmin(1)
    np.testing.assert_allclose(np.bincount(comp.numpy(), minlength=5) / 1500, gmm.weights.numpy(), atol=0.04)


# --- Langevin dynamics -----------------------------------------------------------------------------------


def test_langevin_with_exact_score_keeps_the_gmm():
    gmm = default_gmm()
    x0 = gmm.sample(1500, gen(12))
    ref = gmm.sample(1500, gen(13))
    x1 = langevin(gmm.score, x0, step_size=3e-3, n_steps=600, generator=gen(14))
    assert (x1 - x0).norm(dim=1).mean() > 0.2                       # the particles did move (≈ a component std)
    assert abs(mmd_rbf(x1, ref) - mmd_rbf(x0, ref)) < 3e-3          # ... but the distribution did not
    # a wrong score (a shifted mixture's) does move the distribution: the test can fail
    shifted = GaussianMixture(gmm.means + 0.5, gmm.stds, gmm.weights)
    x_wrong = langevin(shifted.score, x0, step_size=3e-3, n_steps=600, generator=gen(14))
    assert mmd_rbf(x_wrong, ref) > 0.05


def test_langevin_noise_has_std_sqrt_delta():
    """With a zero score one step adds N(0, δ I): the variance of the increment is δ, not δ²."""
    x0 = torch.zeros(200_000, 2)
    x1 = langevin(lambda x: torch.zeros_like(x), x0, step_size=0.04, n_steps=1, generator=gen())
    assert abs(x1.var().item() - 0.04) < 1e-3
    # and on N(0, 1) (score −x) the drift is δ/2·score: the chain's stationary variance is 1/(1 − δ/4)
    x = langevin(lambda x: -x, torch.zeros(100_000, 1), step_size=0.2, n_steps=100, generator=gen(1))
    assert abs(x.var().item() - 1 / (1 - 0.2 / 4)) < 0.02


def test_langevin_is_its_step_iterated():
    """langevin_step is x + (δ/2)·score + √δ·z with the noise given; langevin draws z from its generator and steps."""
    x, z = torch.tensor([[1.0, -2.0]]), torch.tensor([[0.5, 0.25]])
    assert torch.allclose(langevin_step(lambda x: -x, x, 0.04, z), torch.tensor([[0.98 + 0.1, -1.96 + 0.05]]))
    x0, g = torch.randn(5, 2, generator=gen(3)), gen(4)
    by_hand = x0
    for _ in range(3):
        by_hand = langevin_step(lambda x: -x, by_hand, 0.1, torch.randn(5, 2, generator=g))
    assert torch.equal(langevin(lambda x: -x, x0, step_size=0.1, n_steps=3, generator=gen(4)), by_hand)


def test_langevin_rejects_bad_step():
    with pytest.raises(ValueError, match="step_size"):
        langevin(lambda x: x, torch.zeros(3, 2), step_size=0.0, n_steps=1)


# --- distances -------------------------------------------------------------------------------------------


def test_mmd_matches_brute_force_unbiased_estimator():
    x, y = torch.randn(7, 2, generator=gen(1)), torch.randn(9, 2, generator=gen(2)) + 0.3
    h = 0.7

    def k(a, b):
        return math.exp(-float(((a - b) ** 2).sum()) / (2 * h * h))

    xx = sum(k(x[i], x[j]) for i in range(7) for j in range(7) if i != j) / (7 * 6)
    yy = sum(k(y[i], y[j]) for i in range(9) for j in range(9) if i != j) / (9 * 8)
    xy = sum(k(x[i], y[j]) for i in range(7) for j in range(9)) / (7 * 9)
    assert mmd_rbf(x, y, bandwidths=(h,)).item() == pytest.approx(xx + yy - 2 * xy, rel=1e-6)


def test_sliced_wasserstein_in_1d_equals_scipy():
    """In one dimension every projection is ±identity, so SW_1 is the exact W_1."""
    x, y = torch.randn(500, 1, generator=gen(1)), 2 * torch.rand(500, 1, generator=gen(2))
    ref = stats.wasserstein_distance(x[:, 0].numpy(), y[:, 0].numpy())
    assert sliced_wasserstein(x, y, n_projections=4, generator=gen(), p=1).item() == pytest.approx(ref, rel=1e-9)
    y_long = 2 * torch.rand(1500, 1, generator=gen(3))   # unequal sizes go through quantiles: close, not exact
    ref = stats.wasserstein_distance(x[:, 0].numpy(), y_long[:, 0].numpy())
    assert sliced_wasserstein(x, y_long, n_projections=4, generator=gen(), p=1).item() == pytest.approx(ref, rel=0.05)


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_distances_small_for_same_law_and_large_for_shifted(name):
    x, y = make_toy(name, 1500, gen(1)), make_toy(name, 1500, gen(2))
    shifted = y + torch.tensor([0.5, 0.0])
    assert abs(mmd_rbf(x, y)) < 3e-3 < 10 * 3e-3 < mmd_rbf(x, shifted)
    sw_same = sliced_wasserstein(x, y, generator=gen())
    assert sw_same < 0.12 and sliced_wasserstein(x, shifted, generator=gen()) > 2.5 * sw_same


# --- datasets, embedding, MLP, training ------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_datasets_are_roughly_standardised_and_seeded(name):
    x = make_toy(name, 20_000, gen(1))
    assert x.shape == (20_000, 2) and x.dtype == torch.float32
    assert x.mean(0).abs().max() < 0.2 and 0.5 < x.std(0).min() and x.std(0).max() < 1.5
    torch.testing.assert_close(make_toy(name, 100, gen(5)), make_toy(name, 100, gen(5)))


def test_unknown_dataset_raises_with_the_names():
    with pytest.raises(ValueError, match="swiss_roll"):
        make_toy("swissroll", 10)
    with pytest.raises(ValueError, match="unknown toy dataset"):
        train_toy("spiral", steps=1, progress=False)


def test_sinusoidal_embedding_values_and_diffusers():
    from diffusers.models.embeddings import get_timestep_embedding

    t = torch.tensor([0, 1, 17, 999])
    emb = sinusoidal_embedding(t, 32)
    assert emb.shape == (4, 32)
    torch.testing.assert_close(emb[0], torch.cat([torch.zeros(16), torch.ones(16)]))
    # frequency 0 is 1 and the last is 1/10000: sin(t) and sin(t/10000)
    torch.testing.assert_close(emb[:, 0], torch.sin(t.float()))
    torch.testing.assert_close(emb[:, 15], torch.sin(t.float() / 10000))
    torch.testing.assert_close(emb, get_timestep_embedding(t, 32, flip_sin_to_cos=False, downscale_freq_shift=1))
    with pytest.raises(ValueError, match="even"):
        sinusoidal_embedding(t, 31)


def test_mlp_eps_model_shapes_and_time_dependence():
    model = MLPEpsModel(dim=3, hidden=32, layers=2, time_dim=16)
    x = torch.randn(5, 3)
    out0, out1 = model(x, torch.zeros(5, dtype=torch.long)), model(x, torch.full((5,), 500))
    assert out0.shape == (5, 3) and not torch.allclose(out0, out1)


def test_tiny_mlp_trains_towards_the_exact_loss():
    sched = NoiseSchedule.from_name("linear", 1000)
    model, history = train_toy("gmm", sched, steps=200, batch_size=256, lr=2e-3, hidden=64, layers=2,
                               progress=False, log_every=50, seed=0)
    first, last = history[0]["loss"], history[-1]["loss"]
    assert len(history) == 4 and last < 0.85 * first
    # evaluated on fresh data, the trained model is close to (and not better than) the exact ε*'s L_simple
    x0 = default_gmm().sample(20_000, gen(3))
    with torch.no_grad():
        l_model = loss_simple(model, sched, x0, generator=gen(4)).item()
    l_exact = loss_simple(exact_eps_model(default_gmm(), sched), sched, x0, generator=gen(4)).item()
    assert l_exact - 0.01 < l_model < l_exact + 0.1 and l_model < 0.5, (l_model, l_exact)
    # a tensor works as data too
    _, hist = train_toy(make_toy("two_moons", 512, gen()), sched, steps=20, progress=False, log_every=10)
    assert len(hist) == 2


# --- dfs.diffusion's int-timestep fast path (added for the sampler benchmark) ----------------------------


def test_int_timestep_fast_path_equals_tensor_path():
    from dfs.diffusion import ddim_step, ddpm_step, extract

    sched = NoiseSchedule.from_name("cosine", 100)
    x, eps, z = (torch.randn(6, 2, generator=gen(i)) for i in range(3))
    for t in (0, 1, 57, 99):
        tt = torch.full((6,), t)
        torch.testing.assert_close(extract(sched.alphas_cumprod, t, x), extract(sched.alphas_cumprod, tt, x),
                                   rtol=0, atol=0)
        torch.testing.assert_close(ddpm_step(sched, eps, x, t, z), ddpm_step(sched, eps, x, tt, z), rtol=0, atol=0)
        torch.testing.assert_close(ddim_step(sched, eps, x, t, t - 1, eta=0.5, noise=z),
                                   ddim_step(sched, eps, x, tt, t - 1, eta=0.5, noise=z), rtol=0, atol=0)
    with pytest.raises(ValueError, match="0-based"):
        ddpm_step(sched, eps, x, 100, z)
    with pytest.raises(ValueError, match="t_prev"):
        ddim_step(sched, eps, x, 5, 5)


# --- notebook helpers ------------------------------------------------------------------------------------


def test_classify_recovers_labels_of_separated_components():
    gmm = GaussianMixture([[-3.0, 0.0], [3.0, 0.0], [0.0, 4.0]], [0.5, 0.5, 0.5], [0.2, 0.3, 0.5])
    x, k = gmm.sample(5000, gen(), return_labels=True)
    assert (gmm.classify(x) == k).float().mean() > 0.99
    # equal-width components: the Bayes rule is a weighted nearest-mean rule, the midpoint goes to the heavier one
    assert gmm.classify(torch.tensor([[0.0, 0.0]])).item() == 1


def test_eps_error_per_t():
    gmm, sched = default_gmm(), NoiseSchedule.from_name("linear", 1000)
    exact = exact_eps_model(gmm, sched)
    x0 = gmm.sample(4000, gen())
    ts = [10, 200, 999]
    zero = lambda x, t: torch.zeros_like(x)  # noqa: E731
    torch.testing.assert_close(eps_error_per_t(exact, exact, sched, x0, ts, gen(1)), torch.zeros(3, dtype=x0.dtype))
    torch.testing.assert_close(eps_error_per_t(zero, exact, sched, x0, ts, gen(1), relative=True),
                               torch.ones(3, dtype=x0.dtype))
    # excess L_simple: L_simple(model, t) − L_simple(ε*, t) = E‖ε_model − ε*‖²/D (ε − ε* ⟂ functions of x_t)
    for t in (50, 400):
        x_big = default_gmm().sample(100_000, gen(2))
        tt = torch.full((len(x_big),), t)
        excess = (loss_simple(zero, sched, x_big, t=tt, generator=gen(3))
                  - loss_simple(exact, sched, x_big, t=tt, generator=gen(3))).item()
        assert eps_error_per_t(zero, exact, sched, x_big, [t], gen(4)).item() == pytest.approx(excess, rel=0.03)
    wrong = eps_error_per_t(exact_eps_model(eight_gaussians_gmm(), sched), exact, sched, x0, ts, gen(1), relative=True)
    assert wrong[0] > 0.1 and wrong[2] < 0.05 * wrong[0]       # all data laws look alike at t = T


def test_grid_points():
    p = grid_points(2.0, 5)
    assert p.shape == (25, 2)
    torch.testing.assert_close(p[0], torch.tensor([-2.0, -2.0]))
    torch.testing.assert_close(p[1], torch.tensor([-1.0, -2.0]))
    torch.testing.assert_close(p[-1], torch.tensor([2.0, 2.0]))
