"""dfs.elbo_study (notebook 03's wiring): data on the 8-bit grid, gradient noise scale, a tiny end-to-end run."""
import math

import pytest
import torch

from dfs import diffusion as D
from dfs import elbo_study as E


def test_digits_are_on_the_8bit_grid_and_the_split_is_disjoint_and_fixed():
    train, test = E.digits_8bit(flat=True, seed=0)
    assert train.shape[1] == 64 and len(train) + len(test) == 1797 and len(test) == round(0.2 * 1797)
    u = (train + 1) * 127.5
    assert torch.allclose(u, u.round(), atol=1e-4) and train.min() == -1 and train.max() == 1
    rows = {tuple(r.tolist()) for r in train}
    assert sum(tuple(r.tolist()) in rows for r in test) < 0.05 * len(test)   # load_digits has a few duplicates
    assert torch.equal(E.digits_8bit(flat=True, seed=0)[1], test)
    img, _ = E.digits_8bit(flat=False)
    assert img.shape[1:] == (1, 8, 8)


def test_quantize_8bit_rounds_to_the_nearest_level():
    x = torch.tensor([-1.0, -0.999, 0.0, 0.5, 1.0, 1.7])
    q = E.quantize_8bit(x)
    assert torch.allclose(q, torch.tensor([0, 0, 128, 191, 255, 255]) / 127.5 - 1)   # 127.5 rounds to even: 128


def test_gradient_noise_scale_recovers_a_known_value():
    """g_i = G + noise of per-coordinate variance s²/b: B_simple = b · tr(Σ_b)/|G|² = P s² / |G|²."""
    g = torch.Generator().manual_seed(0)
    P, n, b, s = 200, 4000, 32, 0.5
    G = torch.full((P,), 0.1, dtype=torch.float64)
    grads = G + s / math.sqrt(b) * torch.randn(n, P, generator=g, dtype=torch.float64)
    assert E.gradient_noise_scale(grads, b) == pytest.approx(P * s**2 / G.pow(2).sum().item(), rel=0.05)
    with pytest.raises(ValueError):
        E.gradient_noise_scale(grads[:1], b)


def test_learned_variance_models_output_twice_the_channels():
    cfg = E.study_config(True, hidden=16, layers=1)
    x, t = torch.randn(3, 64), torch.tensor([0, 5, 9])
    assert E.build_model(cfg, 64, False)(x, t).shape == (3, 64)
    assert E.build_model(cfg, 64, True)(x, t).shape == (3, 128)
    with pytest.raises(ValueError, match="mlp"):
        E.build_model(E.study_config(True, model="resnet"), 64, True)


def test_tiny_end_to_end_run(tmp_path):
    cfg = E.study_config(True, T=20, steps=30, hidden=32, layers=1, batch_size=16, probe_every=15, probe_batches=3,
                         n_samples=8, device="cpu")
    train, test = E.digits_8bit(flat=True)
    probe = E.GradientNoiseProbe(E.schedule_for("cosine", 20), train, 8, 3)
    runs = {loss: E.train_run(loss, "cosine", cfg, train, probe=probe if loss == "hybrid" else None)
            for loss in ("simple", "hybrid", "vlb")}
    assert [r["step"] for r in probe.records] == [0, 15]
    assert all(v > 0 for r in probe.records for k, v in r.items() if k != "step")
    b = E.bound(runs["hybrid"], test[:10])
    assert b["bits_per_dim"].shape == (10,) and b["terms"].shape == (20,)
    assert b["bits_per_dim"].mean().item() == pytest.approx(b["terms"].sum().item()
                                                             + (D.prior_kl(runs["hybrid"].sched, test[:10]).mean()
                                                                / (64 * math.log(2))).item(), rel=1e-4)
    for sampler, run in (("ddpm_small", runs["simple"]), ("ddpm_learned", runs["hybrid"]), ("ddim", runs["vlb"])):
        x = E.sample(run, 8, 5, sampler)
        assert x.shape == (8, 64) and x.abs().max() <= 1 + 1e-5
    with pytest.raises(ValueError, match="learned-variance"):
        E.sample(runs["simple"], 4, 5, "ddpm_learned")
    q = E.quality_vs_steps({"ddim": runs["simple"]}, (5, 20), test[:50], 8)
    assert set(q["ddim"]) == {5, 20} and set(q["samples"]["ddim"]) == {5, 20}


def test_mmd_is_small_for_the_same_law_and_large_for_a_shifted_one():
    train, test = E.digits_8bit()
    same = E.mmd(train[:300], test)
    shifted = E.mmd((train[:300] + 0.5).clamp(-1, 1), test)
    assert abs(same) < 0.01 < shifted


def test_paired_difference_decides_by_the_standard_error():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(400, generator=g) * 5                      # large shared variation cancels in the pairs
    noise = lambda: 0.1 * torch.randn(400, generator=g)          # noqa: E731
    d, se, v = E.paired_difference(base - 0.1 + noise(), base + noise())
    assert v == "yes" and d == pytest.approx(-0.1, abs=4 * se) and se < 0.01
    assert E.paired_difference(base + 0.1, base + noise())[2] == "no"
    with pytest.raises(ValueError):
        E.paired_difference(base, base[:10])


class _GaussianEpsStar(torch.nn.Module):
    """The exact ε* of data x_0 ~ N(m, s² I): E[x_0 | x_t] = m + √ᾱ s²/(ᾱ s² + 1 − ᾱ) · (x_t − √ᾱ m)."""

    def __init__(self, sched, m, s):
        super().__init__()
        self.abar, self.m, self.s2 = sched.alphas_cumprod, m, s ** 2

    def forward(self, x_t, t):
        a = self.abar[t][:, None]
        x0_hat = self.m + a.sqrt() * self.s2 / (a * self.s2 + 1 - a) * (x_t - a.sqrt() * self.m)
        return (x_t - a.sqrt() * x0_hat) / (1 - a).sqrt()


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
def test_rate_distortion_of_gaussian_data_matches_the_closed_form(variance):
    # x_0 ~ N(m, s²) per dimension and the exact ε*: x̂_0 is the posterior mean, so E‖x_0 − x̂_0(x_t)‖²/D is the
    # posterior variance v_t = s²(1 − ᾱ_t)/(ᾱ_t s² + 1 − ᾱ_t), and every term of Ho et al. eq. 5 is closed form:
    #   L_{t−1} = ½(log σ_t² − log β̃_t + β̃_t/σ_t² − 1) + (√ᾱ_{t−1} β_t/(1 − ᾱ_t))² v_t/(2σ_t²)     (t ≥ 2)
    #   L_0     = ½ log(2π σ_1²) + v_1/(2σ_1²)      (μ̃_1 = x̂_0: the posterior mean's x_0 coefficient is 1 at t = 1)
    #   L_T     = ½(−log(1 − ᾱ_T) + (1 − ᾱ_T) + ᾱ_T (m² + s²) − 1)
    # so R(t) = L_T + Σ_{s≥t} L_s and Dist(t) = √v_t are known at every t (per dimension, in nats → bits).
    T, B, s = 20, 4000, 0.5
    m = torch.tensor([0.3, -0.6, 0.0, 1.0], dtype=torch.float64)
    sched = D.NoiseSchedule.from_name("cosine", T)
    model = _GaussianEpsStar(sched, m, s)
    x0 = m + s * torch.randn(B, len(m), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out = E.rate_distortion(model, sched, x0, variance, decoder="gaussian", seed=2)

    abar, beta = sched.alphas_cumprod, sched.betas
    v = s ** 2 * (1 - abar) / (abar * s ** 2 + 1 - abar)                     # code step k ↔ the paper's t = k + 1
    log_var = sched.posterior_log_variance_clipped if variance == "fixed_small" else beta.log()
    var = log_var.exp()
    terms = 0.5 * (log_var - sched.posterior_variance.clamp(min=1e-300).log() + sched.posterior_variance / var - 1) \
        + sched.posterior_mean_coef1 ** 2 * v / (2 * var)
    terms[0] = 0.5 * math.log(2 * math.pi) + 0.5 * log_var[0] + v[0] / (2 * var[0])
    prior = 0.5 * (-(1 - abar[-1]).log() + (1 - abar[-1]) + abar[-1] * (m ** 2 + s ** 2).mean() - 1)
    rate = (prior + torch.cat([torch.zeros(1, dtype=torch.float64), terms.flip(0).cumsum(0)])) / math.log(2)
    dist2 = torch.cat([v.flip(0), torch.zeros(1, dtype=torch.float64)])

    assert out["t"].tolist() == list(range(T, -1, -1))
    se_rate = out["rate_per_sample"].std(0) / math.sqrt(B)
    se_dist2 = out["sq_error_per_sample"].std(0) / math.sqrt(B)
    assert torch.all((out["rate"] - rate).abs() <= 4 * se_rate + 1e-9), (out["rate"] - rate) / se_rate
    assert torch.all((out["distortion"] ** 2 - dist2).abs() <= 4 * se_dist2 + 1e-12)
    assert out["distortion"][-1] == 0 and torch.all(out["distortion"][:-1] > 0)
    # the pairing of t with x̂_0 is tested: shifting the closed form by one step is far outside the tolerance
    assert ((out["distortion"][1:-1] ** 2 - dist2[:-2]).abs() / se_dist2[1:-1]).max() > 10
    assert ((out["rate"][1:] - rate[:-1]).abs() / se_rate[1:]).max() > 10


def test_rate_distortion_total_is_the_bound_and_the_rate_only_grows():
    cfg = E.study_config(True, T=30, hidden=32, layers=1)
    _, test = E.digits_8bit(flat=True)
    torch.manual_seed(0)
    sched = E.schedule_for("cosine", cfg.T)
    run = E.Run("untrained", "hybrid", "cosine", sched, "learned_range", E.build_model(cfg, 64, True).eval(),
                (64,), [], 0.0)
    out = E.rate_distortion(run.model, sched, test[:40], "learned_range", clip_x0=1.0, seed=3, batch_size=16)
    b = E.bound(run, test[:40], seed=3, batch_size=16)
    assert torch.allclose(out["rate_per_sample"][:, -1], b["bits_per_dim"].double(), rtol=1e-6)
    assert out["rate"][0].item() == pytest.approx((D.prior_kl(sched, test[:40]).mean() / (64 * math.log(2))).item(),
                                                  rel=1e-5)
    assert torch.all(out["rate_per_sample"].diff(dim=1) >= 0)                 # KL terms and −log P(bin) are ≥ 0
    assert out["distortion"][:-1].max() <= 2 + 1e-6                          # clipped x̂_0 and x_0 both in [−1, 1]
    with pytest.raises(ValueError, match="at least one sample"):
        E.rate_distortion(run.model, sched, test[:0], "learned_range")


def test_rate_share_below_and_its_interval():
    # two samples: rates 0 → 4 → 10 and 0 → 6 → 10 bits/dim at t = 2, 1, 0; the last step costs (4 + 6)/... = 0.5
    rd = {"t": torch.tensor([2, 1, 0]),
          "rate_per_sample": torch.tensor([[0.0, 4.0, 10.0], [0.0, 6.0, 10.0]], dtype=torch.float64),
          "sq_error_per_sample": torch.tensor([[0.5, 0.09, 0.0], [0.5, 0.01, 0.0]], dtype=torch.float64)}
    out = E.rate_share_below(rd, 1, n_boot=2000)
    assert out["share"] == pytest.approx(0.5) and out["distortion"] == pytest.approx(math.sqrt(0.05))
    assert out["low"] == pytest.approx(0.4) and out["high"] == pytest.approx(0.6)   # the resamples: 0.4, 0.5, 0.6
    assert E.rate_share_below(rd, 2)["share"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="not a step"):
        E.rate_share_below(rd, 5)


def test_curve_knee_finds_the_corner_and_refuses_degenerate_curves():
    x = torch.tensor([0.0, 0.1, 0.5, 1.0])
    assert E.curve_knee(x, torch.tensor([1.0, 0.1, 0.05, 0.0])) == 1
    assert E.curve_knee(10 * x, 3 * torch.tensor([1.0, 0.6, 0.1, 0.0])) == 2      # scale-free
    with pytest.raises(ValueError, match="end points"):
        E.curve_knee(x, torch.ones(4))
    with pytest.raises(ValueError, match="length"):
        E.curve_knee(x[:2], x[:2])
