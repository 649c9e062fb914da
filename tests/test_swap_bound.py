"""The swap model's bound (dfs.swap.bound): the ε-model adapter against the closed form of an x_0-model, the face
region's rate at t = 0 against the bound itself (T-step and respaced chains), the step axis, the held-out pairs.

Tiny U-Nets at 32 px, T = 30, on real faces of the shared LFW subset (DFS_DATA; CI: ../shared/data/faces)."""
from __future__ import annotations

import math

import pytest
import torch
from shared_data import shared_lfw_photos

from dfs import diffusion as D
from dfs.swap import bound as B
from dfs.swap import diffusion as SD
from dfs.swap.config import SwapConfig

PEOPLE = ("Adrien_Brody", "Amelie_Mauresmo")


@pytest.fixture(scope="module")
def data():
    """Three photos each of two people, aligned at 32 px, in float64 like the model below."""
    from dfs.swap.pipeline import SourcePasted, SwapPipeline

    lfw, pipe = shared_lfw_photos(), SwapPipeline(SourcePasted(), crop_size=32)
    faces = [pipe.align(lfw / p / f"{p}_{k:04d}.jpg") for p in PEOPLE for k in (1, 2, 3)]
    d = SD.SwapData.from_aligned(faces, [p for p in PEOPLE for _ in range(3)], batch_size=4)
    d.crops, d.masks, d.embeddings = d.crops.double(), d.masks.double(), d.embeddings.double()
    return d


@pytest.fixture(scope="module")
def model():
    """The shipped model's kind (an x_0-model, residual on the warped source), tiny and untrained, in float64 so the
    comparisons below are not limited by x̂_0 → ε → x̂_0 round trips at ᾱ_t ≈ 0."""
    torch.manual_seed(0)
    cfg = SwapConfig(image_size=32, block_out_channels=[16, 32], norm_num_groups=8, attention_head_dim=8,
                     id_tokens=2, token_dim=16, T=30, id_t_max=30, prediction="x0", source_pixels=True,
                     reference_skip=True)
    return SD.SwapDiffusion(cfg).double().eval()


def test_distinct_pairs_are_different_targets_each_with_another_photo_of_its_person(data):
    i, j = data.distinct_pairs(4, torch.Generator().manual_seed(0))
    assert len(set(i.tolist())) == 4 and (i != j).all()
    assert (data.identities[i.numpy()] == data.identities[j.numpy()]).all()
    i, _ = data.distinct_pairs(50, torch.Generator().manual_seed(0))
    assert sorted(i.tolist()) == list(range(len(data)))          # fewer faces than asked: every one, once


def test_conditional_eps_is_the_closed_form_of_the_x0_model(data, model):
    i, j = data.distinct_pairs(3, torch.Generator().manual_seed(1))
    x0, _, eps = B.bind_pairs(model, data, i, j)
    cond, tok = eps.cond, eps.tokens
    t = torch.tensor([5, 15, 29, 0, 20, 9])                      # two copies of the three faces, rows k·3 + i
    x_t = D.q_sample(model.schedule, x0.repeat(2, 1, 1, 1), t, torch.randn(6, 3, 32, 32, dtype=torch.float64))
    with torch.no_grad():
        got = eps(x_t, t)
        x0_hat = model.unet(torch.cat([x_t, cond.repeat(2, 1, 1, 1)], 1), t,
                            encoder_hidden_states=tok.repeat(2, 1, 1)).sample + cond.repeat(2, 1, 1, 1)[:, -3:]
        abar = model.schedule.alphas_cumprod[t].view(-1, 1, 1, 1)
        torch.testing.assert_close(got, (x_t - abar.sqrt() * x0_hat) / (1 - abar).sqrt(), rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(eps(x_t[3:], t[3:]), got[3:])             # row 3 + i is face i
        other = B.ConditionalEps(model, cond.roll(1, 0), tok.roll(1, 0))(x_t[:3], t[:3])
        assert (other - got[:3]).abs().max() > 1e-3                          # the condition is what is bound
        with pytest.raises(ValueError, match="not a multiple of the 3 faces"):
            eps(x_t[:4], t[:4])


def test_face_rate_at_zero_is_the_bound_over_the_face_region(data, model):
    rd = B.held_out_rate_distortion(model, data, n=3, variance="fixed_large", seed=2, max_batch=60)
    x0, mask, eps = B.bind_pairs(model, data, rd["targets"], rd["sources"])
    face = B.face_region(mask)
    b = D.vlb_terms(eps, model.schedule, x0, "fixed_large", generator=torch.Generator().manual_seed(2), max_batch=60,
                    clip_x0=1.0, dims=face)
    torch.testing.assert_close(rd["rate_per_sample"][:, -1], b["bits_per_dim"], rtol=1e-12, atol=0)
    assert rd["dims"].tolist() == (3 * (mask >= 0.5).flatten(1).sum(1)).tolist()
    assert 0 < rd["dims"].min() and rd["dims"].max() < x0[0].numel()
    assert torch.all(rd["rate_per_sample"].diff(dim=1) >= 0) and rd["distortion"][-1] == 0
    assert rd["t"].tolist() == rd["t_chain"].tolist() == list(range(30, -1, -1))
    # the face region is not the whole crop: the bound over all pixels is another number
    whole = D.vlb_terms(eps, model.schedule, x0, "fixed_large", generator=torch.Generator().manual_seed(2),
                        max_batch=60, clip_x0=1.0)
    assert not torch.allclose(whole["bits_per_dim"], b["bits_per_dim"], rtol=1e-3)
    with pytest.raises(ValueError, match="mask level"):
        B.face_region(mask, 0.0)


def test_both_variances_of_the_face_bound_come_from_one_pass_and_equal_the_single_bounds(data, model):
    both = B.held_out_rate_distortions(model, data, n=2, steps=6, seed=1, max_batch=20)
    for v in ("fixed_small", "fixed_large"):
        alone = B.held_out_rate_distortion(model, data, n=2, steps=6, variance=v, seed=1, max_batch=20)
        for key in ("rate_per_sample", "sq_error_per_sample", "t_chain", "targets", "dims"):
            torch.testing.assert_close(both[v][key], alone[key], rtol=0, atol=0)
    assert not torch.allclose(both["fixed_small"]["rate_per_sample"], both["fixed_large"]["rate_per_sample"])


def test_a_respaced_chain_is_bounded_exactly_and_its_points_sit_on_the_models_steps(data, model):
    K = 10
    rd = B.held_out_rate_distortion(model, data, n=2, steps=K, seed=3, max_batch=20)
    x0, mask, eps = B.bind_pairs(model, data, rd["targets"], rd["sources"])
    chain, S = D.respace(model.schedule, K)
    b = D.vlb_terms(D.RespacedModel(eps, S), chain, x0, "fixed_small", generator=torch.Generator().manual_seed(3),
                    max_batch=20, clip_x0=1.0, dims=B.face_region(mask))
    torch.testing.assert_close(rd["rate_per_sample"][:, -1], b["bits_per_dim"], rtol=1e-12, atol=0)
    # the chain's first point is the model's x_T (the same prior term as the T-step chain), its last two x_1, x_0
    assert rd["t"].tolist() == list(range(K, -1, -1))
    assert rd["t_chain"].tolist() == [int(s) + 1 for s in S.flip(0)] + [0]
    assert rd["t_chain"][0] == 30 and rd["t_chain"][-2:].tolist() == [1, 0]
    prior = D.prior_kl(model.schedule, x0, B.face_region(mask)) / (rd["dims"] * math.log(2))
    torch.testing.assert_close(rd["rate_per_sample"][:, 0], prior)


def test_predicted_x0_is_the_models_x0_at_the_papers_step_pasted_into_the_target(data, model):
    i, j = data.distinct_pairs(2, torch.Generator().manual_seed(4))
    out = B.predicted_x0(model, data, i, j, [0, 15], seed=4)
    x0, mask, eps = B.bind_pairs(model, data, i, j)
    assert out.shape == (2, 2, 3, 32, 32)
    torch.testing.assert_close(out[0], x0)
    code = torch.full((2,), 14)                                   # paper t = 15 is code step 14
    x_t = D.q_sample(model.schedule, x0, code, torch.randn(x0.shape, generator=torch.Generator().manual_seed(4)).double())
    with torch.no_grad():
        want = model.output(x_t, code, eps.cond, eps.tokens).clamp(-1, 1)
    torch.testing.assert_close(out[1], mask * want + (1 - mask) * x0, rtol=1e-9, atol=1e-9)


def test_curve_rows_read_the_curve_at_the_chain_steps_with_intervals_over_faces():
    # two faces: rates 0 → 4 → 10 and 0 → 6 → 10 bits/dim, squared errors 0.5 → 0.09 → 0 and 0.5 → 0.01 → 0
    rd = {"t": torch.tensor([2, 1, 0]), "t_chain": torch.tensor([100, 51, 0]),
          "rate_per_sample": torch.tensor([[0.0, 4.0, 10.0], [0.0, 6.0, 10.0]], dtype=torch.float64),
          "sq_error_per_sample": torch.tensor([[0.5, 0.09, 0.0], [0.5, 0.01, 0.0]], dtype=torch.float64)}
    first, last = B.curve_rows(rd, [1, 0])
    assert (first["t"], first["chain step"], first["faces"]) == (51, 1, 2)
    assert (first[B.RATE], first[B.RATE + " low"], first[B.RATE + " high"]) == pytest.approx((5, 4, 6))
    assert (first[B.SHARE], first[B.SHARE + " low"], first[B.SHARE + " high"]) == pytest.approx((0.5, 0.4, 0.6))
    assert (first[B.DIST], first[B.DIST + " low"], first[B.DIST + " high"]) == pytest.approx(
        (127.5 * math.sqrt(0.05), 127.5 * 0.1, 127.5 * 0.3))        # the resampled means: 0.01, 0.05, 0.09
    assert (last["t"], last[B.RATE], last[B.SHARE], last[B.DIST]) == (0, pytest.approx(10), pytest.approx(0), 0)


def test_smoke_mode_caps_the_faces_and_the_chain(data, model, monkeypatch):
    """Under `dfs reproduce --smoke` (DFS_SMOKE=1) full mode's "every held-out face, every step" becomes
    max_eval_pairs faces on a max_bound_steps-step chain; without it the arguments are kept."""
    import dfs.smoke
    caps = dfs.smoke.SmokeCaps(max_bound_steps=5)      # below the tiny model's T = 30
    monkeypatch.setattr(dfs.smoke, "smoke_caps", lambda: caps)
    rd = B.held_out_rate_distortion(model, data, n=len(data.crops), steps=None, seed=0, max_batch=20)
    assert len(rd["dims"]) == caps.max_eval_pairs and rd["t"].tolist() == list(range(5, -1, -1))
    monkeypatch.undo()
    rd = B.held_out_rate_distortion(model, data, n=3, steps=6, seed=0, max_batch=20)
    assert len(rd["dims"]) == 3 and len(rd["t"]) == 7
