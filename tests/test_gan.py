"""dfs.gan: each loss and penalty against a closed form or a hand computation, spectral norm against the SVD and
torch's own implementation, the unrolled generator loss against finite differences, batched members independent."""
import math

import pytest
import torch
from torch.nn.utils.parametrizations import spectral_norm as torch_spectral_norm

from dfs import gan, toy


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def linear_critic(w, b=0.0):
    """D(x) = wᵀx + b for inputs (S, B, 2): its input gradient is w everywhere."""
    w = torch.as_tensor(w, dtype=torch.float64)
    return lambda x: (x @ w)[..., None] + b


# --- the non-saturating and Wasserstein losses --------------------------------------------------------------


def test_ns_losses_match_hand_computed_values():
    zero = torch.zeros(1, 4, 1)
    assert gan.ns_discriminator_loss(zero, zero).item() == pytest.approx(2 * math.log(2))   # D = ½ everywhere
    assert gan.ns_generator_loss(zero).item() == pytest.approx(math.log(2))
    real, fake = torch.tensor([[[2.0], [0.5]]]), torch.tensor([[[-1.0], [3.0]]])
    sig = lambda a: 1 / (1 + math.exp(-a))
    want_d = -(math.log(sig(2)) + math.log(sig(0.5))) / 2 - (math.log(1 - sig(-1)) + math.log(1 - sig(3))) / 2
    want_g = -(math.log(sig(-1)) + math.log(sig(3))) / 2
    assert gan.ns_discriminator_loss(real, fake).item() == pytest.approx(want_d, rel=1e-6)
    assert gan.ns_generator_loss(fake).item() == pytest.approx(want_g, rel=1e-6)
    # extreme logits stay finite (softplus form, not log(sigmoid))
    assert torch.isfinite(gan.ns_discriminator_loss(torch.full((1, 2, 1), -200.0), torch.full((1, 2, 1), 200.0)))


def test_losses_are_per_member():
    real = torch.tensor([[[1.0], [3.0]], [[0.0], [0.0]]])
    fake = torch.tensor([[[0.5], [0.5]], [[2.0], [-4.0]]])
    torch.testing.assert_close(gan.wasserstein_critic_loss(real, fake), torch.tensor([0.5 - 2.0, -1.0 - 0.0]))
    torch.testing.assert_close(gan.wasserstein_generator_loss(fake), torch.tensor([-0.5, 1.0]))
    assert gan.ns_discriminator_loss(real, fake).shape == (2,)


# --- gradient penalties --------------------------------------------------------------------------------------


def test_gradient_penalty_is_zero_for_a_1_lipschitz_critic_and_closed_form_otherwise():
    real = torch.randn(2, 64, 2, generator=gen(1), dtype=torch.float64)
    fake = torch.randn(2, 64, 2, generator=gen(2), dtype=torch.float64) + 3
    unit = torch.tensor([0.6, 0.8])
    assert gan.gradient_penalty(linear_critic(unit), real, fake, generator=gen()).abs().max() < 1e-12
    # D(x) = ‖x − c‖ is 1-Lipschitz with ‖∇D‖ = 1 everywhere but c: also no penalty
    dist = lambda x: (x - torch.tensor([10.0, -7.0], dtype=x.dtype)).norm(dim=-1, keepdim=True)
    assert gan.gradient_penalty(dist, real, fake, generator=gen()).abs().max() < 1e-10
    # a linear critic with ‖w‖ = 2.5: λ (‖w‖ − 1)² exactly, whatever the interpolation points
    for lam in (1.0, 10.0):
        gp = gan.gradient_penalty(linear_critic(2.5 * unit), real, fake, lam=lam, generator=gen())
        torch.testing.assert_close(gp, torch.full((2,), lam * 1.5 ** 2, dtype=torch.float64))
    # D(x) = ½‖x‖²: ∇D(x̂) = x̂ with x̂ = εx + (1 − ε)x̃ (Gulrajani et al. eq. 3 by hand)
    eps = torch.rand(2, 64, 1, generator=gen(3), dtype=torch.float64)
    x_hat = eps * real + (1 - eps) * fake
    want = 10 * ((x_hat.norm(dim=-1) - 1) ** 2).mean(1)
    got = gan.gradient_penalty(lambda x: 0.5 * (x ** 2).sum(-1, keepdim=True), real, fake, eps=eps)
    torch.testing.assert_close(got, want)


def test_dragan_penalty_closed_forms():
    real = torch.randn(1, 128, 2, generator=gen(4), dtype=torch.float64)
    w = torch.tensor([3.0, 4.0])                                       # ‖w‖ = 5
    got = gan.dragan_penalty(linear_critic(w), real, lam=10.0, k=1.0, generator=gen())
    torch.testing.assert_close(got, torch.tensor([10.0 * 16.0], dtype=torch.float64))
    delta = 0.3 * torch.randn(real.shape, generator=gen(5), dtype=torch.float64)
    want = 2.0 * (((real + delta).norm(dim=-1) - 0.5) ** 2).mean(1)
    got = gan.dragan_penalty(lambda x: 0.5 * (x ** 2).sum(-1, keepdim=True), real, lam=2.0, k=0.5, delta=delta)
    torch.testing.assert_close(got, want)


def test_penalties_are_differentiable_in_the_critic_weights():
    d = gan.BatchedMLP(2, 1, 16, 2, [0], "leaky_relu")
    real, fake = torch.randn(1, 32, 2, generator=gen(1)), torch.randn(1, 32, 2, generator=gen(2))
    for penalty in (gan.gradient_penalty(d, real, fake, generator=gen()), gan.dragan_penalty(d, real, generator=gen())):
        grads = torch.autograd.grad(penalty.sum(), list(d.parameters()), allow_unused=True)
        assert all(g is not None and torch.isfinite(g).all() for g in grads[:-1])
        assert any(g.abs().sum() > 0 for g in grads if g is not None)


# --- weight clipping and spectral normalisation --------------------------------------------------------------


def test_weight_clipping_keeps_every_weight_within_c_during_wgan_training():
    d = gan.BatchedMLP(2, 1, 16, 2, [0, 1], "leaky_relu")
    with torch.no_grad():
        for p in d.parameters():
            p.mul_(50)
    gan.clip_weights_(d, 0.01)
    assert all(p.abs().max() <= 0.01 for p in d.parameters())
    run = gan.train_gan("WGAN (clip)", [toy.eight_gaussians_gmm()] * 2, [0, 1], steps=5, hidden=16, batch_size=32)
    ws = torch.cat([p.flatten() for p in run.gan.d_net.parameters()])
    assert ws.abs().max() <= 0.01 + 1e-9
    assert (ws.abs() > 0.01 - 1e-6).any(), "the bound is reached: clipping was active"
    with pytest.raises(ValueError, match="must be > 0"):
        gan.clip_weights_(d, 0.0)


def test_spectral_norm_gives_unit_largest_singular_value_per_member():
    mlp = gan.BatchedMLP(2, 1, 32, 3, [0, 1, 2], "leaky_relu")
    with torch.no_grad():                                              # make the members' scales very different
        for layer in mlp.layers:
            layer.weight.mul_(torch.tensor([0.1, 1.0, 7.0])[:, None, None])
    gan.apply_spectral_norm(mlp)
    mlp.train()
    for _ in range(200):                                               # power iteration (one per forward)
        mlp(torch.zeros(3, 1, 2))
    for layer in mlp.layers:
        top = torch.linalg.svdvals(layer.weight.detach())[:, 0]       # batched over members
        torch.testing.assert_close(top, torch.ones(3), atol=2e-3, rtol=0)
        raw = layer.parametrizations.weight.original.detach()
        assert not torch.allclose(torch.linalg.svdvals(raw)[:, 0], torch.ones(3), atol=0.05)


def test_batched_spectral_norm_equals_torch_spectral_norm_on_each_member():
    layer = gan.spectral_norm(gan.BatchedLinear(5, 4, [gen(0), gen(1)]), generator=gen(9))
    sn = layer.parametrizations.weight[0]
    raw = layer.parametrizations.weight.original.detach()
    u0, v0 = sn._u.clone(), sn._v.clone()                              # the power-iteration state before the call
    x = torch.randn(2, 3, 5, generator=gen(2))
    layer.train()
    ours = layer(x)                                                    # one training forward: one iteration each
    for s in range(2):
        ref = torch.nn.Linear(5, 4)
        with torch.no_grad():
            ref.weight.copy_(raw[s].T)                                 # torch's (out, in) convention
            ref.bias.copy_(layer.bias[s, 0])
        ref = torch_spectral_norm(ref)
        ref.parametrizations.weight[0]._u.copy_(u0[s])
        ref.parametrizations.weight[0]._v.copy_(v0[s])
        ref.train()
        torch.testing.assert_close(ours[s], ref(x[s]), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(sn._u[s], ref.parametrizations.weight[0]._u, rtol=1e-4, atol=1e-5)


# --- unrolled GAN ----------------------------------------------------------------------------------------------


def _tiny_pair(seed=0):
    g_net = gan.BatchedMLP(3, 2, 8, 1, [seed], "relu").double()
    d_net = gan.BatchedMLP(2, 1, 8, 1, [seed + 1], "leaky_relu").double()
    z = torch.randn(1, 16, 3, generator=gen(seed + 2), dtype=torch.float64)
    real = torch.randn(1, 16, 2, generator=gen(seed + 3), dtype=torch.float64)
    return g_net, d_net, z, real


def test_unrolled_loss_with_k0_equals_the_plain_generator_loss_and_gradient():
    g_net, d_net, z, real = _tiny_pair()
    plain = gan.ns_generator_loss(d_net(g_net(z)))
    unrolled = gan.unrolled_generator_loss(d_net, real, g_net(z), k=0, lr=0.1)
    torch.testing.assert_close(unrolled, plain)
    g1 = torch.autograd.grad(plain.sum(), list(g_net.parameters()))
    g2 = torch.autograd.grad(gan.unrolled_generator_loss(d_net, real, g_net(z), 0, 0.1).sum(), list(g_net.parameters()))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)


def test_unrolling_never_changes_the_real_discriminator():
    g_net, d_net, z, real = _tiny_pair(1)
    before = {n: p.detach().clone() for n, p in d_net.named_parameters()}
    loss = gan.unrolled_generator_loss(d_net, real, g_net(z), k=5, lr=0.1)
    loss.sum().backward()
    for n, p in d_net.named_parameters():
        torch.testing.assert_close(p.detach(), before[n])
        assert p.grad is None, f"the unrolled copies left a gradient on the real D's {n}"
    assert all(p.grad is not None for p in g_net.parameters())


def test_unrolled_gradient_flows_through_the_k_discriminator_steps():
    """d f_K/dθ_G by autograd against central finite differences of f_K(θ_G) recomputed from scratch; a version
    that detaches G(z) inside the unrolled steps (the first-order surrogate) must differ from it."""
    g_net, d_net, z, real = _tiny_pair(2)
    k, lr = 3, 0.5
    f = lambda: gan.unrolled_generator_loss(d_net, real, g_net(z), k, lr).sum()
    p = g_net.layers[0].weight
    (auto,) = torch.autograd.grad(f(), [p])
    h = 1e-6

    def nudge(idx, by):
        with torch.no_grad():
            p[idx] += by

    for idx in [(0, 0, 0), (0, 1, 3), (0, 2, 7)]:
        nudge(idx, h)
        up = f().item()                    # the unrolling itself needs autograd: not under no_grad
        nudge(idx, -2 * h)
        down = f().item()
        nudge(idx, h)
        assert auto[idx].item() == pytest.approx((up - down) / (2 * h), rel=1e-5, abs=1e-9)
    params = {n: q.detach().requires_grad_(True) for n, q in d_net.named_parameters()}
    fake = g_net(z)
    ahead = gan.unroll_discriminator(d_net, params, real, fake.detach(), k, lr)        # surrogate: no ∂θ_D^K/∂θ_G
    surrogate = gan.ns_generator_loss(torch.func.functional_call(d_net, ahead, (fake,))).sum()
    (first_order,) = torch.autograd.grad(surrogate, [p])
    assert (first_order - auto).abs().max() > 1e-3 * auto.abs().max()


def test_unroll_one_step_is_one_gradient_descent_step():
    g_net, d_net, z, real = _tiny_pair(3)
    fake = g_net(z).detach()
    params = {n: q.detach().requires_grad_(True) for n, q in d_net.named_parameters()}
    ahead = gan.unroll_discriminator(d_net, params, real, fake, k=1, lr=0.2)
    loss = gan.ns_discriminator_loss(d_net(real), d_net(fake)).sum()
    grads = torch.autograd.grad(loss, list(d_net.parameters()))
    for (n, q), g in zip(d_net.named_parameters(), grads):
        torch.testing.assert_close(ahead[n], q - 0.2 * g)


# --- batched members ------------------------------------------------------------------------------------------


def test_members_are_independent_of_each_other_and_of_the_batch_size():
    solo = gan.BatchedMLP(2, 1, 16, 2, [7], "leaky_relu")
    pair = gan.BatchedMLP(2, 1, 16, 2, [3, 7], "leaky_relu")
    for a, b in zip(solo.parameters(), pair.parameters()):
        torch.testing.assert_close(a[0], b[1])                         # member init depends on its seed only
    x = torch.randn(2, 32, 2, generator=gen(1))
    loss = lambda inp: gan.ns_discriminator_loss(pair(inp), pair(inp.flip(1) + 1)).sum()
    params = list(pair.parameters())
    g1 = torch.autograd.grad(loss(x), params)
    x2 = x.clone()
    x2[0] += 5.0                                                        # change member 0's data only
    g2 = torch.autograd.grad(loss(x2), params)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a[1], b[1])
        assert not torch.allclose(a[0], b[0])


def test_every_variant_trains_through_dfs_train_and_moves_both_networks():
    gmms = [toy.eight_gaussians_gmm(), toy.grid_gmm()]
    for name in gan.VARIANTS:
        run = gan.GanRun(gan.VARIANTS[name], gmms, [0, 1])
        g0 = [p.detach().clone() for p in run.gan.g_net.parameters()]
        d0 = [p.detach().clone() for p in run.gan.d_net.parameters()]
        run.fit(3)
        assert run.trainer.step == 3 and set(run.trainer.optimizers) == {"d", "g"}
        assert all(not torch.equal(a, b) for a, b in zip(g0, run.gan.g_net.parameters())), name
        assert any(not torch.equal(a, b) for a, b in zip(d0, run.gan.d_net.parameters())), name   # clipped ones may stay
        assert run.gan.sample(10).shape == (2, 10, 2)
    with pytest.raises(ValueError, match="unknown GAN variant"):
        gan.train_gan("LSGAN", gmms, [0, 1], steps=1)
    with pytest.raises(ValueError, match="one mixture per member"):
        gan.GanRun(gan.VARIANTS["NS-GAN"], gmms, [0])


# --- mode statistics (dfs.toy) ----------------------------------------------------------------------------------


def test_grid_gmm_is_a_standardised_5x5_grid():
    g = toy.grid_gmm()
    assert g.n_components == 25 and torch.allclose(g.means.mean(0), torch.zeros(2, dtype=torch.float64))
    assert g.covariance().diagonal().sqrt().sub(1).abs().max() < 0.02


@pytest.mark.parametrize("gmm", [toy.eight_gaussians_gmm(), toy.grid_gmm()], ids=["ring", "grid"])
def test_mode_quality_of_data_matches_the_chi2_closed_form(gmm):
    n = 20_000
    q = toy.mode_quality(gmm, gmm.sample(n, gen(1)))
    p = 1 - math.exp(-4.5)                                              # P(χ²₂ ≤ 9)
    assert abs(q["hq"] - p) < 4 * math.sqrt(p * (1 - p) / n)
    assert q["modes"] == gmm.n_components and q["counts"].sum() == round(q["hq"] * n)
    collapsed = gmm.means[3].float() + gmm.stds[3].float() * torch.randn(500, 2, generator=gen(2))
    q = toy.mode_quality(gmm, collapsed)
    assert q["modes"] == 1 and q["covered"][3]
    far = torch.full((100, 2), 50.0)
    assert toy.mode_quality(gmm, far)["hq"] == 0 and toy.mode_quality(gmm, far)["modes"] == 0


def test_mode_drops_counts_leaving_and_returning_by_hand():
    covered = torch.tensor([[1, 0, 0],
                            [1, 1, 0],
                            [0, 1, 0],      # mode 0 dropped
                            [1, 0, 1],      # mode 1 dropped, mode 0 returns
                            [1, 0, 0]],     # mode 2 dropped
                           dtype=torch.bool)
    assert toy.mode_drops(covered) == {"drops": 3, "returns": 1, "forgotten": 2}
    assert toy.mode_drops(covered[:1]) == {"drops": 0, "returns": 0, "forgotten": 0}


def test_adam_unrolling_equals_the_discriminator_optimisers_own_steps():
    """K unrolled Adam steps from the optimiser's moments land where K real Adam steps of a copy land."""
    import copy
    g_net, d_net, z, real = _tiny_pair(4)
    fake = g_net(z).detach()
    opt = torch.optim.Adam(d_net.parameters(), lr=0.01, betas=(0.5, 0.999))
    for _ in range(3):                                                  # some history in the moments
        opt.zero_grad()
        gan.ns_discriminator_loss(d_net(real), d_net(fake)).sum().backward()
        opt.step()
    params = {n: q.detach().requires_grad_(True) for n, q in d_net.named_parameters()}
    ahead = gan.unroll_discriminator(d_net, params, real, fake, k=2, lr=0.01, adam=gan.adam_state(opt, d_net))
    twin = copy.deepcopy(d_net)
    twin_opt = torch.optim.Adam(twin.parameters(), lr=0.01, betas=(0.5, 0.999))
    twin_opt.load_state_dict(opt.state_dict())
    for _ in range(2):
        twin_opt.zero_grad()
        gan.ns_discriminator_loss(twin(real), twin(fake)).sum().backward()
        twin_opt.step()
    for n, q in twin.named_parameters():
        torch.testing.assert_close(ahead[n], q, rtol=1e-6, atol=1e-9)
    for n, q in d_net.named_parameters():                               # the unrolling moved nothing real
        torch.testing.assert_close(q.detach(), params[n].detach())


def test_adam_unrolled_gradient_matches_finite_differences():
    g_net, d_net, z, real = _tiny_pair(5)
    opt = torch.optim.Adam(d_net.parameters(), lr=0.05, betas=(0.5, 0.999))
    opt.zero_grad()
    gan.ns_discriminator_loss(d_net(real), d_net(g_net(z).detach())).sum().backward()
    opt.step()
    state = gan.adam_state(opt, d_net)
    f = lambda: gan.unrolled_generator_loss(d_net, real, g_net(z), 3, 0.05, state).sum()
    p = g_net.layers[1].weight
    (auto,) = torch.autograd.grad(f(), [p])
    h = 1e-6
    for idx in [(0, 0, 0), (0, 3, 1)]:
        with torch.no_grad():
            p[idx] += h
        up = f().item()
        with torch.no_grad():
            p[idx] -= 2 * h
        down = f().item()
        with torch.no_grad():
            p[idx] += h
        assert auto[idx].item() == pytest.approx((up - down) / (2 * h), rel=1e-4, abs=1e-8)
