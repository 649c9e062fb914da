"""The results chapter: verdicts from intervals, dfs eval reports as tables, and the chapter written from tables
recorded in a temporary folder (as notebooks 01-08 do inside `dfs reproduce`)."""
import json

import pytest

from dfs import figures
from dfs import results_chapter as rc
from dfs.results import claim, load_tables, record


def nll_table(tmp_path, simple=(5.99, 0.024), hybrid=(5.43, 0.019), notebook_claims=None):
    rows = [{"model": "L_simple", "NLL": simple[0], "NLL ± s.e.": simple[1]},
            {"model": "L_hybrid", "NLL": hybrid[0], "NLL ± s.e.": hybrid[1]},
            {"model": "exact", "NLL": 5.0, "NLL ± s.e.": None}]
    claims = notebook_claims or [claim("hybrid has a lower NLL than simple", "L_hybrid", "NLL", "lower", "L_simple")]
    record("03_nll", rows, caption="NLL", uncertainty="± s.e.", directory=tmp_path, claims=claims)
    (t,) = load_tables(tmp_path)
    return t


@pytest.mark.parametrize("a, b, better, expected", [
    ((1.0, 2.0), (3.0, 4.0), "higher", rc.REFUTED), ((1.0, 2.0), (3.0, 4.0), "lower", rc.SUPPORTED),
    ((3.0, 4.0), (1.0, 2.0), "higher", rc.SUPPORTED), ((1.0, 3.0), (2.0, 4.0), "higher", rc.INCONCLUSIVE),
    ((1.0, 2.0), (2.0, 3.0), "lower", rc.INCONCLUSIVE),      # touching intervals overlap
    ((-0.2, 0.1), (0.0, 0.0), "higher", rc.INCONCLUSIVE),    # a difference whose interval holds 0
    ((0.01, 0.1), (0.0, 0.0), "higher", rc.SUPPORTED), ((-0.3, -0.1), (0.0, 0.0), "lower", rc.SUPPORTED)])
def test_compare_intervals(a, b, better, expected):
    assert rc.compare(a, b, better) == expected


def test_compare_refuses_bad_input():
    with pytest.raises(ValueError, match="better"):
        rc.compare((0, 1), (0, 1), "bigger")
    with pytest.raises(ValueError, match="low <= high"):
        rc.compare((1, 0), (0, 1), "higher")


def test_standard_errors_become_95_percent_intervals_and_separate_rows_are_judged(tmp_path, context):
    t = nll_table(tmp_path)
    v, lo, hi = rc.interval(t, "L_hybrid", "NLL")
    assert v == 5.43
    assert (lo, hi) == pytest.approx((5.43 - 1.959964 * 0.019, 5.43 + 1.959964 * 0.019))
    assert rc.judge(t["claims"][0], t).verdict == rc.SUPPORTED
    assert rc.interval(t, "exact", "NLL") == (5.0, None, None)


def test_overlapping_intervals_are_inconclusive_and_the_wrong_side_refuted(tmp_path, context):
    close = nll_table(tmp_path, simple=(5.45, 0.02), hybrid=(5.43, 0.02))   # ±0.039: the intervals overlap
    assert rc.judge(close["claims"][0], close).verdict == rc.INCONCLUSIVE
    worse = nll_table(tmp_path, simple=(5.0, 0.01), hybrid=(5.43, 0.01))
    verdict = rc.judge(worse["claims"][0], worse)
    assert verdict.verdict == rc.REFUTED and "L_hybrid 5.43" in verdict.evidence


def test_no_interval_is_not_judged_and_an_absent_table_not_measured(tmp_path, context):
    t = nll_table(tmp_path, notebook_claims=[claim("exact beats simple", "exact", "NLL", "lower", "L_simple"),
                                             claim("simple below 6 bits", "L_simple", "NLL", "lower", 6.5)])
    assert rc.judge(t["claims"][0], t).verdict == rc.NOT_JUDGED
    assert rc.judge(t["claims"][1], t).verdict == rc.SUPPORTED            # 5.99 + 0.047 < 6.5
    assert rc.judge(t["claims"][1], None, "03_nll").verdict == rc.NOT_MEASURED


def test_record_checks_claims_against_rows_and_columns(tmp_path, context):
    with pytest.raises(ValueError, match="names row 'L_vlb'"):
        nll_table(tmp_path, notebook_claims=[claim("x", "L_vlb", "NLL", "lower", "L_simple")])
    with pytest.raises(ValueError, match="names column"):
        nll_table(tmp_path, notebook_claims=[claim("x", "L_hybrid", "bits", "lower")])
    with pytest.raises(ValueError, match="better"):
        claim("x", "a", "b", "smaller")


def eval_summary(diff=(-0.07, -0.18, 0.04)):
    metrics = {"id_top1": 0.62, "id_cos_source": 0.9, "pose_error": 2.6, "expression_error": 2.7, "face_found": 1.0,
               "id_top5": 1.0, "seconds_per_swap": 0.9, "n": 100}
    return {"command": "dfs eval --method diffusion --pairs 100 --seed 0",
            "settings": {"method": "diffusion", "checkpoint": "/x/dfs/weights/swap-quick", "seed": 0, "pairs": 100,
                         "crop_size": 64, "encoder": "DlibResNetEncoder", "device": "cpu (1 threads)"},
            "n_pairs": 100, "gallery_people": list("abcdefghij"),
            "inception": {"available": False, "reason": "no torchmetrics"},
            "rows": {"diffusion": metrics, "classical": dict(metrics, id_top1=0.69),
                     "target unchanged": dict(metrics, id_cos_source=0.83)},
            "intervals": {"diffusion": {"id_cos_source": [0.89, 0.91]}, "target unchanged": {"id_cos_source": [0.82, 0.84]}},
            "compare": "classical",
            "differences": {"diffusion": {"id_top1": dict(zip(("mean", "low", "high"), diff), n=100),
                                          "pose_error": {"mean": 0.5, "low": 0.2, "high": 0.8, "n": 99}}}}


def test_eval_report_becomes_value_and_difference_tables_with_claims(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "eval_diffusion_n100_s0.json").write_text(json.dumps(eval_summary()))
    (tmp_path / "results" / "ablation").mkdir()
    (tmp_path / "results" / "ablation" / "eval_diffusion_n100_s0.json").write_text(json.dumps(eval_summary()))
    (tmp_path / "results" / "sweep" / "g10").mkdir(parents=True)     # two levels down, with its own variant
    (tmp_path / "results" / "sweep" / "g10" / "eval_diffusion_n24_s1.json").write_text(
        json.dumps({**eval_summary(), "variant": "guidance 10"}))
    (tmp_path / "results" / "other.json").write_text("{}")
    reports = rc.find_eval_reports(tmp_path / "results")
    assert [s for s, _ in reports] == ["eval_diffusion_n100_s0", "eval_ablation_diffusion_n100_s0",
                                       "eval_sweep-g10_diffusion_n24_s1"]
    assert [r.get("variant") for _, r in reports] == [None, "ablation", "guidance 10"]
    values, diffs = rc.eval_report_tables(*reports[0])
    assert values["quick"] is True and "swap-quick" in values["mode_note"] and values["notebook"] == "dfs eval"
    verdicts = {c["column"]: rc.judge(c, t).verdict for t in (values, diffs) for c in t["claims"]}
    assert verdicts == {"ID cos to source": rc.SUPPORTED,        # [0.89, 0.91] above [0.82, 0.84]
                        "Δ ID top-1": rc.INCONCLUSIVE,           # [-0.18, 0.04] holds 0
                        "Δ pose error (°)": rc.REFUTED}          # [0.2, 0.8]: worse pose than the classical swap
    assert rc.interval(diffs, "diffusion", "Δ ID top-1") == (-0.07, -0.18, 0.04)


def test_eval_mode_reads_the_checkpoint_name():
    s = eval_summary()
    assert rc.eval_mode(s)[0] is True
    s["settings"]["checkpoint"] = "checkpoints/swap-full/step_0100000"
    assert rc.eval_mode(s)[0] is False
    s["settings"]["checkpoint"] = "checkpoints/mine/step_1"
    assert rc.eval_mode(s)[0] is None
    s["settings"]["checkpoint"] = "None"
    assert rc.eval_mode(s) == (None, "no checkpoint")


def test_chapter_from_recorded_tables_writes_markdown_and_tex_and_names_missing_notebooks(tmp_path, context):
    nll_table(tmp_path / "figures")
    figures.set_context(notebook="05_faces_identity", quick=False, device="cuda:0 (H200)")
    record("05_verification", [{"fold": "mean", "AUC": 0.99, "AUC low": 0.98, "AUC high": 1.0}], caption="ROC",
           directory=tmp_path / "figures", claims=[claim("above chance", "mean", "AUC", "higher", 0.5)])
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "eval_diffusion_n100_s0.json").write_text(json.dumps(eval_summary()))
    # a dfs eval report that a notebook wrote beside the recorded tables: not a table, but this run's report
    (tmp_path / "figures" / "results" / "eval_diffusion_n24_s0.json").write_text(json.dumps(eval_summary()))
    assert [t["name"] for t in load_tables(tmp_path / "figures")] == ["03_nll", "05_verification"]
    import matplotlib.pyplot as plt

    figures.save(plt.figure(), "03_some_figure", directory=tmp_path / "figures")
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    for stem in ("00_thesis_map", "03_elbo_losses", "05_faces_identity", "07_swap_evaluation", "09_results"):
        (nbs / f"{stem}.ipynb").write_text("{}")
    ch = rc.build_chapter(tmp_path / "figures", tmp_path / "results", nbs)
    assert ch.missing == ["07_swap_evaluation"]
    assert ch.n_figures == 1
    assert [t["name"] for t in ch.tables] == ["03_nll", "05_verification", "eval_diffusion_n100_s0",
                                              "eval_diffusion_n100_s0_vs_classical", "run_eval_diffusion_n24_s0",
                                              "run_eval_diffusion_n24_s0_vs_classical"]
    assert "this run" in ch.tables[-1]["caption"]
    assert [v.verdict for v in ch.verdicts][:2] == [rc.SUPPORTED, rc.SUPPORTED]
    written = rc.write_chapter(ch, tmp_path / "figures")
    md = written["markdown"].read_text()
    assert "# 2.2 Experimental results" in md and "# 2.3 Conclusions" in md and "# 2.4 Further work" in md
    assert "no table from 07_swap_evaluation" in md
    assert "03_elbo_losses, quick mode" in md and "05_faces_identity, full mode" in md
    assert "0.99 [0.98, 1]" in md                       # the interval folded into its value
    assert "FID/KID were not computed (no torchmetrics)" in md
    assert "No full-mode run" not in md and "No GPU run" not in md      # one table was full mode on a GPU
    tex = (tmp_path / "figures" / "results" / "tex" / "05_verification.tex").read_text()
    assert r"\label{tab:05_verification}" in tex and "0.99 [0.98, 1]" in tex
    assert (tmp_path / "figures" / "results" / "tex" / "verdicts.tex").is_file()
    assert set(written) == {"markdown", "verdicts", *[t["name"] for t in ch.tables]}


def test_chapter_without_any_input_still_renders(tmp_path):
    (tmp_path / "nb").mkdir()
    ch = rc.build_chapter(tmp_path / "figures", tmp_path / "none", tmp_path / "nb")
    assert ch.tables == [] and ch.verdicts == []
    md = rc.render_markdown(ch)
    assert "0 tables" in md and "# 2.4 Further work" in md and "lists 0 figures" in md
    rc.write_chapter(ch, tmp_path / "figures")
    assert "no claims" in (tmp_path / "figures" / "results" / "tex" / "verdicts.tex").read_text()
