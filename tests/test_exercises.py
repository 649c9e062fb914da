"""Each exercise checker passes the reference implementation and fails typical wrong ones, each with the message
of the property it breaks (the wrong ones include the thesis draft's slips from dfs.errata)."""
import math

import pytest
import torch
import torch.nn.functional as F

from dfs import diffusion as D
from dfs import errata, latent
from dfs.exercises import EXERCISES, ExerciseFailed, check, run_check
from dfs.exercises import references as R
from dfs.swap import faceshifter


@pytest.mark.parametrize("name", sorted(EXERCISES))
def test_reference_passes(name):
    result = run_check(name, EXERCISES[name].reference)
    assert result.passed, result.message
    assert result.properties


def test_at_least_twelve_exercises_over_five_notebooks():
    assert len(EXERCISES) >= 12
    assert {e.notebook for e in EXERCISES.values()} == {"01", "02", "03", "04", "05"}


def test_check_raises_with_the_property_and_prints_on_success(capsys):
    with pytest.raises(ExerciseFailed, match="variance"):
        check("q_step", _q_step_beta_as_std)
    check("cfg_eps", latent.cfg_eps)
    assert "✓ cfg_eps" in capsys.readouterr().out


def test_a_stub_fails_as_not_implemented_and_errors_are_reported():
    def stub(sched, x0, t, noise):
        raise NotImplementedError("exercise: q_sample")
    assert "not implemented yet" in run_check("q_sample", stub).message
    r = run_check("q_sample", lambda sched, x0, t, noise: x0 @ torch.ones(3))
    assert not r.passed and "your function raised RuntimeError" in r.message
    assert "expected your function, got a int" in run_check("q_sample", 3).message
    assert "(called with NoiseSchedule, tensor(4, 3, 8, 8) float64" in r.message
    with pytest.raises(KeyError, match="no exercise named"):
        run_check("q_smaple", D.q_sample)


# ---------------------------------------------------------------------------------------------- wrong solutions

def _sq(sched, x, t):
    return D.extract(sched.alphas_cumprod, t, x)


def _no_bcast_q_sample(sched, x0, t, noise):      # the batch's t broadcast along the last axis, not the first
    a = sched.alphas_cumprod[t].to(x0.dtype)
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def _float64_q_sample(sched, x0, t, noise):
    a = sched.alphas_cumprod[t].reshape(-1, *[1] * (x0.dim() - 1))
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def _ddim_no_sigma_in_root(sched, eps, x_t, t, t_prev, eta=0.0, noise=None):
    a_t = float(sched.alphas_cumprod[t])
    a_p = 1.0 if t_prev < 0 else float(sched.alphas_cumprod[t_prev])
    sigma = eta * math.sqrt((1 - a_p) / (1 - a_t) * (1 - a_t / a_p))
    x0 = (x_t - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
    out = math.sqrt(a_p) * x0 + math.sqrt(1 - a_p) * eps
    return out + sigma * noise if eta > 0 else out


def _ddim_wrong_sigma(sched, eps, x_t, t, t_prev, eta=0.0, noise=None):
    a_t = float(sched.alphas_cumprod[t])
    a_p = 1.0 if t_prev < 0 else float(sched.alphas_cumprod[t_prev])
    sigma = eta * math.sqrt(1 - a_t / a_p)                  # the first factor of σ left out
    x0 = (x_t - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
    out = math.sqrt(a_p) * x0 + math.sqrt(max(1 - a_p - sigma**2, 0)) * eps
    return out + sigma * noise if eta > 0 else out


def _ddim_prev_is_t_minus_1(sched, eps, x_t, t, t_prev, eta=0.0, noise=None):
    return D.ddim_step(sched, eps, x_t, t, t - 1, eta, noise)


def _disc_density(x, mean, log_var):
    return D.gaussian_log_likelihood(x, mean, log_var)


def _disc_no_edges(x, mean, log_var):
    half = 1 / 255
    s = torch.exp(-0.5 * log_var)
    cdf = lambda z: 0.5 * (1 + torch.erf(z / math.sqrt(2)))
    return torch.log((cdf((x - mean + half) * s) - cdf((x - mean - half) * s)).clamp(min=1e-12))


def _disc_wide_bins(x, mean, log_var):
    return D.discretized_gaussian_log_likelihood(x, mean, log_var, bins=128)


def _disc_log_of_zero(x, mean, log_var):
    half = 1 / 255
    s = torch.exp(-0.5 * log_var)
    cdf = lambda z: 0.5 * (1 + torch.erf(z / math.sqrt(2)))
    lo = torch.where(x < -1 + half, torch.zeros_like(x), cdf((x - mean - half) * s))
    hi = torch.where(x > 1 - half, torch.ones_like(x), cdf((x - mean + half) * s))
    return torch.log(hi - lo)


def _hybrid_no_stopgrad(model, sched, x0, t, noise, lam=0.001):
    x_t = D.q_sample(sched, x0, t, noise)
    eps, v = D.split_model_output(model(x_t, t))
    mse = ((noise - eps) ** 2).mean()
    p = D.p_mean_variance(sched, eps, x_t, t, "learned_range", v=v)
    vb = sched.T * (D.vlb_term(sched, x0, x_t, t, p) / (x0[0].numel() * math.log(2))).mean()
    return mse + lam * vb


def _hybrid_nats(model, sched, x0, t, noise, lam=0.001):
    x_t = D.q_sample(sched, x0, t, noise)
    eps, v = D.split_model_output(model(x_t, t))
    mse = ((noise - eps) ** 2).mean()
    p = D.p_mean_variance(sched, eps.detach(), x_t, t, "learned_range", v=v)
    vb = sched.T * (D.vlb_term(sched, x0, x_t, t, p) / x0[0].numel()).mean()
    return mse + lam * vb


def _hybrid_sum(model, sched, x0, t, noise, lam=0.001):
    return D.loss_hybrid(model, sched, x0, lam=lam, t=t, noise=noise) * x0.shape[0]


def _snr_as_alpha_bar(T, snr_end, beta_start=1e-4):      # hits ᾱ_T = target instead of SNR(T) = target
    return R.schedule_for_snr(T, snr_end / (1 - snr_end), beta_start)


def _critic_grad(critic, real, fake, alpha, lam=10.0):
    x_hat = (alpha * real + (1 - alpha) * fake).detach().requires_grad_(True)
    grad, = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return grad


def _gp_squared_norm(critic, real, fake, alpha, lam=10.0):
    g = _critic_grad(critic, real, fake, alpha)
    return lam * ((g.flatten(1).pow(2).sum(1) - 1) ** 2).mean()


def _gp_batch_norm(critic, real, fake, alpha, lam=10.0):
    return lam * (_critic_grad(critic, real, fake, alpha).norm() - 1) ** 2


def _gp_no_graph(critic, real, fake, alpha, lam=10.0):
    x_hat = (alpha * real + (1 - alpha) * fake).detach().requires_grad_(True)
    grad, = torch.autograd.grad(critic(x_hat).sum(), x_hat)
    return lam * ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


def _gp_at_real(critic, real, fake, alpha, lam=10.0):
    return R.wgan_gp(critic, real, fake, torch.ones_like(alpha), lam)


def _aad_no_norm(layer, h, z_att, z_id):
    ga, ba = layer.att(z_att).chunk(2, 1)
    gi, bi = layer.id(z_id)[:, :, None, None].chunk(2, 1)
    M = torch.sigmoid(layer.mask(h))
    return (1 - M) * (ga * h + ba) + M * (gi * h + bi)


def _aad_swapped_mask(layer, h, z_att, z_id):
    h = layer.norm(h)
    ga, ba = layer.att(z_att).chunk(2, 1)
    gi, bi = layer.id(z_id)[:, :, None, None].chunk(2, 1)
    M = torch.sigmoid(layer.mask(h))
    return M * (ga * h + ba) + (1 - M) * (gi * h + bi)


def _aad_no_sigmoid(layer, h, z_att, z_id):
    h = layer.norm(h)
    ga, ba = layer.att(z_att).chunk(2, 1)
    gi, bi = layer.id(z_id)[:, :, None, None].chunk(2, 1)
    M = layer.mask(h).clamp(0, 1)
    return (1 - M) * (ga * h + ba) + M * (gi * h + bi)


def _q_step_beta_as_std(s, x, t, e):
    """x_t = √(1 − β_t) x_{t−1} + β_t ε: the variance used as the standard deviation (the draft makes the converse
    slip at l.243, a standard deviation where the variance belongs)."""
    b = D.extract(s.betas, t, x)
    return (1 - b).sqrt() * x + b * e


def _q_sample_eps_in_root(s, x0, t, e):
    """x_t = √ᾱ_t x_0 + √(1 − ᾱ_t ε): ε inside the root, as the draft writes its inverse at l.111 and l.327."""
    a = D.extract(s.alphas_cumprod, t, x0)
    return a.sqrt() * x0 + (1 - a * e).sqrt()


WRONG = [
    # 01 — the draft's slips first
    ("alpha_bar", "draft line 84: ∏_{s=0}^{t} (1 − β_t)",
     lambda b: (1 - b) ** torch.arange(1, len(b) + 1, dtype=b.dtype), "iterating the one-step variance"),
    ("alpha_bar", "draft l.236: product from s = 0 (one factor too many)",
     lambda b: torch.cumprod(1 - b, 0) * (1 - b[1:2].sum() if len(b) > 1 else 1 - b[0]), "at t = 0"),
    ("alpha_bar", "cumprod of β", lambda b: torch.cumprod(b, 0), "at t = 0"),
    ("q_sample", "ε inside the root (the draft's l.111 slip, carried into eq. 2)", _q_sample_eps_in_root, "contains NaN"),
    ("q_sample", "ᾱ_t instead of √ᾱ_t on x_0",
     lambda s, x0, t, e: _sq(s, x0, t) * x0 + (1 - _sq(s, x0, t)).sqrt() * e, "has mean"),
    ("q_sample", "1 − ᾱ_t without the root on ε",
     lambda s, x0, t, e: _sq(s, x0, t).sqrt() * x0 + (1 - _sq(s, x0, t)) * e, "has variance"),
    ("q_sample", "the paper's t read 1-based (ᾱ_{t−1})",
     lambda s, x0, t, e: D.q_sample(s, x0, (t - 1).clamp(min=0), e), "counted from 0"),
    ("q_sample", "t broadcast along the wrong axis", _no_bcast_q_sample, "raised RuntimeError: The size of tensor a"),
    ("q_sample", "float64 output for float32 input", _float64_q_sample, "keep the inputs' dtype"),
    ("q_step", "β_t as the standard deviation", _q_step_beta_as_std, "has variance"),
    ("q_step", "√β_t on x_{t−1}",
     lambda s, x, t, e: D.extract(s.betas, t, x).sqrt() * x + D.extract(s.betas, t, x).sqrt() * e, "has mean"),
    ("posterior_mean_variance", "draft l.107: x_0 kept, its coefficient dropped",
     lambda s, x0, xt, t: (errata.draft_posterior_mean(s, x0, xt, t), D.extract(s.posterior_variance, t, xt)),
     "but Bayes' rule"),
    ("posterior_mean_variance", "β_t as the posterior variance",
     lambda s, x0, xt, t: (D.q_posterior_mean_variance(s, x0, xt, t)[0], D.extract(s.betas, t, xt)), "variance is 0"),
    ("posterior_mean_variance", "coefficients swapped",
     lambda s, x0, xt, t: (D.extract(s.posterior_mean_coef1, t, xt) * xt + D.extract(s.posterior_mean_coef2, t, xt) * x0,
                           D.extract(s.posterior_variance, t, xt)), "point mass at x_0"),
    ("posterior_mean_variance", "only the mean returned",
     lambda s, x0, xt, t: D.q_posterior_mean_variance(s, x0, xt, t)[0], "two things"),
    ("mu_theta", "ᾱ_t in place of α_t",
     lambda s, xt, t, e: (xt - D.extract(s.betas, t, xt) / D.extract(s.sqrt_one_minus_alphas_cumprod, t, xt) * e)
     / D.extract(s.sqrt_alphas_cumprod, t, xt), "posterior mean μ̃_t"),
    ("mu_theta", "no root on 1 − ᾱ_t",
     lambda s, xt, t, e: (xt - D.extract(s.betas, t, xt) / (1 - D.extract(s.alphas_cumprod, t, xt)) * e)
     / D.extract(s.alphas, t, xt).sqrt(), "posterior mean μ̃_t"),
    # 02
    ("score_from_eps", "sign dropped", lambda s, e, t: e / D.extract(s.sqrt_one_minus_alphas_cumprod, t, e), "score is −x_t"),
    ("score_from_eps", "divided by 1 − ᾱ_t", lambda s, e, t: -e / (1 - D.extract(s.alphas_cumprod, t, e)), "score is −x_t"),
    ("ddim_step", "σ² left out of the root", _ddim_no_sigma_in_root, "keeps the marginal"),
    ("ddim_step", "σ without its first factor", _ddim_wrong_sigma, "posterior variance β̃_t"),
    ("ddim_step", "ᾱ of t − 1 instead of t'", _ddim_prev_is_t_minus_1, "must land where eq. (2) puts"),
    ("langevin_step", "δ as the noise's standard deviation",
     lambda f, x, d, z: x + 0.5 * d * f(x) + d * z, "has variance"),
    ("langevin_step", "drift δ instead of δ/2", lambda f, x, d, z: x + d * f(x) + math.sqrt(d) * z, "has variance"),
    ("langevin_step", "descending the score", lambda f, x, d, z: x - 0.5 * d * f(x) + math.sqrt(d) * z, "has"),
    # 03
    ("normal_kl", "the ½ left out", lambda m1, l1, m2, l2: 2 * D.normal_kl(m1, l1, m2, l2), "Monte Carlo"),
    ("normal_kl", "KL the wrong way round", lambda m1, l1, m2, l2: D.normal_kl(m2, l2, m1, l1), "Monte Carlo"),
    ("normal_kl", "log-variances used as variances",
     lambda m1, l1, m2, l2: 0.5 * (l2 - l1 + (l1.exp() + (m1 - m2) ** 2) / l2.exp() - 1) * 0
     + 0.5 * (torch.log(l2.exp().exp()) - l1 + (l1 + (m1 - m2) ** 2) / l2 - 1), "KL(p ‖ p) must be 0"),
    ("discretized_log_likelihood", "a density, not a probability", _disc_density, "sum to 1"),
    ("discretized_log_likelihood", "bins twice too wide", _disc_wide_bins, "sum to"),
    ("discretized_log_likelihood", "outermost bins not extended to ±∞", _disc_no_edges, "μ = 0.995"),
    ("discretized_log_likelihood", "log of a probability that underflows to 0", _disc_log_of_zero, "must stay finite"),
    ("learned_log_variance", "variances interpolated, not log-variances",
     lambda s, v, t: (v * D.extract(s.betas, t, v) + (1 - v) * D.extract(s.posterior_log_variance_clipped, t, v).exp()).log(),
     "v = 0.5"),
    ("learned_log_variance", "v and 1 − v swapped", lambda s, v, t: D.learned_log_variance(s, 1 - v, t), "v = 0.0"),
    ("learned_log_variance", "the unclipped log β̃ (−∞ at t = 0)",
     lambda s, v, t: v * D.extract(s.betas.log(), t, v) + (1 - v) * D.extract(s.posterior_variance, t, v).log(), "at t = 0"),
    ("l_hybrid", "no stop-gradient on ε", _hybrid_no_stopgrad, "sends gradient into ε_θ"),
    ("l_hybrid", "L_vlb in nats", _hybrid_nats, "ratio 0.6931"),
    ("l_hybrid", "a sum over the batch", _hybrid_sum, "with λ = 0"),
    ("schedule_for_snr", "ᾱ_T = target instead of SNR(T)", _snr_as_alpha_bar, "SNR(T)"),
    ("schedule_for_snr", "Ho et al.'s schedule whatever the target",
     lambda T, snr, b=1e-4: torch.linspace(b, 0.02, T, dtype=torch.float64), "the target was"),
    ("schedule_for_snr", "a cosine schedule", lambda T, snr, b=1e-4: D.cosine_beta_schedule(T), "β_1"),
    # 04
    ("kl_to_standard_normal", "the ½ left out", lambda m, lv: 2 * R.kl_to_standard_normal(m, lv), "Monte Carlo"),
    ("kl_to_standard_normal", "a mean over dimensions",
     lambda m, lv: 0.5 * (m**2 + lv.exp() - 1 - lv).flatten(1).mean(1), "should double"),
    ("kl_to_standard_normal", "σ where σ² belongs",
     lambda m, lv: 0.5 * (m**2 + (lv / 2).exp() - 1 - lv).flatten(1).sum(1), "Monte Carlo"),
    ("cfg_eps", "guidance from the conditional side", lambda u, c, s: c + s * (c - u), "s = 0.0"),
    ("cfg_eps", "s = 1 + w confused with w", lambda u, c, s: u + (1 + s) * (c - u), "s = 0.0"),
    ("vq_losses", "no stop-gradients",
     lambda z, e: (((z - e) ** 2).mean(), ((z - e) ** 2).mean()), "sends gradient into z_e"),
    ("vq_losses", "stop-gradients swapped", lambda z, e: latent.vq_losses(z, e)[::-1], "sends gradient into z_e"),
    # faces and GANs
    ("identity_cosine", "a dot product", lambda a, b: (a * b).sum(-1), "must score 1"),
    ("identity_cosine", "normalised over the batch",
     lambda a, b: (a / a.norm(dim=0) * b / b.norm(dim=0)).sum(-1), "must score 1"),
    ("identity_cosine", "the angle", lambda a, b: torch.arccos(R.identity_cosine(a, b).clamp(-1, 1)), "must score 1"),
    ("aad", "no instance normalisation", _aad_no_norm, "scaled and shifted"),
    ("aad", "M and 1 − M swapped", _aad_swapped_mask, "M = 1 everywhere"),
    ("aad", "the mask without its sigmoid", _aad_no_sigmoid, "for a random AADLayer"),
    ("wgan_gp", "squared norm", _gp_squared_norm, "expected 40"),
    ("wgan_gp", "one norm over the whole batch", _gp_batch_norm, "expected 40"),
    ("wgan_gp", "gradient at the real samples", _gp_at_real, "D(x) = ½‖x‖²"),
    ("wgan_gp", "no create_graph", _gp_no_graph, "no gradient"),
    ("hinge_d_loss", "no hinge (a linear loss)",
     lambda r, f: torch.stack([(1 - a).mean() + (1 + b).mean() for a, b in zip(r, f)]).mean(), "must be 0"),
    ("hinge_d_loss", "one mean over every scale's logits pooled",
     lambda r, f: F.relu(1 - torch.cat([a.flatten() for a in r])).mean() + F.relu(1 + torch.cat([b.flatten() for b in f])).mean(),
     "two scales of different sizes"),
    ("hinge_d_loss", "a sum over scales", lambda r, f: 2 * faceshifter.hinge_d_loss(r, f), "must be 2"),
    ("ns_generator_loss", "the saturating form E log(1 − D(G(z)))",
     lambda l: torch.log(1 - torch.sigmoid(l)).mean(), "at logit 0"),
    ("ns_generator_loss", "a sum over the batch", lambda l: torch.nn.functional.softplus(-l).sum(), "at logit 0"),
    ("ns_generator_loss", "−log(sigmoid(·)) computed naively", lambda l: -torch.log(torch.sigmoid(l)).mean(),
     "softplus"),
    ("ns_generator_loss", "the minimax form negated, −E log(1 − D)", lambda l: -torch.log(1 - torch.sigmoid(l)).mean(),
     "which log of D"),
    ("hinge_d_loss", "the margins' signs swapped",
     lambda r, f: torch.stack([F.relu(1 + a).mean() + F.relu(1 - b).mean() for a, b in zip(r, f)]).mean(), "must be 0"),
]


@pytest.mark.parametrize("name,why,wrong,message", WRONG, ids=[f"{w[0]}: {w[1]}" for w in WRONG])
def test_wrong_solution_fails_with_its_property(name, why, wrong, message):
    result = run_check(name, wrong)
    assert not result.passed, f"{name} accepted a wrong solution ({why})"
    assert message in result.message, result.message
    ref_words = EXERCISES[name].reference.__doc__ or ""
    assert not ref_words or ref_words.strip()[:60] not in result.message      # never the solution's text


def test_every_exercise_has_at_least_two_wrong_solutions():
    counts = {n: sum(w[0] == n for w in WRONG) for n in EXERCISES}
    assert all(c >= 2 for c in counts.values()), counts


def test_references_match_independent_forms():
    """The few references written for the exercises, against closed forms and diffusers."""
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
    m, lv = torch.randn(3, 4, 5, 5, dtype=torch.float64), torch.randn(3, 4, 5, 5, dtype=torch.float64)
    kl = DiagonalGaussianDistribution(torch.cat([m, lv], 1)).kl()
    assert torch.allclose(R.kl_to_standard_normal(m, lv), kl)
    sched = D.NoiseSchedule.from_name("linear", 1000)
    assert torch.allclose(R.alpha_bar(sched.betas), sched.alphas_cumprod)
    betas = R.schedule_for_snr(1000, 1e-3)
    assert math.isclose(D.NoiseSchedule(betas).snr()[-1].item(), 1e-3, rel_tol=1e-6)
    ho = D.NoiseSchedule.from_name("linear", 1000)     # Ho et al.'s schedule: SNR(T) ≈ 4.0e-5, β_T = 0.02
    assert math.isclose(R.schedule_for_snr(1000, ho.snr()[-1].item())[-1].item(), 0.02, rel_tol=1e-6)
    with pytest.raises(ValueError, match="out of reach"):
        R.schedule_for_snr(3, 1e-12)
