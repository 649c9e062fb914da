"""Our hand-written teaching maths equals diffusers' schedulers given the same inputs and noise (≤ 1e-5).

diffusers keeps its schedule in float32; dfs keeps it in float64. Schedules are compared in float32. For the
steps we hand diffusers our float64 tensors, so the comparison checks the *formulas*, not float32 round-off
(which alone reaches ~2e-4 at t = 1, where 1 − ᾱ_t ≈ 1e-4 is computed from a float32 cumprod).
"""
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from diffusers.utils.torch_utils import randn_tensor

from dfs import diffusion as D

DIFFUSERS_NAME = {"linear": "linear", "cosine": "squaredcos_cap_v2"}
TOL = dict(rtol=0, atol=1e-5)


def _float64(scheduler, sched: D.NoiseSchedule):
    scheduler.betas, scheduler.alphas, scheduler.alphas_cumprod = sched.betas, sched.alphas, sched.alphas_cumprod
    scheduler.one = torch.tensor(1.0, dtype=torch.float64)
    if hasattr(scheduler, "final_alpha_cumprod"):
        scheduler.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64)
    return scheduler


def _inputs(seed=0, shape=(4, 3, 8, 8)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64), torch.randn(shape, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("T", [1000, 50])
def test_schedules_equal_diffusers(name, T):
    ours = D.NoiseSchedule.from_name(name, T)
    ref = DDPMScheduler(num_train_timesteps=T, beta_schedule=DIFFUSERS_NAME[name])
    torch.testing.assert_close(ours.betas.float(), ref.betas, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(ours.alphas_cumprod.float(), ref.alphas_cumprod, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_q_sample_equals_add_noise(name):
    ours = D.NoiseSchedule.from_name(name, 1000)
    ref = DDPMScheduler(num_train_timesteps=1000, beta_schedule=DIFFUSERS_NAME[name])
    x0, noise = _inputs()
    x0, noise = x0.float(), noise.float()
    t = torch.tensor([0, 10, 500, 999])
    torch.testing.assert_close(D.q_sample(ours, x0, t, noise), ref.add_noise(x0, noise, t), **TOL)


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
@pytest.mark.parametrize("clip", [None, 1.0])
@pytest.mark.parametrize("t", [0, 1, 2, 37, 500, 999])
def test_one_ddpm_step_equals_diffusers(name, variance, clip, t):
    ours = D.NoiseSchedule.from_name(name, 1000)
    ref = _float64(DDPMScheduler(num_train_timesteps=1000, beta_schedule=DIFFUSERS_NAME[name],
                                 variance_type=variance, clip_sample=clip is not None), ours)
    x_t, eps = _inputs(seed=t)
    expected = ref.step(eps, t, x_t, generator=torch.Generator().manual_seed(7)).prev_sample
    z = randn_tensor(x_t.shape, generator=torch.Generator().manual_seed(7), dtype=x_t.dtype)
    got = D.ddpm_step(ours, eps, x_t, torch.full((4,), t), z, variance=variance, clip_x0=clip)
    torch.testing.assert_close(got, expected, **TOL)


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("steps", [50, 10])
def test_one_ddim_step_equals_diffusers(name, eta, steps):
    ours = D.NoiseSchedule.from_name(name, 1000)
    ref = _float64(DDIMScheduler(num_train_timesteps=1000, beta_schedule=DIFFUSERS_NAME[name], clip_sample=False),
                   ours)
    ref.set_timesteps(steps)
    assert ref.timesteps.tolist() == D.ddim_timesteps(1000, steps)
    ts = ref.timesteps.tolist()
    for i in (0, len(ts) // 2, len(ts) - 1):
        t, t_prev = ts[i], (ts[i + 1] if i + 1 < len(ts) else -1)
        x_t, eps = _inputs(seed=i)
        z = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(3), dtype=x_t.dtype)
        expected = ref.step(eps, t, x_t, eta=eta, variance_noise=z).prev_sample
        got = D.ddim_step(ours, eps, x_t, torch.full((4,), t), t_prev, eta=eta, noise=z)
        torch.testing.assert_close(got, expected, **TOL)


class _TinyEps(torch.nn.Module):
    """A fixed nonlinear ε-model so that the whole sampling loop is exercised, not only one step."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = torch.nn.Parameter(0.3 * torch.randn(2, 2, generator=g, dtype=torch.float64))

    def forward(self, x, t):
        return torch.tanh(x @ self.w) * (t.to(x.dtype)[:, None] / 1000)


def test_full_ddim_loop_equals_diffusers_loop():
    model, ours = _TinyEps(), D.NoiseSchedule.from_name("cosine", 1000)
    ref = _float64(DDIMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=False), ours)
    ref.set_timesteps(25)
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x = x_T.clone()
    with torch.no_grad():
        for t in ref.timesteps:
            x = ref.step(model(x, t.expand(64)), t, x).prev_sample
        got = D.ddim_sample(model, ours, x_T.shape, steps=25, x_T=x_T, progress=False)
    torch.testing.assert_close(got, x, **TOL)


def test_full_ddpm_loop_equals_diffusers_loop():
    # float32 samples: both loops then draw their noise z from the same CPU generator stream, in the same order
    model, ours = _TinyEps().float(), D.NoiseSchedule.from_name("linear", 100, scale_to_T=True)
    ref = _float64(DDPMScheduler(num_train_timesteps=100, clip_sample=False), ours)
    ref.set_timesteps(100)
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(1))
    g, x = torch.Generator().manual_seed(5), x_T.clone()
    with torch.no_grad():
        for t in ref.timesteps:
            x = ref.step(model(x, t.expand(64)), t, x, generator=g).prev_sample
        got = D.ddpm_sample(model, ours, x_T.shape, x_T=x_T, generator=torch.Generator().manual_seed(5),
                            progress=False)
    # float32 arithmetic over 100 steps: compare relative to the samples' size (|x| reaches ~1e2 here)
    torch.testing.assert_close(got, x, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_v_target_equals_get_velocity(name):
    ours = D.NoiseSchedule.from_name(name, 1000)
    ref = _float64(DDPMScheduler(num_train_timesteps=1000, beta_schedule=DIFFUSERS_NAME[name]), ours)
    x0, noise = _inputs(seed=5)
    t = torch.tensor([0, 10, 500, 999])
    torch.testing.assert_close(D.v_target(ours, x0, t, noise), ref.get_velocity(x0, noise, t), **TOL)


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("t", [1, 37, 500, 999])
def test_v_model_through_eps_equals_diffusers_v_prediction_step(name, t):
    """A v-model turned into an ε-model (predict_eps_from_v) takes the same DDIM step as diffusers' v_prediction."""
    ours = D.NoiseSchedule.from_name(name, 1000)
    ref = _float64(DDIMScheduler(num_train_timesteps=1000, beta_schedule=DIFFUSERS_NAME[name], clip_sample=False,
                                 prediction_type="v_prediction"), ours)
    ref.set_timesteps(1000)
    x_t, v = _inputs(seed=t)
    tt = torch.full((4,), t)
    expected = ref.step(v, t, x_t, eta=0.0).prev_sample
    got = D.ddim_step(ours, D.predict_eps_from_v(ours, x_t, tt, v), x_t, tt, t - 1, eta=0.0)
    torch.testing.assert_close(got, expected, **TOL)


def test_v_parameterisation_round_trips():
    """x_t = √ᾱ x_0 + √(1−ᾱ) ε and v = √ᾱ ε − √(1−ᾱ) x_0 give back x_0 and ε exactly."""
    ours = D.NoiseSchedule.from_name("cosine", 1000)
    x0, eps = _inputs(seed=9)
    t = torch.tensor([0, 100, 700, 999])
    x_t, v = D.q_sample(ours, x0, t, eps), D.v_target(ours, x0, t, eps)
    torch.testing.assert_close(D.predict_x0_from_v(ours, x_t, t, v), x0, rtol=0, atol=1e-9)
    torch.testing.assert_close(D.predict_eps_from_v(ours, x_t, t, v), eps, rtol=0, atol=1e-9)
