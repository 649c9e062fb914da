"""Timestep respacing (iDDPM §4): a K-step chain that reproduces the T-step chain's ᾱ at the kept steps."""
import pytest
import torch

from dfs import diffusion as D


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("K", [1, 10, 50, 250, 1000])
def test_respaced_alpha_bar_reproduces_the_original_at_kept_steps(name, K):
    sched = D.NoiseSchedule.from_name(name, 1000)
    new, S = D.respace(sched, K)
    assert new.T == len(S) == K
    torch.testing.assert_close(new.alphas_cumprod, sched.alphas_cumprod[S], rtol=1e-10, atol=1e-14)
    # β' from ᾱ: 1 − β'_i = ᾱ_{S_i}/ᾱ_{S_{i−1}}, a product of the skipped α's
    for i in range(1, min(K, 5)):
        prod = torch.prod(sched.alphas[S[i - 1] + 1:S[i] + 1])
        assert new.alphas[i].item() == pytest.approx(prod.item(), rel=1e-10)


def test_respacing_all_steps_is_the_identity():
    sched = D.NoiseSchedule.from_name("cosine", 200)
    new, S = D.respace(sched, 200)
    assert torch.equal(S, torch.arange(200))
    torch.testing.assert_close(new.betas, sched.betas, rtol=1e-10, atol=1e-15)
    torch.testing.assert_close(new.posterior_variance, sched.posterior_variance, rtol=1e-8, atol=1e-15)


def test_space_timesteps_is_even_and_keeps_both_ends():
    assert D.space_timesteps(1000, 10) == [0, 111, 222, 333, 444, 555, 666, 777, 888, 999]
    assert D.space_timesteps(1000, 1) == [999]
    for K in (2, 3, 25, 999):
        s = D.space_timesteps(1000, K)
        assert len(s) == K and s[0] == 0 and s[-1] == 999
    with pytest.raises(ValueError, match="integer in"):
        D.space_timesteps(100, 101)
    with pytest.raises(ValueError, match="subset"):
        D.respace(D.NoiseSchedule.from_name("linear", 10), [3, 10])


def test_respaced_posterior_is_the_exact_posterior_between_kept_steps():
    """q(x_{S_{i−1}} | x_{S_i}, x_0) computed in closed form from the original ᾱ equals the respaced eq. 4."""
    sched = D.NoiseSchedule.from_name("linear", 1000)
    new, S = D.respace(sched, 25)
    i = torch.arange(1, 25)
    a, a_prev = sched.alphas_cumprod[S[i]], sched.alphas_cumprod[S[i - 1]]
    beta = 1 - a / a_prev
    torch.testing.assert_close(new.posterior_variance[i], (1 - a_prev) / (1 - a) * beta)
    torch.testing.assert_close(new.posterior_mean_coef1[i], a_prev.sqrt() * beta / (1 - a))


def test_respaced_model_feeds_original_timesteps():
    seen = []
    model = D.RespacedModel(lambda x, t: (seen.append(t.clone()), x)[1], torch.tensor([0, 40, 99]))
    model(torch.zeros(3, 2), torch.tensor([2, 0, 1]))
    assert seen[0].tolist() == [99, 0, 40]


def _linear_eps(x, t):
    return 0.3 * x + 0.001 * t.float()[:, None]


def test_ddim_on_respaced_chain_equals_ddim_steps_on_the_original():
    """DDIM reads only ᾱ, so K steps of the respaced chain are the same numbers as DDIM jumps on the T chain."""
    sched = D.NoiseSchedule.from_name("cosine", 1000)
    new, S = D.respace(sched, 20)
    x_T = torch.randn(6, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ours = D.ddim_sample(D.RespacedModel(_linear_eps, S), new, x_T.shape, steps=20, x_T=x_T, progress=False)
    x = x_T
    ts = S.flip(0).tolist()
    for k, t in enumerate(ts):
        tt = torch.full((6,), t)
        x = D.ddim_step(sched, _linear_eps(x, tt), x, tt, ts[k + 1] if k + 1 < len(ts) else -1)
    torch.testing.assert_close(ours, x)


@pytest.mark.parametrize("variance", ["fixed_small", "learned_range"])
def test_ddpm_on_respaced_chain_steps_between_kept_timesteps(variance):
    """One respaced DDPM step from S_i is a Gaussian with the eq. 4 posterior between S_i and S_{i−1}."""
    sched = D.NoiseSchedule.from_name("linear", 1000)
    new, S = D.respace(sched, 10)
    x_t = torch.randn(4, 3, dtype=torch.float64)
    eps = torch.randn(4, 3, dtype=torch.float64)
    v = torch.full_like(eps, 0.25) if variance == "learned_range" else None
    i = torch.full((4,), 5)
    p = D.p_mean_variance(new, eps, x_t, i, variance, v=v)
    a, a_prev = sched.alphas_cumprod[S[5]], sched.alphas_cumprod[S[4]]
    beta = 1 - a / a_prev
    x0 = (x_t - (1 - a).sqrt() * eps) / a.sqrt()
    mean = a_prev.sqrt() * beta / (1 - a) * x0 + (1 - beta).sqrt() * (1 - a_prev) / (1 - a) * x_t
    torch.testing.assert_close(p["mean"], mean)
    beta_tilde = (1 - a_prev) / (1 - a) * beta
    var = beta_tilde if v is None else beta ** 0.25 * beta_tilde ** 0.75      # eq. 15 with v = 1/4
    torch.testing.assert_close(p["variance"], var.expand_as(p["variance"]))


def test_learned_variance_sampling_runs_on_a_respaced_chain():
    sched = D.NoiseSchedule.from_name("cosine", 100)
    new, S = D.respace(sched, 10)
    model = D.RespacedModel(lambda x, t: torch.cat([0.5 * x, torch.zeros_like(x)], 1), S)
    g = torch.Generator().manual_seed(0)
    x = D.ddpm_sample(model, new, (5, 2), generator=g, variance="learned_range", progress=False)
    assert x.shape == (5, 2) and torch.isfinite(x).all()
