"""The errata: every quote stands verbatim at its line of the thesis draft, every corrected form passes its
numeric check and every draft form fails it, and the checks measure what they claim (hand computations)."""
import math

import pytest
import torch

from dfs import diffusion as D
from dfs import errata as E
from dfs.paths import draft_lines, draft_path, repo_root

CHECKED = [e for e in E.ERRATA if e.check is not None]
LINEAR = D.NoiseSchedule.from_name("linear", 1000)


def _draft_lines():
    path = draft_path()
    if not path.is_file():
        pytest.skip(f"the thesis draft is not at {path} (set DFS_SHARED to the folder holding thesis/draft_ru.txt)")
    return draft_lines(path)


def test_the_errata_cover_the_draft():
    keys = [e.key for e in E.ERRATA]
    assert len(keys) == len(set(keys)) and len(keys) >= 12
    sections = {e.section for e in E.ERRATA}
    assert {"§1.1.1", "App. 1", "App. 2", "App. 3"} <= sections
    kinds = {e.kind for e in E.ERRATA}
    assert {"formula", "derivation", "notation", "wording"} <= kinds
    for section in ("App. 1", "App. 2", "App. 3"):
        assert sum(e.section == section and e.check is not None for e in E.ERRATA) >= 3, section
    assert [e.line for e in E.ERRATA] == sorted(e.line for e in E.ERRATA), "keep the draft's order"
    assert all(e.check is not None or e.impact for e in E.ERRATA), "say why an unchecked entry matters"


@pytest.mark.parametrize("entry", E.ERRATA, ids=lambda e: e.key)
def test_quote_stands_verbatim_at_its_line(entry):
    lines = _draft_lines()
    assert entry.quote in lines[entry.line - 1], f"l.{entry.line} does not contain {entry.quote!r}"


def test_verify_quotes_reports_a_wrong_line(tmp_path):
    lines = _draft_lines()
    assert E.verify_quotes() == []
    shifted = tmp_path / "draft.txt"
    shifted.write_text("\n".join([""] + lines), encoding="utf-8")      # every line moves down by one
    assert set(E.verify_quotes(shifted)) == {e.key for e in E.ERRATA}


@pytest.mark.parametrize("entry", CHECKED, ids=lambda e: e.key)
def test_corrected_form_passes_and_draft_form_fails(entry):
    for seed in (0, 1):
        c = entry.check(LINEAR, seed=seed)
        assert c.correct_passes, f"{entry.key}: the corrected form failed ({c.correct} vs {c.criterion})"
        if c.draft is not None:
            assert c.draft_passes is False, f"{entry.key}: the draft's form passed ({c.draft} vs {c.criterion})"
        assert c.impact


def test_draft_path_honours_dfs_shared(monkeypatch, tmp_path):
    monkeypatch.setenv("DFS_SHARED", str(tmp_path))
    assert draft_path() == (tmp_path / "thesis" / "draft_ru.txt").resolve()
    with pytest.raises(FileNotFoundError, match="DFS_SHARED"):
        draft_lines()
    monkeypatch.delenv("DFS_SHARED")
    assert draft_path() == (repo_root().parent / "shared" / "thesis" / "draft_ru.txt").resolve()


# ---- the checks measure what they claim -----------------------------------------------------------------


def test_l84_draft_alpha_bar_is_the_power_of_one_factor():
    betas = torch.tensor([0.1, 0.2, 0.5], dtype=torch.float64)
    sched = D.NoiseSchedule(betas)
    assert torch.allclose(E.draft_alpha_bar_l84(sched), torch.tensor([0.9 ** 2, 0.8 ** 3, 0.5 ** 4], dtype=torch.float64))
    assert torch.allclose(sched.alphas_cumprod, torch.tensor([0.9, 0.72, 0.36], dtype=torch.float64))
    v1 = 0.1
    v2 = 0.8 * v1 + 0.2
    v3 = 0.5 * v2 + 0.5
    assert torch.allclose(E.iterated_forward_variance(sched), torch.tensor([v1, v2, v3], dtype=torch.float64))


def test_dropped_posterior_coefficient_by_hand():
    # √ᾱ_{t−1} β_t / (1 − ᾱ_t) on Ho et al.'s linear schedule (β from 1e-4 to 0.02 over 1000 steps)
    betas = [1e-4 + (0.02 - 1e-4) * i / 999 for i in range(1000)]
    abar = list(torch.cumprod(1 - torch.tensor(betas, dtype=torch.float64), 0).tolist())
    for t, expected in ((2, 0.545), (10, 0.147), (100, 0.019)):
        coef = math.sqrt(abar[t - 2]) * betas[t - 1] / (1 - abar[t - 1])
        assert round(coef, 3) == expected
        assert math.isclose(float(LINEAR.posterior_mean_coef1[t - 1]), coef, rel_tol=1e-9)


def test_grid_posterior_is_exact_for_a_gaussian_product():
    # Product of two Gaussian densities in x_{t-1}, solved by hand with precisions: independent of eq. 4's coefficients.
    sched = D.NoiseSchedule.from_name("cosine", 100)
    t, x0, xt = 30, torch.tensor([0.7, -1.2]).double(), torch.tensor([0.1, 0.9]).double()
    b, ab_prev = float(sched.betas[t]), float(sched.alphas_cumprod[t - 1])
    prec = (1 - b) / b + 1 / (1 - ab_prev)
    mean = (xt * math.sqrt(1 - b) / b + math.sqrt(ab_prev) * x0 / (1 - ab_prev)) / prec
    _, _, m, v = E.posterior_by_bayes_grid(sched, x0, xt, t)
    assert torch.allclose(m, mean, atol=1e-9)
    assert torch.allclose(v, torch.full_like(v, 1 / prec), rtol=1e-7)
    with pytest.raises(ValueError, match="step t"):
        E.posterior_by_bayes_grid(sched, x0, xt, 0)


def test_l107_draft_mean_agrees_only_where_x0_coefficient_does_not_matter():
    # x_0 + c₂ x_t equals c₁ x_0 + c₂ x_t exactly when x_0 = 0: the check can pass, it fails for the draft's reason
    t = torch.full((4,), 50)
    xt = torch.randn(4, dtype=torch.float64)
    zero = torch.zeros(4, dtype=torch.float64)
    assert torch.allclose(E.draft_posterior_mean(LINEAR, zero, xt, t), D.q_posterior_mean_variance(LINEAR, zero, xt, t)[0])
    one = torch.ones(4, dtype=torch.float64)
    diff = E.draft_posterior_mean(LINEAR, one, xt, t) - D.q_posterior_mean_variance(LINEAR, one, xt, t)[0]
    assert torch.allclose(diff, 1 - LINEAR.posterior_mean_coef1[50].expand(4))


def test_l319_draft_grouping_gives_minus_twice_the_mean():
    t = torch.tensor([3, 30, 300])
    x0, xt = torch.randn(3, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    assert torch.allclose(E.draft_posterior_mean_l319(LINEAR, x0, xt, t), -2 * D.q_posterior_mean_variance(LINEAR, x0, xt, t)[0])


def test_l111_draft_inversion_is_nan_exactly_where_alpha_bar_eps_exceeds_one():
    t, eps = 10, torch.linspace(-3, 3, 61, dtype=torch.float64)
    x = E.draft_x0_from_eps(LINEAR, torch.zeros_like(eps), t, eps)
    assert torch.equal(torch.isnan(x), LINEAR.alphas_cumprod[t] * eps > 1)


def test_l123_weights_by_hand():
    # Σ = σ² I: ‖Σ‖₂² = σ⁴ (the spectral norm of σ² I is σ²)
    sigma2 = torch.tensor([0.3, 0.01], dtype=torch.float64)
    assert torch.allclose(E.draft_loss_weight(sigma2), 1 / (2 * torch.linalg.matrix_norm(sigma2[:, None, None] * torch.eye(3), ord=2) ** 2))
    t = torch.tensor([0, 99, 999])
    b, a, ab = LINEAR.betas[t], LINEAR.alphas[t], LINEAR.alphas_cumprod[t]
    assert torch.allclose(E.eps_loss_weight(LINEAR, t, b), b / (2 * a * (1 - ab)))
    with pytest.raises(ValueError, match="timesteps"):
        E.eps_loss_weight(LINEAR, torch.tensor([LINEAR.T]), torch.ones(1, dtype=torch.float64))


def test_telescoping_is_exact_for_T_and_only_for_T():
    sched = D.NoiseSchedule.from_name("cosine", 20)
    assert E.telescoping_error(sched, seed=3) < 1e-9
    assert all(E.telescoping_error(sched, seed=3, upper=u) > 1e-3 for u in (2, 10, 19))


def test_markdown_has_one_block_per_entry_and_a_summary_table():
    rows = E.errata_table(D.NoiseSchedule.from_name("linear", 1000))
    md = E.errata_markdown(rows)
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + len(E.ERRATA)
    assert all(line.count("|") == 6 for line in table), "a '|' inside a cell would split it"
    assert md.count("```latex") == len(E.ERRATA)
    assert sum(r["check"] is not None for r in rows) == len(CHECKED)
    assert "FAILS" not in md and "draft passes" not in md
