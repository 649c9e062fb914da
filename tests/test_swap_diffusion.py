"""The diffusion face swap (dfs.swap.diffusion): conditioning, guidance, identity loss, chips vs dlib, pairs,
resume through dfs.train, the pipeline adapter (paste-back, PNG metadata, seeds), the CLI and every error message.

Tiny U-Nets at 32 px on real faces of the shared LFW subset (DFS_DATA; CI: ../shared/data/faces)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from dfs.swap.config import MODEL_FIELDS, SwapConfig, load_config
from dfs.swap import diffusion as D

FACES = Path(os.environ.get("DFS_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data" / "faces")
LFW = FACES / "lfw_home" / "lfw_funneled"
pytestmark = pytest.mark.skipif(not LFW.is_dir(), reason=f"no LFW subset at {LFW} (set DFS_DATA)")

PEOPLE = ("Adrien_Brody", "Amelie_Mauresmo")


def tiny(**kw) -> SwapConfig:
    base = dict(image_size=32, block_out_channels=[16, 32], norm_num_groups=8, attention_head_dim=8, id_tokens=2,
                token_dim=16, T=100, id_t_max=100, steps=6, batch_size=4, checkpoint_every=2, log_every=2,
                warmup_steps=0, lr=1e-3, ema_decay=0.9, sample_steps=3)
    base.update(kw)
    return SwapConfig(**base)


def photo(person: str, i: int) -> Path:
    return LFW / person / f"{person}_{i:04d}.jpg"


@pytest.fixture(scope="module")
def pipe():
    from dfs.swap.pipeline import SwapPipeline, SourcePasted
    return SwapPipeline(SourcePasted(), crop_size=32)


@pytest.fixture(scope="module")
def aligned(pipe):
    """Three photos each of two people, aligned at 32 px."""
    return [pipe.align(photo(p, i)) for p in PEOPLE for i in (1, 2, 3)]


@pytest.fixture(scope="module")
def data(aligned):
    return D.SwapData.from_aligned(aligned, [p for p in PEOPLE for _ in range(3)], batch_size=4)


# ---------------------------------------------------------------------------------------------------------------
# configuration


def test_presets_load_and_describe_the_model():
    q, f = load_config("quick"), load_config("full")
    assert q.image_size in (32, 64) and f.image_size >= 128
    assert f.mixed_precision == "bf16" and q.mixed_precision == "no"
    assert set(q.model_dict()) == set(MODEL_FIELDS)
    assert load_config("quick", steps=7).steps == 7


def test_config_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown setting"):
        load_config("quick", image_sise=32)
    with pytest.raises(FileNotFoundError, match="preset"):
        load_config("nope")
    with pytest.raises(ValueError, match="divisible"):
        SwapConfig(image_size=34, block_out_channels=(32, 64, 128))
    f = tmp_path / "c.yaml"
    f.write_text("image_size: 64\nsteps: 3\n")
    c = load_config(f)
    assert (c.image_size, c.steps, c.batch_size) == (64, 3, SwapConfig().batch_size)


def test_plain_levels_choose_where_the_unet_has_cross_attention():
    cfg = tiny(block_out_channels=[8, 16, 32], plain_levels=2)
    unet = D.build_swap_unet(cfg)
    assert [type(b).__name__ for b in unet.down_blocks] == ["DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"]
    assert [type(b).__name__ for b in unet.up_blocks] == ["CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"]
    # the identity tokens still change the output (middle block and last level)
    x, t = torch.randn(1, 3 + D.condition_channels(), 32, 32), torch.tensor([5])
    a = unet(x, t, encoder_hidden_states=torch.randn(1, 2, 16)).sample
    b = unet(x, t, encoder_hidden_states=torch.randn(1, 2, 16)).sample
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="plain_levels must be in"):
        tiny(plain_levels=2)                       # two levels: at least one keeps cross-attention


# ---------------------------------------------------------------------------------------------------------------
# conditioning and geometry


def test_heatmaps_peak_at_their_landmarks():
    lm = torch.full((1, 68, 2), 5.0)
    lm[0, 48:68] = torch.tensor([20.0, 11.0])          # the mouth group at (x=20, y=11)
    h = D.landmark_heatmaps(lm, 32, sigma=1.5)
    assert h.shape == (1, 5, 32, 32)
    mouth = list(D.LANDMARK_GROUPS).index("mouth")
    y, x = np.unravel_index(h[0, mouth].argmax().item(), (32, 32))
    assert (x, y) == (20, 11) and h[0, mouth, 11, 20] == pytest.approx(1.0)
    assert h[0, mouth, 11, 22].item() == pytest.approx(np.exp(-4 / (2 * 1.5 ** 2)), rel=1e-5)


def test_conditioning_shapes_and_masked_target(aligned):
    cfg = tiny()
    m = D.SwapDiffusion(cfg)
    assert m.unet.config.in_channels == 3 + D.condition_channels() == 12
    assert m.unet.config.cross_attention_dim == cfg.token_dim
    tgt = D.to_unit(np.stack([a.crop for a in aligned[:2]]))
    mask = torch.from_numpy(np.stack([a.mask for a in aligned[:2]]))[:, None]
    lm = torch.from_numpy(np.stack([a.landmarks68 for a in aligned[:2]])).float()
    c = m.condition(tgt, mask, lm)
    assert c.shape == (2, 9, 32, 32)
    torch.testing.assert_close(c[:, :3], tgt * (1 - mask))
    inside = mask[:, 0] > 0.999
    assert inside.any() and c[:, :3].permute(1, 0, 2, 3)[:, inside].abs().max() < 1e-2   # face blanked
    tok = m.tokens(torch.randn(2, 128))
    assert tok.shape == (2, cfg.id_tokens, cfg.token_dim)
    assert m.tokens(None, 2).shape == tok.shape
    assert m.eps(torch.randn(2, 3, 32, 32), torch.tensor([3, 50]), c, tok).shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="target must be"):
        m.condition(tgt[:, :, :16], mask, lm)


def test_chip_matrix_matches_dlibs_face_chip(aligned):
    """Our differentiable chip (warp_affine with chip_matrix) against dlib.get_face_chip, also on a rotated face."""
    import cv2
    import dlib

    from dfs.faces.align import apply_affine, warp_affine

    a = aligned[0]
    big = 200
    for angle in (0.0, 25.0):
        R = cv2.getRotationMatrix2D((big / 2, big / 2), angle, big / 32)   # crop -> a rotated, enlarged image
        R[:, 2] = (big - 1) / 2 - R[:, :2] @ np.array([15.5, 15.5])
        img = cv2.warpAffine(a.crop, R, (big, big), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        lm = np.round(apply_affine(R, a.landmarks68))
        det = dlib.full_object_detection(dlib.rectangle(0, 0, big, big), [dlib.point(int(x), int(y)) for x, y in lm])
        ref = np.asarray(dlib.get_face_chip(img, det, 150, 0.25)).astype(np.float64)
        ours = warp_affine(torch.from_numpy(img).permute(2, 0, 1)[None].double(),
                           torch.from_numpy(D.chip_matrix(lm))[None], 150, "border")[0].permute(1, 2, 0).numpy()
        inner = (slice(10, -10), slice(10, -10))
        shifted = np.abs(ref - np.roll(ref, 4, axis=1))[inner].mean()
        assert np.abs(ref - ours)[inner].mean() < 0.25 * shifted, angle


# ---------------------------------------------------------------------------------------------------------------
# guidance and losses


def test_guidance_scale_one_is_conditional_zero_is_unconditional():
    torch.manual_seed(0)
    m = D.SwapDiffusion(tiny()).eval()
    with torch.no_grad():
        m.null_tokens.normal_()
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([10, 60])
    cond = torch.randn(2, 9, 32, 32)
    tok = m.tokens(torch.randn(2, 128))
    with torch.no_grad():
        e_c, e_u = m.eps(x, t, cond, tok), m.eps(x, t, cond, m.tokens(None, 2))
        assert (e_c - e_u).abs().max() > 1e-4                       # the tokens matter
        torch.testing.assert_close(D.guided_eps(m, cond, tok, 1.0)(x, t), e_c)
        torch.testing.assert_close(D.guided_eps(m, cond, tok, 0.0)(x, t), e_u)
        torch.testing.assert_close(D.guided_eps(m, cond, tok, 2.5)(x, t), e_u + 2.5 * (e_c - e_u),
                                   rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_every_parameterisation_gives_one_consistent_eps_and_x0(prediction, data):
    """What the U-Net outputs (ε, v or x_0) is turned into the ε samplers take and the x̂_0 the losses use; the two
    must describe the same x_0 (eq. 2), and the MSE must compare the output with its own target."""
    from dfs.diffusion import predict_x0_from_eps, q_sample, v_target

    torch.manual_seed(0)
    m = D.SwapDiffusion(tiny(prediction=prediction, p_uncond=0.0)).eval()
    target, mask, lm, emb, chip = data(0, torch.Generator().manual_seed(0))
    cond, tok = m.condition(target, mask, lm), m.tokens(emb)
    t, noise = torch.tensor([3, 30, 60, 99]), torch.randn(target.shape)
    x_t = q_sample(m.schedule, target, t, noise)
    with torch.no_grad():   # in float64: recovering x_0 from ε divides by √ᾱ_t ≈ 0.02 at t = 99 of T = 100
        m64 = m.double()
        x64, c64, tok64 = x_t.double(), cond.double(), tok.double()
        out, eps = m64.output(x64, t, c64, tok64), m64.eps(x64, t, c64, tok64)
        m.float()
    x0_from_eps = predict_x0_from_eps(m.schedule, x64, t, eps)
    s_ab, s_1mab = (m.schedule.alphas_cumprod[t].sqrt().view(-1, 1, 1, 1),
                    (1 - m.schedule.alphas_cumprod[t]).sqrt().view(-1, 1, 1, 1))
    x_t = x64
    x0_direct = {"eps": (x_t - s_1mab * out) / s_ab, "v": s_ab * x_t - s_1mab * out, "x0": out}[prediction]
    torch.testing.assert_close(x0_from_eps, x0_direct, rtol=1e-9, atol=1e-9)
    # the loss's MSE is against the parameterisation's own target
    torch.manual_seed(5)
    got = m(target, mask, lm, emb, chip)["mse"]
    torch.manual_seed(5)
    tt = torch.randint(0, m.schedule.T, (len(target),))
    nn_ = torch.randn(target.shape)
    xx = q_sample(m.schedule, target, tt, nn_)
    with torch.no_grad():
        o = m.output(xx, tt, cond, tok)
    want = {"eps": nn_, "x0": target, "v": v_target(m.schedule, target, tt, nn_)}[prediction]
    torch.testing.assert_close(got, torch.mean((o - want) ** 2), rtol=1e-5, atol=1e-6)


def test_strength_starts_from_the_noised_target_on_the_last_timesteps(data, monkeypatch):
    """SDEdit: strength s runs the last ⌈s·K⌉ of the K DDIM timesteps from x_{t_0} = √ᾱ x^tgt + √(1−ᾱ) x_T."""
    from dfs.diffusion import ddim_timesteps, q_sample

    torch.manual_seed(0)
    m = D.SwapDiffusion(tiny()).eval()
    target, mask, lm, emb, chip = data(0, torch.Generator().manual_seed(0))
    seen = {}

    def fake_ddim(eps_fn, sched, shape, steps, eta, generator, dev, clip_x0, x_T, progress, timesteps,
                  after_step):
        seen.update(x_T=x_T, timesteps=timesteps)
        return x_T

    monkeypatch.setattr(D, "ddim_sample", fake_ddim)
    x_T = torch.randn(target.shape, generator=torch.Generator().manual_seed(1))
    D.sample_swap(m, target, mask, lm, emb, steps=10, x_T=x_T, strength=0.35)
    want = ddim_timesteps(m.schedule.T, 10)[-4:]                      # ⌈0.35 · 10⌉ = 4
    assert seen["timesteps"] == want
    torch.testing.assert_close(seen["x_T"], q_sample(m.schedule, target, want[0], x_T))
    D.sample_swap(m, target, mask, lm, emb, steps=10, x_T=x_T)          # strength 1: pure noise, every timestep
    assert seen["timesteps"] is None and torch.equal(seen["x_T"], x_T)
    # a model given the source's pixels starts from the warp composited into the target, not from the target
    mp = D.SwapDiffusion(tiny(source_pixels=True)).eval()
    ref = torch.rand(target.shape) * 2 - 1
    D.sample_swap(mp, target, mask, lm, emb, steps=10, x_T=x_T, strength=0.35, reference=ref)
    torch.testing.assert_close(seen["x_T"], q_sample(mp.schedule, mask * ref + (1 - mask) * target, want[0], x_T))
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="strength"):
            D.sample_swap(m, target, mask, lm, emb, steps=10, x_T=x_T, strength=bad)


def test_ilvr_swap_keeps_the_targets_low_pass_exactly(data):
    """ILVR (Choi et al. 2021, eq. 8): after the last refinement φ_N(x_0) = φ_N(target), the detail is the model's."""
    from dfs.diffusion import low_pass

    torch.manual_seed(0)
    m = D.SwapDiffusion(tiny()).eval()
    target, mask, lm, emb, _ = data(0, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    out = D.sample_swap(m, target, mask, lm, emb, steps=4, guidance=1.0, generator=g, ilvr=8)
    torch.testing.assert_close(low_pass(out, 8), low_pass(target, 8), atol=1e-5, rtol=0)
    plain = D.sample_swap(m, target, mask, lm, emb, steps=4, guidance=1.0, generator=torch.Generator().manual_seed(1))
    assert (low_pass(plain, 8) - low_pass(target, 8)).abs().max() > 0.05      # without ILVR it does not
    assert ((out - low_pass(out, 8)) - (target - low_pass(target, 8))).abs().max() > 0.05   # detail: not the target's


def test_identity_loss_weight_schedule():
    from dfs.diffusion import NoiseSchedule
    s = NoiseSchedule.from_name("cosine", 100)
    t = torch.arange(100)
    w = D.id_loss_weight(s, t, 40)
    torch.testing.assert_close(w[:40], s.alphas_cumprod[:40].float())
    assert (w[40:] == 0).all() and (w[:40].diff() < 0).all()


def test_identity_loss_gradient_reaches_the_unet(data):
    torch.manual_seed(1)
    m = D.SwapDiffusion(tiny(p_uncond=0.0, id_weight=1.0))
    batch = data(0, torch.Generator().manual_seed(0))
    out = m(*batch)
    assert out["id_loss"] > 0
    out["id_loss"].backward()
    grads = [p.grad for p in m.unet.parameters() if p.grad is not None]
    assert grads and sum(g.abs().sum() for g in grads) > 0
    assert m.id_proj.proj.weight.grad.abs().sum() > 0             # through cross-attention to the tokens
    # above t_max the identity loss is zero: no gradient from it
    m.zero_grad()
    m.config.id_t_max = 1
    torch.manual_seed(1)
    out = m(*batch)
    assert out["id_loss"] == 0


def test_identity_standardisation_separates_people_tokens(data):
    """Raw unit embeddings share most of their direction, so W e barely differs between people; W (e − μ)/σ does."""
    torch.manual_seed(0)
    m = D.SwapDiffusion(tiny())
    e = data.embeddings

    def spread():   # variation of the tokens between the photos, relative to the tokens' own size
        with torch.no_grad():
            tok = m.tokens(e) - m.id_proj.proj.bias.view(1, *m.null_tokens.shape)
        return float(tok.std(0).mean() / tok.abs().mean())

    raw = spread()
    m.set_identity_statistics(e)
    torch.testing.assert_close(((e - m.id_mean) / m.id_std).mean(0), torch.zeros(e.shape[1]), rtol=0, atol=1e-5)
    assert spread() > 2 * raw
    with pytest.raises(ValueError, match="embeddings must be"):
        m.set_identity_statistics(e[:1])
    # the statistics are saved with the weights
    assert {"id_mean", "id_std"} <= set(m.state_dict())


def test_pairs_are_same_person_different_photo(data):
    i, j = data.pairs(200, torch.Generator().manual_seed(0))
    assert (i != j).all()
    assert (data.identities[i.numpy()] == data.identities[j.numpy()]).all()
    assert len(set(j.tolist())) == len(data)                       # every photo serves as a source


def test_flipped_targets_are_mirrored_consistently(data):
    flipping = D.SwapData(data.crops, data.masks, data.landmarks68, data.embeddings, data.identities, batch_size=64,
                          chip_M=data.chip_M, flip=True)
    g = torch.Generator().manual_seed(0)
    crops, masks, lm, emb, chip = flipping(0, g)
    i, j = flipping.pairs(64, torch.Generator().manual_seed(0))       # the same draw, before the coin flips
    mirrored = [k for k in range(64) if not torch.equal(crops[k], data.crops[i[k]])]
    assert 10 < len(mirrored) < 54                                    # about half
    for k in range(64):
        if k in mirrored:
            assert torch.equal(crops[k], data.crops[i[k]].flip(-1)) and torch.equal(masks[k], data.masks[i[k]].flip(-1))
            assert torch.allclose(lm[k], torch.as_tensor(align_mirror(data.landmarks68[i[k]])))
        else:
            assert torch.equal(lm[k], data.landmarks68[i[k]]) and torch.equal(chip[k], data.chip_M[i[k]])
    torch.testing.assert_close(emb, data.embeddings[j])               # identity is the source's either way
    # the mirrored chip is the mirror of the original chip: dlib's embedding of the two is the same person
    k = mirrored[0]
    e_orig = D.identity_of_crops(data.crops[i[k]][None], data.chip_M[i[k]][None])
    e_flip = D.identity_of_crops(crops[k][None], chip[k][None])
    assert float((e_orig * e_flip).sum()) > 0.9


def align_mirror(lm):
    from dfs.faces.align import mirror_landmarks68
    return mirror_landmarks68(lm, 32)


# ---------------------------------------------------------------------------------------------------------------
# training, resume, checkpoints


def test_resume_after_a_crash_matches_an_uninterrupted_run(tmp_path, data):
    cfg = tiny(id_weight=0.1, steps=4)
    straight = D.train_swap(cfg, data=data, progress=False, checkpoint_dir=tmp_path / "a")

    class Killed(BaseException):
        pass

    def dies_at_3(model, batch, step):
        if step == 3:
            raise Killed
        return D.swap_loss(model, batch, step)

    with pytest.raises(Killed):
        D.train_swap(cfg, data=data, progress=False, checkpoint_dir=tmp_path / "b", loss_fn=dies_at_3)
    resumed = D.train_swap(cfg, data=data, progress=False, checkpoint_dir=tmp_path / "b")
    assert resumed.step == 4
    for a, b in zip(straight.raw_model.parameters(), resumed.raw_model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert [h["step"] for h in resumed.history] == [2, 4]
    assert {"mse", "id_loss"} <= set(resumed.history[-1])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, data):
    d = tmp_path_factory.mktemp("ckpt")
    D.train_swap(tiny(steps=2), data=data, progress=False, checkpoint_dir=d)
    return d


def test_checkpoint_errors(tmp_path, checkpoint, data):
    with pytest.raises(FileNotFoundError, match="dfs train-swap"):
        D.load_swap_model(tmp_path / "nothing")
    with pytest.raises(ValueError, match="image_size: checkpoint 32 vs config 64"):
        D.load_swap_model(checkpoint, config=tiny(image_size=64))
    with pytest.raises(ValueError, match="trained for another model"):   # resuming into another configuration
        D.train_swap(tiny(steps=3, token_dim=32), data=data, progress=False, checkpoint_dir=checkpoint)
    model, cfg, path = D.load_swap_model(checkpoint)
    assert cfg.image_size == 32 and path.name == "step_0000002" and not model.training
    # a checkpoint written before a model field existed loads with that field's default (here plain_levels = 1)
    old = tmp_path / "old"
    shutil.copytree(checkpoint, old)
    for f in old.rglob("state.json"):
        d = json.loads(f.read_text())
        del d["config"]["extra"]["swap_config"]["plain_levels"]
        f.write_text(json.dumps(d))
    assert D.load_swap_model(old, config=tiny())[1].plain_levels == 1


def test_out_of_memory_is_a_clear_error(checkpoint, aligned, monkeypatch):
    from dfs.swap.pipeline import SwapPipeline

    def oom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    method = D.DiffusionSwap(checkpoint, device="cpu")
    monkeypatch.setattr(method.model, "eps", oom)
    with pytest.raises(D.SwapOutOfMemory, match="fewer sampling steps or a smaller batch"):
        SwapPipeline(method).run(aligned[:1], aligned[3:4])


# ---------------------------------------------------------------------------------------------------------------
# the pipeline adapter and the command line


def test_pipeline_swap_pastes_back_outside_the_mask_and_writes_metadata(tmp_path, checkpoint):
    from dfs.swap.pipeline import SwapPipeline, read_png_metadata

    pipe = SwapPipeline(D.DiffusionSwap(checkpoint, steps=3, guidance=2.0, device="cpu"))
    src, tgt = pipe.align(photo(PEOPLE[0], 1), "source"), pipe.align(photo(PEOPLE[1], 1), "target")
    r0, r0b, r1 = (pipe.run([src], [tgt], seed=s)[0] for s in (0, 0, 1))
    assert r0.image.shape == tgt.image.shape and r0.crop.shape == (32, 32, 3)
    np.testing.assert_array_equal(r0.image, r0b.image)             # same seed, same swap
    assert np.abs(r0.crop.astype(int) - r1.crop).mean() > 1         # another seed, another x_T
    # outside the (inverse-warped) mask the photo is untouched; inside it changed
    from dfs.evaluate import _photo_mask
    m = _photo_mask(tgt)
    np.testing.assert_array_equal(r0.image[m == 0], tgt.image[m == 0])
    assert np.abs(r0.image[m > 0.99].astype(int) - tgt.image[m > 0.99]).mean() > 1
    meta = read_png_metadata(r0.save(tmp_path / "o.png"))
    assert meta["dfs:method"] == "diffusion" and meta["dfs:seed"] == "0"
    assert meta["dfs:checkpoint"].endswith("step_0000002") and "Synthetic" in meta["Description"]


def test_identity_guidance_raises_identity_cosine(checkpoint, aligned):
    """With an untrained model the identity gradient alone must move ID(x̂_0) towards the source."""
    model, _, _ = D.load_swap_model(checkpoint)
    tgt = D.to_unit(np.stack([aligned[3].crop]))
    mask = torch.from_numpy(aligned[3].mask)[None, None]
    lm = torch.from_numpy(aligned[3].landmarks68)[None].float()
    src = D.identity_of_crops(D.to_unit(aligned[0].crop[None]), D.chip_matrices(aligned[0].landmarks68[None]))
    x_T = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    cos = []
    for g in (0.0, 50.0):
        x0 = D.sample_swap(model, tgt, mask, lm, src, steps=5, guidance=1.0, id_guidance=g, x_T=x_T)
        x0 = mask * x0 + (1 - mask) * tgt
        cos.append((D.identity_of_crops(x0, D.chip_matrices(lm)) * src).sum().item())
    assert cos[1] > cos[0] + 0.01, cos


def test_identity_guidance_through_views_raises_the_cosine_and_ignores_the_batch(checkpoint, aligned):
    """Guidance through K random blurred, shifted views (Athalye et al. 2018, eq. 1) still moves ID(x̂_0) towards
    the source, differs from the exact-composite guidance, and a swap comes out the same alone or in a batch (the
    views' draws are shared by the batch, not drawn per row)."""
    model, _, _ = D.load_swap_model(checkpoint)
    idx = [3, 2]
    tgt = D.to_unit(np.stack([aligned[i].crop for i in idx]))
    mask = torch.from_numpy(np.stack([aligned[i].mask for i in idx]))[:, None]
    lm = torch.from_numpy(np.stack([aligned[i].landmarks68 for i in idx])).float()
    src = D.identity_of_crops(D.to_unit(aligned[0].crop[None]), D.chip_matrices(aligned[0].landmarks68[None]))
    src = src.expand(2, -1)
    x_T = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    runs = {}
    for g, k in ((0.0, 0), (50.0, 0), (50.0, 2)):
        runs[g, k] = D.sample_swap(model, tgt, mask, lm, src, steps=5, guidance=1.0, id_guidance=g, id_views=k,
                                   x_T=x_T)
    cos = {key: (D.identity_of_crops(mask[:1] * x0[:1] + (1 - mask[:1]) * tgt[:1], D.chip_matrices(lm[:1]))
                 * src[:1]).sum().item() for key, x0 in runs.items()}
    assert cos[50.0, 2] > cos[0.0, 0] + 0.01, cos
    assert (runs[50.0, 2] - runs[50.0, 0]).abs().max() > 1e-3
    alone = D.sample_swap(model, tgt[:1], mask[:1], lm[:1], src[:1], steps=5, guidance=1.0, id_guidance=50.0,
                          id_views=2, x_T=x_T[:1])
    torch.testing.assert_close(alone, runs[50.0, 2][:1], atol=1e-4, rtol=0)


def test_identity_guidance_on_x0_is_a_gradient_step_on_the_predicted_image(checkpoint, aligned):
    """gradient="x0": predict_x0(ε̂) = x̂_0 + γ (1−ᾱ_t)/ᾱ_t ∇_{x̂_0} cos(ID(m ⊙ x̂_0 + (1−m) ⊙ target), e), the step
    of :func:`identity_guided`'s docstring, checked against autograd on the same x̂_0; and it raises the cosine."""
    from dfs.diffusion import extract, predict_x0_from_eps
    model, _, _ = D.load_swap_model(checkpoint)
    tgt = D.to_unit(np.stack([aligned[3].crop]))
    mask = torch.from_numpy(aligned[3].mask)[None, None]
    lm = torch.from_numpy(aligned[3].landmarks68)[None].float()
    chip = D.chip_matrices(lm)
    src = D.identity_of_crops(D.to_unit(aligned[0].crop[None]), D.chip_matrices(aligned[0].landmarks68[None]))
    cond = model.condition(tgt, mask, lm, None)
    base = D.guided_eps(model, cond, model.tokens(src), 1.0)
    x, t, gamma = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1)), torch.tensor([40]), 30.0
    with torch.no_grad():
        eps = D.identity_guided(base, model, tgt, mask, src, chip, gamma, views=0, gradient="x0")(x, t)
        x0 = predict_x0_from_eps(model.schedule, x, t, base(x, t)).clamp(-1, 1)
    x0 = x0.requires_grad_(True)
    cos = (D.identity_of_crops(mask * x0 + (1 - mask) * tgt, chip) * src).sum()
    (g,) = torch.autograd.grad(cos, x0)
    a = extract(model.schedule.alphas_cumprod, t, x)
    expected = x0.detach() + gamma * (1 - a) / a * g
    torch.testing.assert_close(predict_x0_from_eps(model.schedule, x, t, eps), expected, atol=1e-4, rtol=1e-4)
    x_T = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    cos = []
    for gm in (0.0, 5.0):
        out = D.sample_swap(model, tgt, mask, lm, src, steps=5, guidance=1.0, id_guidance=gm, id_views=1,
                            id_gradient="x0", x_T=x_T)
        cos.append((D.identity_of_crops(mask * out + (1 - mask) * tgt, chip) * src).sum().item())
    assert cos[1] > cos[0] + 0.01, cos
    with pytest.raises(ValueError, match="gradient must be"):
        D.identity_guided(base, model, tgt, mask, src, chip, gamma, gradient="x_0")


def test_no_face_errors_name_the_file(tmp_path, checkpoint):
    from PIL import Image

    from dfs.faces.detect import FaceNotFoundError
    from dfs.swap.pipeline import SwapPipeline

    blank = tmp_path / "wall.png"
    Image.fromarray(np.full((120, 120, 3), 128, np.uint8)).save(blank)
    pipe = SwapPipeline(D.DiffusionSwap(checkpoint, steps=2, device="cpu"))
    with pytest.raises(FaceNotFoundError, match=r"source photo.*wall\.png"):
        pipe.swap(blank, photo(PEOPLE[1], 1))
    with pytest.raises(FaceNotFoundError, match=r"target photo.*wall\.png"):
        pipe.swap(photo(PEOPLE[0], 1), blank)


def test_cli_swap_on_a_target_folder_and_errors(tmp_path, checkpoint, capsys):
    from dfs.cli import main
    from dfs.swap.pipeline import read_png_metadata

    folder = tmp_path / "targets"
    folder.mkdir()
    for i in (1, 2):
        shutil.copy(photo(PEOPLE[1], i), folder / f"t{i}.jpg")
    out = tmp_path / "out"
    rc = main(["swap", "--source", str(photo(PEOPLE[0], 1)), "--target", str(folder), "--out", str(out),
               "--steps", "2", "--seed", "5", "--checkpoint", str(checkpoint)])
    assert rc == 0
    files = sorted(out.glob("*.png"))
    assert [f.name for f in files] == ["t1.png", "t2.png"]
    assert [read_png_metadata(f)["dfs:seed"] for f in files] == ["5", "6"]
    rc = main(["swap", "--source", str(photo(PEOPLE[0], 1)), "--target", str(folder / "t1.jpg"),
               "--out", str(tmp_path / "x.png"), "--checkpoint", str(tmp_path / "missing")])
    assert rc == 2 and "no face-swap checkpoint" in capsys.readouterr().err
    rc = main(["swap", "--source", str(photo(PEOPLE[0], 1)), "--target", str(folder / "t1.jpg"),
               "--out", str(tmp_path / "y.png"), "--checkpoint", str(checkpoint), "--ilvr", "5"])
    assert rc == 2 and "ilvr must be 0 (off) or a divisor of the crop size 32" in capsys.readouterr().err
    assert not (tmp_path / "y.png").exists()


def small_training_config(tmp_path) -> str:
    """A tiny 2-step swap configuration (YAML) over a copied folder of three people, three photos each, with one
    held out: what `dfs train-swap --config` tests run on."""
    import yaml
    root = tmp_path / "faces"
    for p in PEOPLE + ("Andre_Agassi",):
        (root / p).mkdir(parents=True)
        for i in (1, 2, 3):
            shutil.copy(photo(p, i), root / p)
    cfg = tiny(steps=2, data=str(root), held_out=1, cache_dir=str(tmp_path / "cache"),
               checkpoint_dir=str(tmp_path / "run")).to_dict()
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    return str(tmp_path / "c.yaml")


def test_cli_train_swap_on_a_small_folder(tmp_path, capsys):
    """`dfs train-swap --config file.yaml` end to end: identity split, face cache, Trainer, checkpoint."""
    from dfs.cli import main

    assert main(["train-swap", "--config", small_training_config(tmp_path), "--no-progress"]) == 0
    assert (tmp_path / "run" / "step_0000002" / "ema.safetensors").is_file()
    assert "step_0000002" in capsys.readouterr().out


def test_swap_identity_score_uses_cross_identity_pairs(data, checkpoint):
    i, j = D.cross_pairs(data, 20, seed=3)
    assert (data.identities[i.numpy()] != data.identities[j.numpy()]).all()
    model, _, _ = D.load_swap_model(checkpoint)
    s = D.swap_identity_score(model, data, n=3, steps=2, seed=1)
    assert -1 <= s["cos_source"] <= 1 and -1 <= s["cos_target"] <= 1
    assert s["results"].shape == (3, 3, 32, 32)
    # outside the mask the result is the target itself
    outside = (data.masks[s["targets"]] == 0).expand(-1, 3, -1, -1)
    assert outside.any()
    torch.testing.assert_close(s["results"][outside], data.crops[s["targets"]][outside])


# ---------------------------------------------------------------------------------------------------------------
# the source's pixels: warped reference, its degradation, the residual on it, and the null condition


def test_warping_a_face_onto_itself_gives_the_face_back(aligned):
    a = aligned[0]
    ref = D.warped_references([a.crop], [a.landmarks68], [a.crop], [a.landmarks68])[0]
    m = torch.from_numpy(a.mask) > 0.5
    err = (ref - D.to_unit(a.crop[None])[0]).abs()[:, m]
    assert err.mean() < 0.02          # identity warp and a colour transfer onto its own statistics
    g = torch.Generator().manual_seed(0)
    degraded = D.warped_references([a.crop], [a.landmarks68], [a.crop], [a.landmarks68], g, warp_jitter=0.02,
                                   colour_jitter=0.1, blur_prob=1.0)[0]
    assert (degraded - ref).abs()[:, m].mean() > 0.02 and degraded.abs().max() <= 1 + 1e-6


def test_source_pixels_model_needs_its_reference_and_drops_it_for_the_null_branch(data):
    cfg = tiny(source_pixels=True)
    model = D.SwapDiffusion(cfg)
    assert model.unet.config.in_channels == 3 + D.condition_channels(True) == 15
    i, j = data.pairs(2, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="needs the warped source"):
        model.condition(data.crops[i], data.masks[i], data.landmarks68[i])
    ref = data.references(i, j)
    cond = model.condition(data.crops[i], data.masks[i], data.landmarks68[i], ref)
    torch.testing.assert_close(cond[:, -3:], ref * data.masks[i])
    null = model.null_condition(cond)
    assert torch.equal(null[:, :-3], cond[:, :-3]) and not null[:, -3:].any()
    src = D.SwapData(data.crops, data.masks, data.landmarks68, data.embeddings, data.identities, 4,
                     source_pixels=True, augment={"warp_jitter": 0.01, "colour_jitter": 0.05, "blur_prob": 0.5})
    batch = src(0, torch.Generator().manual_seed(1))
    assert len(batch) == 6 and batch[5].shape == batch[0].shape
    loss = model(*batch)
    assert torch.isfinite(loss["loss"])
    with pytest.raises(ValueError, match="augment takes"):
        D.SwapData(data.crops, data.masks, data.landmarks68, data.embeddings, data.identities, 4, augment={"x": 1})


def test_reference_skip_is_a_residual_on_the_warped_source(data):
    with pytest.raises(ValueError, match="reference_skip adds the warped source"):
        tiny(reference_skip=True, prediction="v", source_pixels=True)
    model = D.SwapDiffusion(tiny(source_pixels=True, reference_skip=True, prediction="x0")).eval()
    i, j = data.pairs(2, torch.Generator().manual_seed(0))
    cond = model.condition(data.crops[i], data.masks[i], data.landmarks68[i], data.references(i, j))
    x, t, tok = torch.randn(2, 3, 32, 32), torch.tensor([5, 50]), model.tokens(data.embeddings[j])
    raw = model.unet(torch.cat([x, cond], 1), t, encoder_hidden_states=tok).sample
    torch.testing.assert_close(model.output(x, t, cond, tok), raw + cond[:, -3:])
    null = model.null_condition(cond)
    raw0 = model.unet(torch.cat([x, null], 1), t, encoder_hidden_states=tok).sample
    torch.testing.assert_close(model.output(x, t, null, tok), raw0)      # nothing to add in the ∅ branch


def test_sampler_options_make_the_cli_flags_and_check_the_model():
    import argparse

    from dfs.swap.config import SamplerOptions
    p = argparse.ArgumentParser()
    SamplerOptions.add_arguments(p)
    flags = {a.dest for a in p._actions if a.dest != "help"}
    assert flags == {"steps", "guidance", "id_guidance", "id_views", "id_gradient", "strength", "ilvr"}
    o = SamplerOptions.from_args(p.parse_args(["--steps", "7", "--id-guidance", "0.5"]))
    assert o.given() == {"steps": 7, "id_guidance": 0.5}
    cfg = tiny()
    r = o.resolve(cfg)
    assert (r.steps, r.guidance, r.id_guidance, r.strength, r.ilvr) == (7, cfg.guidance, 0.5, 1.0, 0)
    for bad, msg in (({"steps": 0}, "steps must be in"), ({"guidance": -1.0}, "must be >= 0"),
                     ({"strength": 1.5}, "strength must be in"), ({"ilvr": 5}, "ilvr must be 0"),
                     ({"id_views": -1}, "id_views must be >= 0"), ({"id_gradient": "x"}, "id_gradient must be")):
        with pytest.raises(ValueError, match=msg):
            SamplerOptions(**bad).resolve(cfg)


def test_diffusion_swap_takes_options_one_way(checkpoint):
    from dfs.swap.config import SamplerOptions
    m = D.DiffusionSwap(checkpoint, steps=2, device="cpu")
    assert m.sampler.steps == 2 and m.sampler.guidance == tiny().guidance
    with pytest.raises(ValueError, match="either as sampler"):
        D.DiffusionSwap(checkpoint, sampler=SamplerOptions(steps=2), steps=3, device="cpu")


def test_cross_identity_pairs_take_the_clean_warp_as_x0_and_leave_earlier_steps_alone(data):
    def make(**kw):
        return D.SwapData(data.crops, data.masks, data.landmarks68, data.embeddings, data.identities, 4,
                          source_pixels=True, augment={"colour_jitter": 0.1}, **kw)
    with pytest.raises(ValueError, match="need source_pixels"):
        D.SwapData(data.crops, data.masks, data.landmarks68, data.embeddings, data.identities, 4, p_cross=0.5)
    with pytest.raises(ValueError, match="p_cross must be in"):
        tiny(source_pixels=True, p_cross=1.5)
    plain, later = make(), make(p_cross=1.0, cross_after=100)
    for a, b in zip(plain(5, torch.Generator().manual_seed(3)), later(5, torch.Generator().manual_seed(3))):
        assert torch.equal(a, b)                    # before cross_after: not one extra random draw
    cross = make(p_cross=1.0)
    g = torch.Generator().manual_seed(4)
    i, j = cross.pairs(4, g)
    j = cross.other_person(i, g)
    assert (cross.identities[i.numpy()] != cross.identities[j.numpy()]).all()
    x0, mask, lm, emb, chip, ref = cross.batch(i, j, torch.Generator().manual_seed(5), torch.ones(4, dtype=torch.bool))
    clean = D.warped_references(D.to_uint8(cross.crops[j]), cross.landmarks68[j], D.to_uint8(cross.crops[i]),
                                cross.landmarks68[i])
    torch.testing.assert_close(x0, mask * clean + (1 - mask) * cross.crops[i])   # no flips: flip is off here
    torch.testing.assert_close(emb, cross.embeddings[j])
    assert (ref - clean).abs().mean() > 0.01      # the input reference is degraded, the x_0 is not
