"""Personalisation (dfs.personalize, dfs.swap.concept): DreamBooth's loss (eq. 2) against a hand computation, the
token-only mode leaving the U-Net bit-identical, a concept's round trip through its files into a swap, and every
bad input refused with its one-line error and nothing written.  Photo folders are copies of the repository's LFW
sample (data/lfw_home) in temporary folders."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from dfs.cli import main
from dfs.device import batch_rand, batch_randn
from dfs.diffusion import sample_timesteps
from dfs.paths import repo_root
from dfs.personalize import (ConceptData, ConceptModel, PersonalizeOptions, check_one_person, dreambooth_loss,
                             read_photos, spread_check_rates, train_concept)
from dfs.swap.concept import load_concept, save_concept, weights_sha256
from dfs.swap.config import SwapConfig
from dfs.swap.data import SwapData
from dfs.swap.diffusion import DiffusionSwap, SwapDiffusion, load_swap_model
from dfs.swap.pipeline import SwapPipeline
from dfs.train import Trainer, TrainConfig

LFW = repo_root() / "data" / "lfw_home" / "lfw_funneled"
PERSON = ["Ann_Veneman/Ann_Veneman_0001.jpg", "Ann_Veneman/Ann_Veneman_0002.jpg", "Ann_Veneman/Ann_Veneman_0003.jpg"]
STRANGER = "Tom_Hanks/Tom_Hanks_0001.jpg"


def photo_folder(tmp_path: Path, files, name: str = "photos") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    for f in files:
        shutil.copy(LFW / f, folder / Path(f).name)
    return folder


@pytest.fixture(scope="module")
def shipped():
    model, _, path = load_swap_model(repo_root() / "dfs" / "weights" / "swap-quick")
    return model, path


@pytest.fixture(scope="module")
def person_photos(shipped, tmp_path_factory):
    """Three photos of one person, read (detected, aligned at the shipped model's 64 px) as dfs personalize does."""
    folder = photo_folder(tmp_path_factory.mktemp("person"), PERSON)
    return read_photos(folder, SwapPipeline(DiffusionSwap(model=shipped[0])))


def tiny_model(**over) -> SwapDiffusion:
    torch.manual_seed(0)
    cfg = SwapConfig(image_size=32, block_out_channels=(8, 16), norm_num_groups=8, plain_levels=1,
                     attention_head_dim=8, id_tokens=2, token_dim=16, prediction="x0", id_weight=0.0, **over)
    return SwapDiffusion(cfg)


def random_batch(B: int, S: int = 32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(B, 3, S, S, generator=g) * 2 - 1
    mask = (torch.rand(B, 1, S, S, generator=g) > 0.5).float()
    lm = torch.rand(B, 68, 2, generator=g) * S
    emb = torch.nn.functional.normalize(torch.randn(B, 128, generator=g), dim=-1)
    chip = torch.randn(B, 2, 3, generator=g)
    return (target, mask, lm, emb, chip)


# ---------------------------------------------------------------------------------------------------------------
# DreamBooth's loss (Ruiz et al. 2023, eq. 2)


@pytest.mark.parametrize("lam", [0.0, 0.7])
def test_dreambooth_loss_is_eq2_by_hand(lam):
    """L = ‖x̂_θ(α_t x + σ_t ε, c) − x‖² + λ ‖x̂_θ(α_t' x_pr + σ_t' ε', c_pr) − x_pr‖² (x_0-model: w_t = 1): the
    person's batch with the learned tokens c and no condition dropout, the class batch with its own τ(e_pr) and the
    swap's dropout (p_uncond = 0.5 here, so some class samples take ∅)."""
    model = tiny_model(p_uncond=0.5)
    c = torch.randn(2, 16)
    cm = ConceptModel(model, c, "full", lam)
    inst, prior = random_batch(3, seed=1), random_batch(4, seed=2)
    torch.manual_seed(5)
    got = dreambooth_loss(cm, (inst, prior), 0)

    torch.manual_seed(5)                     # the same draws, in the same order, by hand
    sched, abar = model.schedule, model.schedule.alphas_cumprod

    def term(batch, tokens, p):
        x, m, lm, _, _ = batch
        t = sample_timesteps(sched, len(x), x.device)
        eps = batch_randn(x.shape, x)
        a = abar[t].float()[:, None, None, None]
        x_t = a.sqrt() * x + (1 - a).sqrt() * eps
        cond = model.condition(x, m, lm)
        dropped = batch_rand(len(x)) < p
        tokens = torch.where(dropped[:, None, None], model.null_tokens.expand_as(tokens), tokens)
        x0_hat = model.unet(torch.cat([x_t, cond], 1), t, encoder_hidden_states=tokens).sample
        return ((x0_hat - x) ** 2).mean()

    want = term(inst, c[None].expand(3, -1, -1), 0.0)
    if lam > 0:
        want = want + lam * term(prior, model.tokens(prior[3]), 0.5)
    torch.testing.assert_close(got["loss"], want, rtol=1e-5, atol=1e-7)
    assert ("prior_loss" in got) == (lam > 0)


def test_instance_term_uses_the_concept_tokens():
    """The instance term changes when c changes (it reads c, not τ(e) of the batch's embeddings)."""
    model, inst = tiny_model(), random_batch(2, seed=3)
    losses = []
    for scale in (1.0, 5.0):
        torch.manual_seed(0)
        losses.append(ConceptModel(model, scale * torch.ones(2, 16), "full", 0.0)(inst)["loss"].item())
    assert losses[0] != losses[1]


# ---------------------------------------------------------------------------------------------------------------
# token-only mode


def test_token_mode_trains_tokens_and_leaves_the_unet_bit_identical():
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = [random_batch(4, seed=s) for s in range(3)]
    sd = SwapData(torch.cat([d[0] for d in data]), torch.cat([d[1] for d in data]), torch.cat([d[2] for d in data]),
                  torch.cat([d[3] for d in data]), ["a"] * 6 + ["b"] * 6, 2,
                  chip_M=torch.cat([d[4] for d in data]))
    c0 = torch.randn(2, 16)
    cm = ConceptModel(model, c0, "tokens", 0.0)
    assert [n for n, p in cm.named_parameters() if p.requires_grad] == ["tokens"]
    Trainer(cm, dreambooth_loss, ConceptData(sd), TrainConfig(steps=3, lr=1e-2, ema_decay=None, progress=False)).fit()
    after = cm.swap.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not torch.equal(cm.tokens.detach(), c0)          # the tokens did learn


# ---------------------------------------------------------------------------------------------------------------
# a concept: file round trip, and the swap it changes


def test_concept_round_trips_and_changes_the_swap(shipped, person_photos, tmp_path):
    model, path = shipped
    before = weights_sha256(model)
    concept = train_concept(model, person_photos, "ann", PersonalizeOptions(mode="full", steps=2, prior=False,
                                                                           batch_size=2, lr=1e-3),
                            base_info={"checkpoint": str(path), "weights_sha256": before})
    assert weights_sha256(model) == before                   # the base is left as it was
    assert concept.unet_delta and concept.info["prior_weight"] == 0.0 and concept.info["steps"] == 2
    written = save_concept(concept, tmp_path)
    loaded = load_concept(written)
    assert torch.equal(loaded.tokens, concept.tokens) and torch.equal(loaded.embedding, concept.embedding)
    assert np.array_equal(loaded.crops, concept.crops)
    assert loaded.unet_delta.keys() == concept.unet_delta.keys()
    assert all(torch.equal(loaded.unet_delta[k], concept.unet_delta[k]) for k in concept.unet_delta)
    assert loaded.info["photos"] == person_photos.used and loaded.info["base"]["weights_sha256"] == before

    target = SwapPipeline(DiffusionSwap(model=model)).align(str(LFW / STRANGER))
    ref = person_photos.aligned[0]

    def swap(concept):
        pipe = SwapPipeline(DiffusionSwap(model=model, concept=concept, steps=3))
        return pipe.run([ref], [target], seed=0)[0].crop

    plain, from_memory, from_file = swap(None), swap(concept), swap(loaded)
    assert np.abs(plain.astype(int) - from_file.astype(int)).max() > 0
    assert np.abs(from_memory.astype(int) - from_file.astype(int)).max() <= 1   # fp16 deltas: rounding only
    assert weights_sha256(model) == before                   # applying a concept copies the caller's model


def test_cli_personalize_then_swap_with_the_concept(tmp_path):
    photos = photo_folder(tmp_path, PERSON)
    out = tmp_path / "concepts"
    assert main(["personalize", "--photos", str(photos), "--name", "ann", "--mode", "tokens", "--steps", "2",
                 "--batch-size", "2", "--out", str(out), "--no-progress"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["ann.json", "ann.safetensors"]
    concept = load_concept(out / "ann.safetensors")
    assert concept.mode == "tokens" and not concept.unet_delta and len(concept.crops) == 3
    assert (out / "ann.safetensors").stat().st_size < 100_000     # tokens, one embedding, three 64-px crops
    png = tmp_path / "swap.png"
    assert main(["swap", "--concept", str(out / "ann.safetensors"), "--target", str(LFW / STRANGER),
                 "--out", str(png), "--steps", "2"]) == 0
    from dfs.swap.pipeline import read_png_metadata
    assert "concept ann" in read_png_metadata(png)["dfs:checkpoint"]


# ---------------------------------------------------------------------------------------------------------------
# bad input: one line, which file, what to do; nothing written


def test_fewer_than_two_usable_photos(tmp_path, capsys):
    photos = photo_folder(tmp_path, PERSON[:1])
    from PIL import Image
    Image.fromarray(np.full((120, 120, 3), 128, np.uint8)).save(photos / "wall.jpg")    # no face
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    assert main(["personalize", "--photos", str(photos), "--name", "x", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "1 usable photo" in err and "wall.jpg: no face found" in err and "broken.jpg: unreadable" in err
    assert not out.exists()


def test_photos_of_two_people_name_the_odd_one(tmp_path, capsys):
    photos = photo_folder(tmp_path, PERSON + [STRANGER])
    out = tmp_path / "out"
    assert main(["personalize", "--photos", str(photos), "--name", "x", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Tom_Hanks_0001.jpg looks like another person" in err
    assert not out.exists()


def test_spread_check_by_hand():
    """Medians of the distances to the other photos: three points of one person near the origin and one far away;
    the far one is named, and a threshold above its median lets the set through."""
    d = np.zeros((4, 128))
    d[1, 0], d[2, 1], d[3, 2] = 0.2, 0.3, 1.0
    names = ["a", "b", "c", "d"]
    with pytest.raises(ValueError, match="d looks like another person"):
        check_one_person(d, names, 0.6)
    med = check_one_person(d, names, 1.1)
    # d: distances to a, b, c are 1.0, sqrt(1.04), sqrt(1.09): median sqrt(1.04)
    np.testing.assert_allclose(med[3], np.sqrt(1.04))
    with pytest.raises(ValueError, match="a and b are 0.90 apart"):
        check_one_person(d[[0, 3]] * 0.9, ["a", "b"], 0.6)


def test_concept_of_another_checkpoint_is_refused(shipped, tmp_path, capsys):
    path = shipped[1]
    photos = photo_folder(tmp_path, PERSON)
    out = tmp_path / "concepts"
    assert main(["personalize", "--photos", str(photos), "--name", "ann", "--mode", "tokens", "--steps", "1",
                 "--batch-size", "2", "--out", str(out), "--no-progress"]) == 0
    other = tmp_path / "other"                           # the shipped weights with one tensor changed
    shutil.copytree(path, other)
    from safetensors.torch import load_file, save_file
    shard = sorted(other.glob("ema-*.safetensors"))[-1]
    t = load_file(str(shard))
    k = sorted(t)[0]
    t[k] = t[k] + 1
    save_file(t, str(shard))
    png = tmp_path / "swap.png"
    assert main(["swap", "--checkpoint", str(other), "--concept", str(out / "ann.safetensors"),
                 "--target", str(LFW / STRANGER), "--out", str(png)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "was made for the checkpoint" in err and "--checkpoint" in err
    assert not png.exists()


def test_spread_check_rates_on_separated_and_mixed_people():
    """Three tight, far-apart people: no genuine set refused, every stranger caught and named; one person whose
    photos scatter more than the threshold: every genuine set refused."""
    rng = np.random.default_rng(0)
    tight = {p: c + 0.05 * rng.standard_normal((6, 128)) / np.sqrt(128) for p, c in
             zip("abc", 3 * np.eye(128)[:3])}
    r = spread_check_rates(tight, 4, trials=200)
    assert (r["false_refusal"], r["caught"], r["named_right"]) == (0.0, 1.0, 1.0)
    assert r["same_pairs_above"] == 0.0 and r["different_pairs_below"] == 0.0
    loose = {**tight, "a": 3 * np.eye(128)[0] + 2.0 * rng.standard_normal((6, 128)) / np.sqrt(128)}
    assert spread_check_rates(loose, 4, trials=200)["false_refusal"] > 0.2      # a's sets (about 1 in 3)


def test_swap_needs_a_source_or_a_concept(tmp_path, capsys):
    png = tmp_path / "swap.png"
    assert main(["swap", "--target", str(LFW / STRANGER), "--out", str(png)]) == 2
    err = capsys.readouterr().err.strip()
    assert "--source PHOTO" in err and "--concept NAME" in err and not png.exists()
    assert main(["swap", "--method", "classical", "--concept", "ann", "--source", str(LFW / PERSON[0]),
                 "--target", str(LFW / STRANGER), "--out", str(png)]) == 2
    assert "--concept applies to --method diffusion" in capsys.readouterr().err
