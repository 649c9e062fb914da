"""dfs.gan_study: the verdicts of the conclusions and the claims of the difference table on constructed results,
a tiny end-to-end study whose table has every method."""

import pytest
import torch
from scipy import stats

from dfs import gan, gan_study, toy
from dfs.results import make_table
from dfs.results_chapter import INCONCLUSIVE, SUPPORTED, judge


def test_matched_hidden_matches_the_parameter_count():
    target = gan.n_parameters(gan.GAN(gan.VARIANTS["NS-GAN"], [0, 1]).g_net)
    h = gan_study.matched_hidden(target)
    n = sum(p.numel() for p in toy.MLPEpsModel(2, h, 3, 32).parameters())
    assert abs(n - target) / target < 0.05


def _result(diffusion_modes, gan_modes, k=8):
    cfg = gan_study.StudyConfig(datasets=("eight_gaussians",), seeds=len(gan_modes), steps=100, eval_every=50,
                                shown_steps=(100,), variants=("NS-GAN",))
    r = gan_study.StudyResult(cfg)
    r.floor["eight_gaussians"] = {"hq": [0.989] * cfg.seeds, "modes": [k] * cfg.seeds, "mmd": [0.0] * cfg.seeds}
    base = {"hq": [0.9] * cfg.seeds, "mmd": [0.0] * cfg.seeds, "cpu_per_1000": 1.0, "train_cpu": 1.0}
    for sampler, nfe in (("DDPM 1000", 1000), ("DDIM 50", 50), ("DDIM 10", 10)):
        r.finals["eight_gaussians", f"diffusion · {sampler}"] = {**base, "modes": diffusion_modes, "nfe": nfe}
    r.finals["eight_gaussians", "NS-GAN"] = {**base, "modes": gan_modes, "nfe": 1, "cpu_per_1000": 1e-3,
                                             "drops": [2, 0, 1], "forgotten": [1, 0, 0]}
    return r


def test_conclusions_give_a_verdict_only_when_the_interval_allows_one():
    text = " ".join(gan_study.conclusions(_result([8, 8, 8], [2, 3, 2])))
    assert "covers all 8 modes in 3 of 3 seeds" in text and "→ diffusion covers more modes" in text
    assert "'diffusion does not collapse' holds here" in text and "1000 network evaluations" in text
    assert "×1000" in text and "2 of 3 runs dropped one at least once; 1 ended without" in text
    assert "covering all 8 modes in every seed: none" in text and "→ inconclusive (data itself" in text
    text = " ".join(gan_study.conclusions(_result([8, 8, 8], [8, 5, 8])))
    assert "→ inconclusive" in text and "inconclusive as a contrast" in text
    text = " ".join(gan_study.conclusions(_result([8, 7, 8], [8, 8, 8])))
    assert "does not hold here" in text


def test_difference_table_claims_what_the_welch_interval_supports():
    rows, claims = gan_study.difference_table(_result([8, 8, 8], [2, 3, 2]))
    assert [r["difference"] for r in rows] == ["8 Gaussians (ring): modes, DDPM 1000 − NS-GAN",
                                               "8 Gaussians (ring): high-quality fraction, DDPM 1000 − NS-GAN"]
    d, lo, hi = (rows[0][c] for c in ("DDPM − GAN", "DDPM − GAN low", "DDPM − GAN high"))
    ci = stats.ttest_ind([8, 8, 8], [2, 3, 2], equal_var=False).confidence_interval(0.95)
    assert d == pytest.approx(8 - 7 / 3) and (lo, hi) == pytest.approx((ci.low, ci.high))
    table = make_table("t", rows, "c", claims=claims, notebook="02b", quick=True, seed=0, device="cpu", commit="x")
    assert [judge(c, table).verdict for c in claims] == [SUPPORTED, INCONCLUSIVE]   # equal hq: 0 difference
    rows, claims = gan_study.difference_table(_result([8, 8, 8], [8, 5, 8]))
    assert judge(claims[0], make_table("t", rows, "c", claims=claims, commit="x")).verdict == INCONCLUSIVE


def test_a_tiny_study_runs_end_to_end_with_every_method_in_its_table():
    torch.set_num_threads(1)
    cfg = gan_study.StudyConfig(datasets=("eight_gaussians",), seeds=2, steps=20, eval_every=10, shown_steps=(20,),
                                diffusion_steps=10, n_eval=200, n_mmd=100, n_final=200, T=1000, ddim_steps=(10,))
    r = gan_study.run_study(cfg, progress=False)
    rows = gan_study.final_table(r)
    methods = [row["method"] for row in rows]
    assert methods == ["data (fresh draws)", *gan.VARIANTS, "diffusion · DDPM 1000", "diffusion · DDIM 10"]
    assert (rows[0]["modes"], rows[0]["modes low"], rows[0]["modes high"]) == (8.0, 8.0, 8.0)   # data: all 8 modes
    for name in gan.VARIANTS:
        c = r.curves["eight_gaussians", name]
        assert c["steps"] == [10, 20] and c["modes"].shape == (2, 2) and c["covered"].shape == (2, 2, 8)
        assert r.samples["eight_gaussians", name, 20].shape == (200, 2)
    assert r.finals["eight_gaussians", "diffusion · DDPM 1000"]["nfe"] == 1000
    assert len(gan_study.conclusions(r)) > 0
    with pytest.raises(ValueError, match="multiples of eval_every"):
        gan_study.StudyConfig(steps=100, eval_every=30)
    with pytest.raises(ValueError, match="unknown dataset or variant"):
        gan_study.StudyConfig(datasets=("moons",))
