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
