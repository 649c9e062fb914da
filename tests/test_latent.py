"""dfs.latent: autoencoder objectives, latent scaling, condition dropout, guidance, attention maps, exact resume."""
import math

import pytest
import torch
from diffusers import DDPMScheduler
from scipy.ndimage import uniform_filter

from dfs.data.digits import batch_sampler, digits_images
from dfs.diffusion import NoiseSchedule
from dfs.latent import (
    AutoencoderWithLoss,
    ClassTokens,
    EmbeddingTokens,
    LatentDiffusion,
    PerceptualLoss,
    activation_bytes,
    as_schedule,
    capture_cross_attention,
    cfg_eps,
    drop_condition,
    encode,
    estimate_scale_factor,
    module_loss,
    perceptual_or_none,
    quantize,
    reconstruction_quality,
    set_scale_factor,
    train,
    vgg16_perceptual,
    vq_losses,
)
from dfs.nets import WeightsUnavailable, build_autoencoder, build_cond_unet, build_unet
from dfs.train import TrainConfig, Trainer, latest_checkpoint

CPU = {"device": "cpu", "progress": False}


def _ldm(p_uncond=0.2, seed=0, T=50):
    torch.manual_seed(seed)
    ae = build_autoencoder("kl", 2, sample_size=8)
    unet = build_cond_unet(sample_size=4, in_channels=4, cross_attention_dim=16, block_out_channels=(16, 16),
                           norm_num_groups=4)
    return LatentDiffusion(unet, NoiseSchedule.from_name("linear", T, scale_to_T=True), ae,
                           ClassTokens(10, n_tokens=2, dim=16), p_uncond=p_uncond, scale_factor=1.3)


# -- autoencoders ----------------------------------------------------------------------------------------------


def test_kl_objective_is_reconstruction_plus_weighted_closed_form_kl():
    torch.manual_seed(0)
    ae = build_autoencoder("kl", 2, sample_size=8)
    x = torch.rand(3, 1, 8, 8) * 2 - 1
    obj = AutoencoderWithLoss(ae, rec="l2", kl_weight=0.5)
    torch.manual_seed(5)
    out = obj(x)
    post = ae.encode(x).latent_dist
    kl = 0.5 * (post.mean ** 2 + post.var - 1 - post.logvar).flatten(1).sum(1)  # KL(N(μ, σ²) ‖ N(0, I))
    torch.testing.assert_close(out["kl"], kl.mean() / 64)
    torch.testing.assert_close(out["loss"], out["rec"] + 0.5 * out["kl"])
    torch.manual_seed(5)                                        # the same posterior sample z
    z = post.mean + post.std * torch.randn_like(post.mean)
    torch.testing.assert_close(out["rec"], ((ae.decode(z).sample - x) ** 2).mean())


def test_vq_terms_send_gradients_where_van_den_oord_eq3_says():
    torch.manual_seed(0)
    vq = build_autoencoder("vq", 2, sample_size=8, num_vq_embeddings=16)
    z_e = torch.randn(2, 4, 4, 4, requires_grad=True)
    z_q, e, _ = quantize(vq, z_e)
    codebook, commit = vq_losses(z_e, e)
    torch.testing.assert_close(codebook, commit)                 # the same number, different gradients
    book = vq.quantize.embedding.weight
    g_ze, g_book = torch.autograd.grad(codebook, [z_e, book], allow_unused=True)
    assert g_ze is None and g_book.abs().sum() > 0               # codebook term moves only the codes
    g_ze, g_book = torch.autograd.grad(commit, [z_e, book], allow_unused=True)
    assert g_book is None and g_ze.abs().sum() > 0               # commitment term moves only the encoder
    torch.testing.assert_close(g_ze, 2 * (z_e - e).detach() / z_e.numel())
    # straight-through: z_q has the codes' values and passes the gradient to z_e unchanged
    torch.testing.assert_close(z_q, e)
    (g,) = torch.autograd.grad((z_q * 3).sum(), z_e)
    torch.testing.assert_close(g, torch.full_like(z_e, 3.0))
    out = AutoencoderWithLoss(vq, beta=0.25, codebook="loss")(torch.rand(2, 1, 8, 8))
    torch.testing.assert_close(out["loss"], out["rec"] + out["codebook"] + 0.25 * out["commit"])
    assert 1 <= out["perplexity"] <= 16


@pytest.mark.parametrize("kind", ["kl", "vq"])
def test_training_through_the_trainer_improves_reconstructions(kind):
    torch.set_num_threads(1)
    x, _ = digits_images(8)
    ae = build_autoencoder(kind, 2, sample_size=8)
    before = reconstruction_quality(ae, x[:300])
    tr = train(AutoencoderWithLoss(ae), x, config=TrainConfig(steps=40, batch_size=16, lr=3e-3, ema_decay=None,
                                                               log_every=10, **CPU))
    after = reconstruction_quality(ae, x[:300])
    assert tr.history[-1]["rec"] < 0.8 * tr.history[0]["rec"]
    assert after["psnr"] > before["psnr"] + 3
    assert after["reconstructions"].shape == (300, 1, 8, 8)


def test_psnr_and_ssim_against_closed_forms():
    class Shift(torch.nn.Module):        # an "autoencoder" whose reconstruction is x + 0.1
        training = False
        config = None

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def encode(self, x):
            return type("E", (), {"latent_dist": type("D", (), {"mode": lambda _: x})()})()

        def decode(self, z):
            return type("O", (), {"sample": z + 0.1})()

    x = torch.rand(4, 1, 16, 16) * 1.6 - 0.8
    q = reconstruction_quality(Shift(), x)
    assert q["psnr"] == pytest.approx(10 * math.log10(2.0 ** 2 / 0.1 ** 2), abs=1e-6)
    # a constant shift δ leaves SSIM's contrast-structure term at 1: SSIM is the mean luminance term over the
    # 7×7 windows, computed on [0, 1] images (where the shift is δ/2)
    u = uniform_filter((x[:, 0].double().numpy() + 1) / 2, size=(1, 7, 7))[:, 3:-3, 3:-3]
    d, c1 = 0.05, (0.01 * 1.0) ** 2
    lum = (2 * u * (u + d) + c1) / (u ** 2 + (u + d) ** 2 + c1)
    assert q["ssim"] == pytest.approx(lum.mean(), abs=1e-6)
    assert 0.98 < q["ssim"] < 1.0


def test_perceptual_loss_is_zero_on_identical_images_and_off_without_weights(tmp_path):
    torch.manual_seed(0)
    feats = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 4, 3), torch.nn.ReLU())
    loss = PerceptualLoss(feats, layers=(1, 3))
    x = torch.rand(2, 1, 12, 12) * 2 - 1
    assert loss(x, x).item() == 0
    d = loss(x, x.flip(-1))
    assert d > 0 and d <= 2 * 2 + 1e-5            # two layers, unit vectors: each term ≤ ‖a − b‖² ≤ 4
    with pytest.raises(WeightsUnavailable, match="need internet once"):
        vgg16_perceptual(tmp_path / "vgg16.pth")
    said = []
    assert perceptual_or_none(tmp_path / "vgg16.pth", log=said.append) is None
    assert "perceptual loss OFF" in said[0]


# -- latent scale ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["kl", "vq"])
@pytest.mark.parametrize("sample", [False, True])
def test_scaled_latents_have_unit_std_on_the_data_they_were_estimated_on(kind, sample):
    torch.manual_seed(0)
    x, _ = digits_images(8)
    ae = build_autoencoder(kind, 2, sample_size=8)
    s = estimate_scale_factor(ae, x[:500], sample=sample, batch_size=500, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        z = encode(ae, x[:500], sample=sample, generator=torch.Generator().manual_seed(3))
    assert float((s * z).std()) == pytest.approx(1.0, rel=1e-5)
    if not sample:
        assert not math.isclose(float(z.std()), 1.0, rel_tol=0.2)    # the scale is not 1 to begin with
    set_scale_factor(ae, s)
    ldm = LatentDiffusion(build_unet(4, 4, block_out_channels=(8, 8), norm_num_groups=4),
                          NoiseSchedule.from_name("linear", 10), ae, sample_posterior=sample)
    assert ldm.scale_factor == s                                    # read from the autoencoder's config
    assert float(ldm.encode(x[:500]).std()) == pytest.approx(1.0, abs=0.03)   # other posterior samples: ≈ 1


# -- conditioning and guidance ---------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 1.0])
def test_drop_condition_replaces_a_fraction_p_by_the_null_tokens(p):
    n = 20000
    tokens, null = torch.randn(n, 3, 5), torch.randn(3, 5)
    out, dropped = drop_condition(tokens, null, p, generator=torch.Generator().manual_seed(0))
    assert abs(dropped.float().mean().item() - p) <= 4 * math.sqrt(p * (1 - p) / n) + 1e-12
    assert torch.equal(out[dropped], null.expand(int(dropped.sum()), 3, 5))
    assert torch.equal(out[~dropped], tokens[~dropped])
    with pytest.raises(ValueError, match="drop probability"):
        drop_condition(tokens, null, 1.5)


def test_latent_model_feeds_the_null_token_to_the_unet_at_rate_p_uncond_in_training_only():
    ldm = _ldm(p_uncond=0.3)
    seen = []
    ldm.unet.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["encoder_hidden_states"].detach()),
                                       with_kwargs=True)
    y = torch.arange(10).repeat(200)
    z0 = torch.randn(len(y), 4, 4, 4)
    ldm.train()(z0, y)
    tok, null = seen[-1], ldm.null_tokens.detach()
    is_null = (tok == null).flatten(1).all(1)
    assert torch.equal(tok[~is_null], ldm.cond_encoder(y)[~is_null].detach())
    assert abs(is_null.float().mean().item() - 0.3) < 4 * math.sqrt(0.3 * 0.7 / len(y))
    ldm.eval()(z0[:50], y[:50])
    assert not (seen[-1] == null).flatten(1).all(1).any()
    with pytest.raises(ValueError, match="conditional"):
        ldm(z0)


def test_guidance_formula_and_its_batched_use_in_the_sampler():
    eu, ec = torch.randn(4, 3), torch.randn(4, 3)
    torch.testing.assert_close(cfg_eps(eu, ec, 1.0), ec)
    torch.testing.assert_close(cfg_eps(eu, ec, 0.0), eu)
    torch.testing.assert_close(cfg_eps(eu, ec, 3.0), 3 * ec - 2 * eu)     # (1 + w) ε_c − w ε_u, w = 2
    ldm = _ldm().eval()
    y = torch.tensor([1, 7, 3])
    z, t = torch.randn(3, 4, 4, 4), torch.tensor([5, 20, 49])
    with torch.no_grad():
        e_c = ldm.eps(z, t, ldm.tokens(y))
        e_u = ldm.eps(z, t, None)
        torch.testing.assert_close(ldm.guided_eps(y, 1.0)(z, t), e_c)
        torch.testing.assert_close(ldm.guided_eps(y, 0.0)(z, t), e_u)
        torch.testing.assert_close(ldm.guided_eps(None)(z, t), e_u)
        torch.testing.assert_close(ldm.guided_eps(y, 2.5)(z, t), e_u + 2.5 * (e_c - e_u), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(e_c, e_u)


def test_sampling_shapes_pixel_space_clipping_and_argument_errors():
    ldm = _ldm().eval()
    g = torch.Generator().manual_seed(0)
    x = ldm.sample(3, cond=torch.tensor([0, 1, 2]), guidance=2.0, steps=5, generator=g)
    assert x.shape == (3, 1, 8, 8)
    z = ldm.sample(2, steps=5, decode=False, generator=g)
    assert z.shape == (2, 4, 4, 4)
    pix = LatentDiffusion(build_unet(8, 1, block_out_channels=(8, 8), norm_num_groups=4),
                          NoiseSchedule.from_name("linear", 20)).eval()
    out = pix.sample(2, sampler="ddpm", generator=g)
    assert out.shape == (2, 1, 8, 8) and out.abs().max() <= 1 + 1e-6   # x̂_0 clipped in pixel space
    with pytest.raises(ValueError, match="unconditional"):
        pix.sample(2, cond=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="entries"):
        ldm.sample(3, cond=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="cross_attention_dim"):
        LatentDiffusion(ldm.unet, ldm.schedule, None, ClassTokens(10, 2, 8))
    with pytest.raises(ValueError, match="cond_encoder"):
        LatentDiffusion(ldm.unet, ldm.schedule)
    with pytest.raises(ValueError, match="latent channels"):
        LatentDiffusion(build_unet(4, 3, block_out_channels=(8, 8), norm_num_groups=4), ldm.schedule,
                        build_autoencoder("kl", 2, sample_size=8))


def test_embedding_tokens_and_schedule_from_a_diffusers_scheduler():
    enc = EmbeddingTokens(128, n_tokens=3, dim=16)
    assert enc(torch.randn(5, 128)).shape == (5, 3, 16)
    with pytest.raises(ValueError, match="shape"):
        enc(torch.randn(5, 64))
    with pytest.raises(ValueError, match="class labels"):
        ClassTokens(10)(torch.tensor([10]))
    sched = DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2")
    ours = as_schedule(sched)
    torch.testing.assert_close(ours.alphas_cumprod, sched.alphas_cumprod.double(), atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="epsilon"):
        as_schedule(DDPMScheduler(prediction_type="v_prediction"))


# -- cross-attention maps --------------------------------------------------------------------------------------


def test_attention_capture_records_softmax_over_tokens_and_changes_nothing():
    ldm = _ldm().eval()
    z, t, y = torch.randn(2, 4, 4, 4), torch.tensor([3, 30]), torch.tensor([4, 9])
    before = dict(ldm.unet.attn_processors)
    with torch.no_grad():
        plain = ldm.eps(z, t, ldm.tokens(y))
        with capture_cross_attention(ldm.unet) as store:
            captured = ldm.eps(z, t, ldm.tokens(y))
    torch.testing.assert_close(captured, plain, rtol=0, atol=0)
    assert {type(p) for p in ldm.unet.attn_processors.values()} == {type(p) for p in before.values()}
    n_cross = sum(name.endswith("attn2.processor") for name in before)
    assert len(store.sums) == n_cross > 0
    maps = store.maps(size=4)
    assert maps.shape == (2, 2, 4, 4)
    torch.testing.assert_close(maps.sum(1), torch.ones(2, 4, 4))
    # two identical tokens get identical keys: every position splits its attention 50/50
    same = ldm.tokens(y)[:, :1].expand(-1, 2, -1)
    with torch.no_grad(), capture_cross_attention(ldm.unet) as store:
        ldm.eps(z, t, same)
    torch.testing.assert_close(store.maps(4), torch.full((2, 2, 4, 4), 0.5))
    with pytest.raises(ValueError, match="no cross-attention"):
        with capture_cross_attention(ldm.unet) as empty:
            pass
        empty.maps(4)


# -- the one trainer -------------------------------------------------------------------------------------------


def test_latent_model_resumes_to_the_same_weights_as_an_uninterrupted_run(tmp_path):
    torch.set_num_threads(1)
    z0, y = torch.randn(64, 4, 4, 4), torch.arange(64) % 10
    data = batch_sampler(z0, y, batch_size=8)
    base = dict(steps=12, lr=1e-3, seed=7, log_every=4, ema_decay=0.9, **CPU)

    straight = Trainer(_ldm(), module_loss, data, TrainConfig(**base))
    straight.fit()

    class Killed(BaseException):
        pass

    def dies_at_7(model, batch, step):
        if step == 7:
            raise Killed
        return module_loss(model, batch, step)

    ckpt = str(tmp_path / "ckpt")
    with pytest.raises(Killed):
        Trainer(_ldm(), dies_at_7, data, TrainConfig(**base, checkpoint_dir=ckpt, checkpoint_every=3)).fit()
    assert latest_checkpoint(ckpt).name == "step_0000006"
    resumed = Trainer(_ldm(seed=123), module_loss, data, TrainConfig(**base, checkpoint_dir=ckpt, checkpoint_every=3))
    assert resumed.step == 6
    resumed.fit()
    for (k, a), (_, b) in zip(straight.raw_model.state_dict().items(), resumed.raw_model.state_dict().items()):
        assert torch.equal(a, b), k
    for a, b in zip(straight.ema_model.parameters(), resumed.ema_model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)
    # the frozen autoencoder is not trained
    assert all(not p.requires_grad for p in resumed.raw_model.autoencoder.parameters())


def test_activation_bytes_counts_each_saved_storage_once():
    a = torch.randn(1000, requires_grad=True)
    assert activation_bytes(lambda: (a * a).sum().backward()) == 4000          # a saved twice, one storage
    assert activation_bytes(lambda: (a.exp().sum() + (a * 2).sum()).backward()) == 4000   # exp saves its output
    assert activation_bytes(lambda: (a * a).exp().sum().backward()) == 8000


# -- VQ without collapse: EMA codebook, k-means init, dead-code restarts -------------------------------------------


def test_ema_codebook_update_is_van_den_oord_eqs_6_to_8():
    from dfs.latent import ema_codebook_update
    torch.manual_seed(0)
    K, C, gamma, eps = 3, 2, 0.9, 1e-5
    book, N, m = torch.randn(K, C), torch.tensor([1.0, 2.0, 0.5]), torch.randn(K, C)
    z = torch.randn(5, C, dtype=torch.float64).float()
    idx = torch.tensor([0, 0, 2, 0, 2])
    N_ref, m_ref = N.clone(), m.clone()
    for i in range(K):                                   # the equations, one code at a time
        sel = z[idx == i]
        N_ref[i] = gamma * N[i] + (1 - gamma) * len(sel)
        m_ref[i] = gamma * m[i] + (1 - gamma) * sel.sum(0)
    n = N_ref.sum()
    e_ref = m_ref / ((N_ref + eps) / (n + K * eps) * n)[:, None]
    ema_codebook_update(book, N, m, z, idx, gamma, eps)
    torch.testing.assert_close(N, N_ref)
    torch.testing.assert_close(m, m_ref)
    torch.testing.assert_close(book, e_ref)
    torch.testing.assert_close(book[0], m_ref[0] / N_ref[0], rtol=1e-4, atol=1e-6)   # smoothing is tiny


def test_kmeans_finds_separated_clusters():
    from dfs.latent import kmeans
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[5.0, 0], [-5, 0], [0, 5], [0, -5]])
    x = centres.repeat_interleave(50, 0) + 0.1 * torch.randn(200, 2, generator=g)
    found = kmeans(x, 4, iters=20, generator=g)
    assert torch.cdist(centres, found).min(1).values.max() < 0.1


def test_ema_mode_trains_no_codebook_parameter_and_restarts_dead_codes():
    torch.manual_seed(0)
    vq = build_autoencoder("vq", 2, sample_size=8, num_vq_embeddings=16)
    obj = AutoencoderWithLoss(vq, codebook="ema", kmeans_init=False, dead_threshold=0.5)
    book = vq.quantize.embedding.weight
    assert not book.requires_grad and all(p is not book for p in obj.parameters() if p.requires_grad)
    obj.cluster_size.fill_(1.0)
    obj.cluster_size[3] = 0.0                       # code 3 is dead: it must be moved onto an encoder output
    x = torch.rand(2, 1, 8, 8) * 2 - 1
    out = obj(x)
    torch.testing.assert_close(out["loss"], out["rec"] + 0.25 * out["commit"])   # no codebook term
    z_flat = vq.encode(x).latents.detach().permute(0, 2, 3, 1).reshape(-1, 4)
    assert torch.cdist(book[3:4].detach(), z_flat).min() < 1e-5 and out["restarted"] >= 1
    with pytest.raises(ValueError, match="codebook mode"):
        AutoencoderWithLoss(vq, codebook="gumbel")


def test_vq_remedy_keeps_the_codebook_in_use():
    """A small run: with the remedies most of the 64 codes carry the test digits; the plain eq.-3 codebook,
    initialised like diffusers' (uniform ±1/K), uses far fewer."""
    from dfs.latent import codebook_usage
    torch.set_num_threads(1)
    x, _ = digits_images(8)
    usage = {}
    for mode in ("ema", "loss"):
        torch.manual_seed(0)
        vq = build_autoencoder("vq", 2, sample_size=8, num_vq_embeddings=64)
        train(AutoencoderWithLoss(vq, codebook=mode), x[:1500],
              config=TrainConfig(steps=60, batch_size=32, lr=3e-3, ema_decay=None, **CPU))
        usage[mode] = codebook_usage(vq, x[1500:])
    assert usage["ema"]["perplexity"] > 24 and usage["ema"]["dead"] < 16
    assert usage["ema"]["perplexity"] > 1.5 * usage["loss"]["perplexity"]
    assert usage["ema"]["used"] + usage["ema"]["dead"] == 64
