"""dfs.latent_study: the shipped weights were made by this recipe and this code, and load into the same models
that training makes; a changed recipe is refused with the command that retrains."""
import dataclasses
import json

import pytest
import torch

from dfs import latent
from dfs import latent_study as S


def _tiny():
    return dataclasses.replace(S.QUICK, size=8, factors=(1, 2), no_remedy_f=2, diffusion_f=2, vq_codes=16,
                               ae_steps=2, ae_batch=8, pixel_steps=1, latent_steps=1, cond_steps=1, uncond_batch=8,
                               cond_batch=8, T=20)


def test_shipped_weights_were_made_by_this_recipe_and_code():
    """When this fails, the recipe or the code that trains the models changed: retrain and re-ship with
    `python -m dfs.latent_study --out dfs/weights/latent-digits` (see dfs/latent_study.py)."""
    assert S.shipped_hash() == S.recipe_hash(S.QUICK), (
        f"the shipped latent-digit weights are stale: retrain and re-ship with `{S.SHIP_COMMAND}`")
    meta = json.loads((S.SHIPPED_DIR / "recipe.json").read_text())
    assert meta["recipe"] == json.loads(json.dumps(dataclasses.asdict(S.QUICK)))
    assert (S.SHIPPED_DIR / "models.safetensors").stat().st_size < 8 * 2 ** 20
    models = S.load_shipped()
    assert set(S.model_names(S.QUICK)) <= set(models)
    for name in S.model_names(S.QUICK):                         # every model trained for its full recipe steps
        steps = {"pixel": S.QUICK.pixel_steps, "latent": S.QUICK.latent_steps, "cond": S.QUICK.cond_steps}
        assert meta["histories"][name][-1]["step"] == steps.get(name, S.QUICK.ae_steps)


def test_the_hash_follows_the_recipe_and_the_code(monkeypatch):
    r = S.QUICK
    assert S.recipe_hash(r) == S.recipe_hash(dataclasses.replace(r))
    assert S.recipe_hash(r) != S.recipe_hash(dataclasses.replace(r, cond_steps=r.cond_steps + 1))
    before = S.recipe_hash(r)
    monkeypatch.setattr(S, "RECIPE_CODE", S.RECIPE_CODE[:-1])   # less code hashed: another hash
    assert S.recipe_hash(r) != before


def test_train_save_load_round_trip_and_stale_weights_are_refused(tmp_path):
    torch.set_num_threads(1)
    r = _tiny()
    data = S.digits_split(r)
    assert len(data["x_train"]) == r.n_train and data["x_test"].shape[1:] == (1, 8, 8)
    models = S.train_all(r, data, device="cpu", progress=False, log=lambda m: None)
    S.save_models(models, r, tmp_path / "w")
    loaded = S.load_shipped(r, tmp_path / "w")
    x = data["x_test"][:6]
    for name in S.autoencoder_names(r):                         # fp16 on disk: close, not equal
        torch.testing.assert_close(latent.reconstruct(loaded[name], x), latent.reconstruct(models[name], x),
                                   atol=0.05, rtol=0)
    assert loaded["ae-kl-f2"].config.scaling_factor == pytest.approx(models["ae-kl-f2"].config.scaling_factor)
    g = {"steps": 3, "guidance": 3.0}
    a = models["cond"].sample(4, cond=torch.arange(4), generator=torch.Generator().manual_seed(0), **g)
    b = loaded["cond"].sample(4, cond=torch.arange(4), generator=torch.Generator().manual_seed(0), **g)
    torch.testing.assert_close(a, b, atol=0.05, rtol=0)
    with pytest.raises(S.StaleWeights, match="Retrain and re-ship"):
        S.load_shipped(dataclasses.replace(r, ae_steps=3), tmp_path / "w")
    with pytest.raises(FileNotFoundError, match="RETRAIN"):
        S.load_shipped(r, tmp_path / "nothing")


def test_bad_recipes_and_names_say_what_is_wrong():
    with pytest.raises(ValueError, match="must divide"):
        dataclasses.replace(S.QUICK, factors=(3,))
    with pytest.raises(ValueError, match="n_train"):
        dataclasses.replace(S.QUICK, n_train=1797)
    with pytest.raises(ValueError, match="unknown model names"):
        S.train_all(S.QUICK, {}, names=["ae-kl-f3"])
    with pytest.raises(ValueError, match="needs ae-kl-f8"):
        S.train_all(S.QUICK, S.digits_split(S.QUICK), names=["cond"])
    with pytest.raises(ValueError, match="not trained"):
        S.save_models({}, S.QUICK, "/nonexistent/never")
