"""FaceShifter (dfs.swap.faceshifter, dfs.swap.faceshifter_train): AAD shapes and its attention mask, the losses on
known cases, one generator / discriminator step, exact resume of both stages, HEAR-Net, the pipeline adapter, the
CLI (`dfs swap --method faceshifter`, `dfs eval`, `dfs train-swap --model faceshifter`) and its error messages.

Tiny networks at 32 px on real faces of the shared LFW subset (DFS_DATA; CI: ../shared/data/faces)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from shared_data import shared_faces, shared_lfw_photos

from dfs.swap import faceshifter as FS
from dfs.swap import faceshifter_train as FT
from dfs.swap.faceshifter import FaceShifterConfig, load_config

PEOPLE = ("Adrien_Brody", "Amelie_Mauresmo")


def tiny(**kw) -> FaceShifterConfig:
    base = {"image_size": 32, "enc_channels": [8, 8, 8, 8], "gen_channels": [8, 8, 8, 8], "disc_channels": 8,
            "disc_layers": 2, "disc_scales": 2, "hear_channels": [8, 8], "steps": 4, "hear_steps": 2,
            "batch_size": 4, "checkpoint_every": 2, "log_every": 2, "ema_decay": 0.9}
    base.update(kw)
    return FaceShifterConfig(**base)


def unit(n, d=128, seed=0):
    return torch.nn.functional.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


def photo(person: str, i: int):
    return shared_lfw_photos() / person / f"{person}_{i:04d}.jpg"


@pytest.fixture(scope="module")
def aligned():
    from dfs.swap.pipeline import SourcePasted, SwapPipeline
    pipe = SwapPipeline(SourcePasted(), crop_size=32)
    return [pipe.align(photo(p, i)) for p in PEOPLE for i in (1, 2, 3)]


@pytest.fixture(scope="module")
def data(aligned):
    from dfs.swap import diffusion as D
    return D.SwapData.from_aligned(aligned, [p for p in PEOPLE for _ in range(3)], batch_size=4)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, data):
    root = tmp_path_factory.mktemp("fs")
    FT.train_faceshifter(tiny(steps=2, hear_steps=2), data=data, progress=False, checkpoint_dir=root)
    return root


# ---------------------------------------------------------------------------------------------------------------
# configuration


def test_presets_load_and_the_full_one_has_the_papers_widths():
    q, f = load_config("quick"), load_config("full")
    assert q.image_size == 64 and f.image_size == 256 and f.mixed_precision == "bf16"
    assert f.enc_channels == (32, 64, 128, 256, 512, 1024, 1024)
    assert f.gen_channels == (1024, 1024, 1024, 512, 256, 128, 64)
    # z_att^1 ... z_att^8 of the paper's attributes encoder: 1024, 2048, 1024, 512, 256, 128, 64, 64
    assert FS.AttributeEncoder.channels(f.enc_channels) == [1024, 2048, 1024, 512, 256, 128, 64, 64]
    assert (q.att_weight, q.rec_weight, q.id_weight, q.id_center) == (10, 10, 100, True)   # 40 training people
    assert (f.att_weight, f.rec_weight, f.id_weight, f.id_center) == (10, 10, 30, False)
    assert set(q.model_dict()) == set(FS.MODEL_FIELDS)
    assert load_config("quick", steps=7).steps == 7


def test_config_errors(tmp_path):
    with pytest.raises(ValueError, match="power of two"):
        tiny(image_size=48)
    with pytest.raises(ValueError, match="power of two >= 32"):
        tiny(image_size=16, enc_channels=[8] * 3, gen_channels=[8] * 3)
    with pytest.raises(ValueError, match="need 4 widths each"):
        tiny(enc_channels=[8, 8, 8])
    with pytest.raises(ValueError, match="p_same"):
        tiny(p_same=1.5)
    with pytest.raises(ValueError, match="below two pixels"):
        tiny(disc_layers=4, disc_scales=2)
    with pytest.raises(ValueError, match="unknown FaceShifter setting"):
        load_config("quick", image_sise=32)
    with pytest.raises(FileNotFoundError, match="preset"):
        load_config("nope")
    f = tmp_path / "c.yaml"
    f.write_text("- a list\n")
    with pytest.raises(ValueError, match="YAML mapping"):
        load_config(f)


# ---------------------------------------------------------------------------------------------------------------
# AAD and AEI-Net


def test_aad_layer_mixes_attribute_and_identity_modulation_through_its_mask():
    torch.manual_seed(0)
    layer = FS.AADLayer(6, 5, 128)
    h, z_att, z_id = torch.randn(2, 6, 8, 8), torch.randn(2, 5, 8, 8), unit(2)
    out, M = layer(h, z_att, z_id)
    assert out.shape == (2, 6, 8, 8) and M.shape == (2, 1, 8, 8)
    assert M.min() >= 0 and M.max() <= 1 and M.std() > 0
    # the closed form: h̄ instance-normalised, A and I the two modulations, h_out their M-weighted mix
    hb = (h - h.mean((2, 3), keepdim=True)) / torch.sqrt(h.var((2, 3), unbiased=False, keepdim=True) + 1e-5)
    ga, ba = layer.att(z_att).chunk(2, 1)
    gi, bi = layer.id(z_id)[:, :, None, None].chunk(2, 1)
    A, I = ga * hb + ba, gi * hb + bi
    torch.testing.assert_close(out, (1 - M) * A + M * I, rtol=1e-5, atol=1e-5)
    # a mask saturated at 1 takes the identity branch only; at 0 the attribute branch only
    with torch.no_grad():
        layer.mask.weight.zero_()
        layer.mask.bias.fill_(50.0)
        torch.testing.assert_close(layer(h, z_att, z_id)[0], I, rtol=1e-5, atol=1e-5)
        layer.mask.bias.fill_(-50.0)
        torch.testing.assert_close(layer(h, z_att, z_id)[0], A, rtol=1e-5, atol=1e-5)


def test_aei_net_shapes_levels_and_masks():
    cfg = tiny(enc_channels=[4, 6, 8, 10], gen_channels=[12, 10, 8, 6])
    aei = FS.AEINet(cfg)
    x, z = torch.rand(3, 3, 32, 32) * 2 - 1, unit(3)
    y, z_att = aei(x, z)
    assert y.shape == (3, 3, 32, 32) and y.abs().max() <= 1
    assert [t.shape[1:] for t in z_att] == [(10, 2, 2), (16, 4, 4), (12, 8, 8), (8, 16, 16), (8, 32, 32)]
    assert [t.shape[1] for t in z_att] == FS.AttributeEncoder.channels(cfg.enc_channels)
    y2, masks = aei.with_masks(x, z)
    torch.testing.assert_close(y, y2)
    assert [m.shape[-1] for m in masks] == [2, 2, 4, 4, 8, 8, 16, 16, 32, 32]
    assert all(m.shape[:2] == (3, 1) and m.min() >= 0 and m.max() <= 1 for m in masks)
    # the identity changes the result; a batch is swapped pair by pair
    assert (aei.eval()(x, unit(3, seed=1))[0] - aei(x, z)[0]).abs().max() > 1e-4
    torch.testing.assert_close(aei(x[:1], z[:1])[0], aei(x, z)[0][:1], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r"x_t must be \(B, 3, 32, 32\)"):
        aei(x[:, :, :16, :16], z)
    with pytest.raises(ValueError, match=r"z_id must be \(B, 128\)"):
        aei(x, z[:2])


def test_a_centred_identity_input_standardises_the_training_vectors_and_ships_with_the_weights(tmp_path, data):
    """id_center: the generator reads (z − μ)/σ with μ, σ of the training faces' vectors, set before training and
    saved with (and loaded from) the EMA weights; the identity loss still compares the raw vectors."""
    cfg = tiny(steps=2, hear_steps=1, id_center=True)
    aei = FS.AEINet(cfg)
    e = data.embeddings
    aei.set_identity_statistics(e)
    z = aei.identity_input(e, torch.float32)
    assert z.mean(0).abs().max() < 1e-5 and abs(z.std().item() - 1) < 1e-4
    assert (e @ e.T).mean() > 0.8 > (torch.nn.functional.normalize(z, dim=1) @ torch.nn.functional.normalize(z, dim=1).T).mean()
    FT.train_faceshifter(cfg, data=data, progress=False, checkpoint_dir=tmp_path)
    loaded, _, got, _ = FS.load_faceshifter(tmp_path)
    assert got.id_center
    torch.testing.assert_close(loaded.id_mean, e.mean(0), rtol=0, atol=1e-6)
    x = data.crops[:2]
    y_loaded = loaded(x, e[:2])[0]
    loaded.id_mean.zero_()                  # the statistics are what the loaded model uses
    assert (loaded(x, e[:2])[0] - y_loaded).abs().max() > 1e-4
    with pytest.raises(ValueError, match="id_center: false"):
        FS.AEINet(tiny()).set_identity_statistics(e)
    assert not hasattr(FS.AEINet(tiny()), "id_mean")           # old checkpoints: no buffers, z_id unchanged


def test_random_views_blur_and_shift_the_chip_only(data):
    from dfs.faces.identity_chips import random_view
    x = torch.zeros(2, 3, 32, 32)
    x[..., ::2, ::2], x[..., 1::2, 1::2] = 1.0, 1.0            # a checkerboard: all its energy at the top frequency
    M = data.chip_M[:2]
    for seed in range(5):
        v, Mv = random_view(x, M, torch.Generator().manual_seed(seed))
        inner = v[..., 8:-8, 8:-8]
        assert inner.mean().item() == pytest.approx(0.5, abs=1e-4)                      # the mean survives a blur
        assert (inner - 0.5).abs().max() < 0.5 * (x[..., 8:-8, 8:-8] - 0.5).abs().max()  # the pattern does not
        torch.testing.assert_close(Mv[:, :, :2], M[:, :, :2])                          # the chip's shape is kept
        shift = Mv[:, :, 2] - M[:, :, 2]
        assert shift.abs().max() <= 2 and torch.allclose(shift[0], shift[1], atol=1e-5)  # one shift for the batch
        again = random_view(x, M, torch.Generator().manual_seed(seed))
        assert torch.equal(again[0], v) and torch.equal(again[1], Mv)


def test_aei_identity_loss_is_the_papers_or_its_mean_over_random_views(data):
    y = data.crops[:3].clone().requires_grad_(True)
    z_s, chip = data.embeddings[3:6], data.chip_M[:3]
    sharp = FS.aei_identity_loss(y, chip, z_s, views=0)
    torch.testing.assert_close(sharp, FS.identity_loss(FS.identity_of_crops(y, chip), z_s))
    torch.manual_seed(7)
    viewed = FS.aei_identity_loss(y, chip, z_s, views=3)
    torch.manual_seed(7)                                        # the same draws, one view at a time
    by_hand = [FS.identity_loss(FS.identity_of_crops(*FS.random_view(y, chip)), z_s) for _ in range(3)]
    torch.testing.assert_close(viewed, sum(by_hand) / 3)
    assert abs(viewed.item() - sharp.item()) > 1e-4             # the views do change what ID reads
    viewed.backward()
    assert y.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="id_views"):
        tiny(id_views=-1)


def test_discriminator_is_multiscale_patchgan_with_spectral_norm():
    d = FS.MultiScaleDiscriminator(8, 2, 3)
    logits = d(torch.randn(2, 3, 32, 32))
    assert [t.shape for t in logits] == [(2, 1, 7, 7), (2, 1, 3, 3), (2, 1, 1, 1)]
    conv = d.nets[0].net[0]
    assert torch.nn.utils.parametrize.is_parametrized(conv, "weight")
    for _ in range(30):                          # power iteration converges: the layer's largest singular value -> 1
        d(torch.randn(2, 3, 32, 32))
    assert torch.linalg.matrix_norm(conv.weight.flatten(1), ord=2).item() == pytest.approx(1.0, rel=1e-2)


# ---------------------------------------------------------------------------------------------------------------
# losses on known cases


def test_hinge_losses_on_known_logits():
    real, fake = [torch.tensor([2.0, 0.5])], [torch.tensor([-2.0, 0.5])]
    # relu(1 - [2, .5]) = [0, .5] -> .25 ; relu(1 + [-2, .5]) = [0, 1.5] -> .75
    assert FS.hinge_d_loss(real, fake).item() == pytest.approx(1.0)
    assert FS.hinge_g_loss(fake).item() == pytest.approx(0.75)
    # scales are averaged: a perfect second scale halves the loss
    assert FS.hinge_d_loss(real + [torch.tensor([3.0])], fake + [torch.tensor([-3.0])]).item() == pytest.approx(0.5)
    assert FS.hinge_g_loss([torch.tensor([1.0]), torch.tensor([3.0])]).item() == pytest.approx(-2.0)


def test_identity_attribute_reconstruction_and_change_losses_on_known_cases():
    e = unit(4)
    assert FS.identity_loss(e, e).item() == pytest.approx(0, abs=1e-6)
    assert FS.identity_loss(e, -e).item() == pytest.approx(2, abs=1e-6)
    a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 3.0]])
    assert FS.identity_loss(a, b).item() == pytest.approx(1)            # orthogonal, any length
    z = [torch.randn(2, 4, 2, 2), torch.randn(2, 3, 4, 4)]
    assert FS.attribute_loss(z, z).item() == 0
    assert FS.attribute_loss(z, [z[0] + 1, z[1]]).item() == pytest.approx(0.5)
    assert FS.attribute_loss(z, [z[0] + 1, z[1] - 2]).item() == pytest.approx(0.5 + 2.0)
    x = torch.zeros(3, 3, 4, 4)
    y = torch.stack([torch.full((3, 4, 4), v) for v in (1.0, 2.0, 3.0)])
    # only pairs with X_s = X_t count: (1/2 * 1 + 1/2 * 9) / 2
    w = FS.same_pair_weights(torch.tensor([1.0, 0.0, 1.0]))
    assert w.tolist() == pytest.approx([1.5, 0, 1.5])
    assert FS.reconstruction_loss(y, x, w).item() == pytest.approx(2.5)
    # the batch split in two halves (as 2 processes do): the mean of the halves' losses is the whole batch's
    w4 = FS.same_pair_weights(torch.tensor([1.0, 0.0, 0.0, 1.0]))
    y4, x4 = torch.cat([y, y[:1]]), torch.cat([x, x[:1]])
    halves = (FS.reconstruction_loss(y4[:2], x4[:2], w4[:2]) + FS.reconstruction_loss(y4[2:], x4[2:], w4[2:])) / 2
    assert halves.item() == pytest.approx(FS.reconstruction_loss(y4, x4, w4).item())
    assert FS.reconstruction_loss(y, x, FS.same_pair_weights(torch.zeros(3))).item() == 0
    assert FS.change_loss(y, x).item() == pytest.approx(2.0)


def test_one_generator_step_and_one_discriminator_step_lower_their_own_losses(data):
    torch.manual_seed(0)
    cfg = tiny()
    gan = FS.FaceShifterGAN(cfg)
    batch = FT.PairSampler(data, 4, p_same=0.5)(0, torch.Generator().manual_seed(1))
    with torch.no_grad():                        # converge spectral norm's power iteration first
        for _ in range(30):
            gan.disc(batch[0])
    gan.disc.eval()                              # no power-iteration update while measuring
    g0 = gan(*batch, part="g")
    assert {"adv", "id", "att", "rec"} <= set(g0) and g0["id"] > 0
    g0["loss"].backward()
    assert all(p.grad is None for p in gan.disc.parameters())          # the G step leaves D alone
    assert gan.aei.generator.blocks[0].aad1.id.weight.grad.abs().sum() > 0   # L_id reaches the AAD identity maps
    torch.optim.SGD(gan.aei.parameters(), lr=1e-3).step()
    assert gan(*batch, part="g")["loss"] < g0["loss"]
    fake = g0["fake"].detach()
    d0 = gan(batch[0], None, None, None, part="d", fake=fake)
    d0["loss"].backward()
    torch.optim.SGD(gan.disc.parameters(), lr=1e-2).step()
    assert gan(batch[0], None, None, None, part="d", fake=fake)["loss"] < d0["loss"]
    with pytest.raises(ValueError, match="needs fake"):
        gan(batch[0], None, None, None, part="d")


# ---------------------------------------------------------------------------------------------------------------
# data: pairs and synthetic occlusions


def test_pair_sampler_same_fraction_and_target_geometry(data):
    s = FT.PairSampler(data, 400, p_same=0.25)
    x_t, z_s, chip, w, z_t = s(0, torch.Generator().manual_seed(0))
    same = (w > 0).float()
    assert 0.18 < same.mean() < 0.32 and w.sum().item() == pytest.approx(400)
    torch.testing.assert_close(z_s[same.bool()], z_t[same.bool()])
    assert ((z_s[~same.bool()] - z_t[~same.bool()]).abs().sum(1) > 0).float().mean() > 0.7   # mostly other photos
    i = [int((data.crops == x).flatten(1).all(1).nonzero()[0]) for x in x_t[:5]]
    torch.testing.assert_close(chip[:5], data.chip_M[i])               # the chip is the target's
    torch.testing.assert_close(z_t[:5], data.embeddings[i])
    a, b = s(3, torch.Generator().manual_seed(3)), s(3, torch.Generator().manual_seed(3))
    torch.testing.assert_close(a[0], b[0])


def test_identity_jitter_moves_unit_vectors_by_the_asked_norm_in_every_direction(data):
    z = unit(2000, seed=3)
    g = torch.Generator().manual_seed(0)
    assert FT.jitter_identity(z, 0.0, g) is z
    moved = FT.jitter_identity(z, 0.3, g)
    torch.testing.assert_close(moved.norm(dim=1), torch.ones(2000))
    offset = (moved * (1 + 0.3 ** 2) ** 0.5) - z            # before normalisation ‖z + ε‖ ≈ √(1 + 0.3²)
    assert offset.norm(dim=1).mean().item() == pytest.approx(0.3, rel=0.05)
    # isotropic: the offset's mean square is the same along every coordinate (128 of them)
    per_axis = (offset ** 2).mean(0) * 128 / 0.3 ** 2
    assert 0.85 < per_axis.min() and per_axis.max() < 1.15
    s = FT.PairSampler(data, 200, p_same=0.3, id_jitter=0.3)
    x_t, z_s, chip, w, z_t = s(0, torch.Generator().manual_seed(0))
    same = w > 0
    torch.testing.assert_close(z_s[same], z_t[same])        # the reconstruction pairs keep X_t's own vector
    plain = FT.PairSampler(data, 200, p_same=0.3)(0, torch.Generator().manual_seed(0))
    torch.testing.assert_close(x_t, plain[0])               # same pairs drawn as without jitter
    cos = (z_s[~same] * plain[1][~same]).sum(1)
    assert (cos < 0.999).all() and cos.mean() > 0.9         # moved, not replaced
    with pytest.raises(ValueError, match="id_jitter"):
        tiny(id_jitter=-0.1)


def test_occlusions_are_patches_of_other_photos():
    x, others = torch.zeros(6, 3, 32, 32), torch.ones(6, 3, 32, 32)
    torch.testing.assert_close(FT.occlude(x, others, torch.Generator().manual_seed(0), 0.0), x)
    out = FT.occlude(x, others, torch.Generator().manual_seed(0), 1.0)
    for o in out:
        ys, xs = torch.nonzero(o[0]).unbind(1)
        h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
        assert 8 <= h <= 16 and 8 <= w <= 16 and o[0].sum() == h * w        # one S/4 ... S/2 rectangle
    assert x.sum() == 0                                                      # the input is not modified


# ---------------------------------------------------------------------------------------------------------------
# HEAR-Net


def test_hear_net_starts_as_the_identity_map_and_trains_on_the_heuristic_error(data):
    torch.manual_seed(0)
    cfg = tiny()
    aei, hear = FS.AEINet(cfg).eval(), FS.HEARNet(cfg)
    x, z = data.crops[:3], data.embeddings[:3]
    y_hat = aei(x, z)[0]
    delta = FS.heuristic_error(aei, x, z)
    torch.testing.assert_close(delta, x - y_hat)          # ΔY_t = X_t − AEI(X_t, X_t), here with z = z_id(X_t)
    torch.testing.assert_close(hear(y_hat, delta), y_hat)  # residual zero at initialisation: L_chg = 0
    out = FS.hear_losses(hear, aei, x, z, z, data.chip_M[:3], torch.ones(3), cfg)
    assert out["chg"] == 0 and out["rec"] > 0 and 0 < out["id"] < 2
    out["loss"].backward()
    assert hear.final.weight.grad.abs().sum() > 0 and all(p.grad is None for p in aei.parameters())


def test_hear_loss_weighs_its_identity_term_by_hear_id_weight(data):
    # L_HEAR = λ_id' L_id + λ_chg L_chg + λ_rec L_rec (FaceShifter §3.2), λ_id' = hear_id_weight
    torch.manual_seed(0)
    aei, hear = FS.AEINet(tiny()).eval(), FS.HEARNet(tiny())
    torch.nn.init.normal_(hear.final.weight, std=0.1)      # a HEAR-Net that changes Ŷ, so L_chg > 0
    x, z_t, z_s = data.crops[:3], data.embeddings[:3], data.embeddings[3:6]
    for weights in ((1.0, 1.0, 10.0), (20.0, 2.0, 5.0)):
        cfg = tiny(hear_id_weight=weights[0], hear_chg_weight=weights[1], hear_rec_weight=weights[2])
        out = FS.hear_losses(hear, aei, x, z_s, z_t, data.chip_M[:3], torch.tensor([1.0, 0.0, 1.0]), cfg)
        assert out["chg"] > 0 and out["rec"] > 0 and out["id"] > 0
        total = weights[0] * out["id"] + weights[1] * out["chg"] + weights[2] * out["rec"]
        torch.testing.assert_close(out["loss"], total)
    with pytest.raises(ValueError, match="loss weights"):
        tiny(hear_id_weight=-1.0)


# ---------------------------------------------------------------------------------------------------------------
# training, resume, checkpoints


def test_both_stages_resume_bit_exact_after_a_crash(tmp_path, data):
    cfg = tiny()
    straight = FT.train_faceshifter(cfg, data=data, progress=False, checkpoint_dir=tmp_path / "a")

    class Killed(BaseException):
        pass

    def dies_at_3(trainer, batch, step):
        if step == 3:
            raise Killed
        return FT.aei_step(trainer, batch, step)

    with pytest.raises(Killed):
        FT.train_aei(cfg, data, tmp_path / "b", progress=False, step_fn=dies_at_3)
    resumed = FT.train_faceshifter(cfg, data=data, progress=False, checkpoint_dir=tmp_path / "b")
    assert resumed["aei"].step == 4 and resumed["hear"].step == 2
    for stage in ("aei", "hear"):
        a, b = straight[stage], resumed[stage]
        for p, q in zip(a.raw_model.parameters(), b.raw_model.parameters()):
            torch.testing.assert_close(p, q, rtol=0, atol=0)
        for p, q in zip(a.ema_model.parameters(), b.ema_model.parameters()):
            torch.testing.assert_close(p, q, rtol=0, atol=0)
    h = resumed["aei"].history[-1]
    assert {"loss_g", "loss_d", "adv", "id", "att", "rec", "d_real", "d_fake"} <= set(h)
    assert set(json.loads((tmp_path / "b" / "aei" / "step_0000004" / "state.json").read_text())["config"]
               ["extra"]) >= {"faceshifter_config", "stage"}
    # HEAR-Net is tied to the AEI-Net it was trained on: more AEI-Net steps make it stale
    FT.train_faceshifter(tiny(steps=6), data=data, progress=False, checkpoint_dir=tmp_path / "b", stages=("aei",))
    with pytest.raises(ValueError, match="trained on AEI-Net step 4.*now at step 6"):
        FT.train_faceshifter(tiny(steps=6), data=data, progress=False, checkpoint_dir=tmp_path / "b")


def test_checkpoint_errors(tmp_path, checkpoint, data):
    with pytest.raises(FileNotFoundError, match="dfs train-swap --model faceshifter"):
        FS.load_faceshifter(tmp_path / "nothing")
    with pytest.raises(ValueError, match="image_size: checkpoint 32 vs config 64"):
        FS.load_faceshifter(checkpoint, config=tiny(image_size=64, enc_channels=[8] * 5, gen_channels=[8] * 5))
    with pytest.raises(ValueError, match="trained for another model"):
        FT.train_faceshifter(tiny(gen_channels=[8, 8, 8, 16]), data=data, progress=False, checkpoint_dir=checkpoint)
    # a diffusion-swap checkpoint, as a run folder and as a step folder
    step = tmp_path / "diff" / "step_0000001"
    step.mkdir(parents=True)
    (step / "state.json").write_text(json.dumps({"step": 1, "config": {"extra": {"swap_config": {}}}}))
    with pytest.raises(ValueError, match="not a FaceShifter run"):
        FS.load_faceshifter(tmp_path / "diff")
    with pytest.raises(ValueError, match="diffusion-swap checkpoint: use --method diffusion"):
        FS.load_faceshifter(step)
    aei, hear, _, path = FS.load_faceshifter(checkpoint)
    assert path.name == "step_0000002" and path.parent.name == "aei" and hear is not None and not aei.training
    assert FS.load_faceshifter(checkpoint, hear=False)[1] is None


def test_identity_score_blends_cross_identity_swaps(checkpoint, data):
    aei, hear, _, _ = FS.load_faceshifter(checkpoint)
    s = FT.identity_score(aei, data, n=3, seed=1, hear=hear)
    assert (data.identities[s["targets"].numpy()] != data.identities[s["sources"].numpy()]).all()
    assert -1 <= s["cos_source"] <= 1 and -1 <= s["cos_target"] <= 1 and s["results"].shape == (3, 3, 32, 32)
    outside = (data.masks[s["targets"]] == 0).expand(-1, 3, -1, -1)
    torch.testing.assert_close(s["results"][outside], data.crops[s["targets"]][outside])
    ref = FT.reference_scores(data, n=3, seed=1)
    e_t, e_s = data.embeddings[s["targets"]], data.embeddings[s["sources"]]
    assert ref["target unchanged"]["cos_target"] > 0.9      # the 32-px crop still reads as its photo's person
    assert ref["source pasted"]["cos_source"] > ref["target unchanged"]["cos_source"]
    assert ref["target unchanged"]["cos_source"] == pytest.approx(float((e_t * e_s).sum(-1).mean()), abs=0.03)
    blurred = FT.reference_scores(data, n=3, seed=1, blur=2.0)["target unchanged"]["cos_target"]
    assert blurred < ref["target unchanged"]["cos_target"] - 0.01                   # a blur costs identity


# ---------------------------------------------------------------------------------------------------------------
# the pipeline and the command line


def test_cli_swap_with_faceshifter_on_two_photos(tmp_path, checkpoint, capsys):
    from dfs.cli import main
    from dfs.evaluate import _photo_mask
    from dfs.faces.images import load_image
    from dfs.swap.pipeline import SwapPipeline, read_png_metadata

    src, tgt = str(photo(PEOPLE[0], 1)), str(photo(PEOPLE[1], 1))
    args = ["swap", "--method", "faceshifter", "--source", src, "--target", tgt, "--checkpoint", str(checkpoint)]
    assert main(args + ["--out", str(tmp_path / "a.png")]) == 0
    assert main(args + ["--out", str(tmp_path / "b.png"), "--seed", "3"]) == 0
    meta = read_png_metadata(tmp_path / "a.png")
    assert meta["dfs:method"] == "faceshifter" and meta["dfs:checkpoint"] == str(checkpoint)
    a, b = load_image(tmp_path / "a.png"), load_image(tmp_path / "b.png")
    np.testing.assert_array_equal(a, b)                                 # one forward pass: no randomness
    pipe = SwapPipeline(FS.FaceShifterSwap(checkpoint, device="cpu"))
    target = pipe.align(tgt, "target")
    m = _photo_mask(target)
    np.testing.assert_array_equal(a[m == 0], target.image[m == 0])      # untouched outside the mask
    assert np.abs(a[m > 0.99].astype(int) - target.image[m > 0.99]).mean() > 1
    # AEI-Net alone differs from AEI-Net + HEAR-Net
    assert main(args + ["--out", str(tmp_path / "c.png"), "--no-hear"]) == 0
    assert np.abs(load_image(tmp_path / "c.png").astype(int) - a).max() > 0
    capsys.readouterr()
    assert main(args + ["--out", str(tmp_path / "d.png"), "--steps", "3"]) == 2
    assert "--steps apply to --method diffusion, not faceshifter" in capsys.readouterr().err
    assert main(args[:-1] + [str(tmp_path / "missing"), "--out", str(tmp_path / "e.png")]) == 2
    assert "no FaceShifter checkpoint" in capsys.readouterr().err


def test_no_face_errors_name_the_file(tmp_path, checkpoint):
    from PIL import Image

    from dfs.faces.detect import FaceNotFoundError
    from dfs.swap.pipeline import SwapPipeline

    blank = tmp_path / "wall.png"
    Image.fromarray(np.full((120, 120, 3), 128, np.uint8)).save(blank)
    pipe = SwapPipeline(FS.FaceShifterSwap(checkpoint, device="cpu"))
    with pytest.raises(FaceNotFoundError, match=r"source photo.*wall\.png"):
        pipe.swap(blank, photo(PEOPLE[1], 1))


def test_cli_eval_with_faceshifter_and_option_errors(tmp_path, checkpoint, capsys):
    from dfs.cli import main

    rc = main(["eval", "--method", "faceshifter", "--checkpoint", str(checkpoint), "--data", str(shared_faces()),
               "--pairs", "2", "--max-per-identity", "2", "--self-pairs", "1", "--out", str(tmp_path),
               "--no-progress"])
    assert rc == 0
    summary = json.loads((tmp_path / "eval_faceshifter_n2_s0.json").read_text())
    assert list(summary["rows"]) == ["faceshifter", "classical", "source pasted", "target resampled",
                                     "target unchanged"]
    assert summary["settings"]["crop_size"] == 32 and summary["rows"]["faceshifter"]["seconds_per_swap"] > 0
    # every row is compared with the classical swap on the same pairs, and the classical row works on its own crops
    assert summary["compare"] == "classical" and "classical" not in summary["differences"]
    assert set(summary["differences"]) == {"faceshifter", "source pasted", "target resampled", "target unchanged"}
    d = summary["differences"]["target unchanged"]["id_cos_source"]
    assert d["low"] <= d["mean"] <= d["high"] and d["n"] == 2
    capsys.readouterr()
    assert main(["eval", "--method", "classical", "--checkpoint", str(checkpoint)]) == 2
    assert "--checkpoint applies to --method diffusion or faceshifter" in capsys.readouterr().err
    assert main(["eval", "--method", "diffusion", "--no-hear"]) == 2
    assert "--no-hear applies to --method faceshifter" in capsys.readouterr().err


def test_cli_train_swap_faceshifter_on_a_small_folder(tmp_path, capsys):
    """`dfs train-swap --model faceshifter --config file.yaml`: identity split, face cache, both stages."""
    import yaml

    from dfs.cli import main

    root = tmp_path / "faces"
    for p in PEOPLE + ("Andre_Agassi",):
        (root / p).mkdir(parents=True)
        for i in (1, 2, 3):
            shutil.copy(photo(p, i), root / p)
    cfg = tiny(steps=2, hear_steps=1, data=str(root), held_out=1, cache_dir=str(tmp_path / "cache"),
               checkpoint_dir=str(tmp_path / "run")).to_dict()
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train-swap", "--model", "faceshifter", "--config", str(tmp_path / "c.yaml"), "--no-progress"]) == 0
    assert (tmp_path / "run" / "aei" / "step_0000002" / "ema.safetensors").is_file()
    assert (tmp_path / "run" / "aei" / "step_0000002" / "optimizers.pt").is_file()
    assert (tmp_path / "run" / "hear" / "step_0000001" / "model.safetensors").is_file()
    out = capsys.readouterr().out
    assert "aei: trained to step 2" in out and "hear: trained to step 1" in out
    assert main(["train-swap", "--model", "diffusion", "--hear-steps", "3"]) == 2
