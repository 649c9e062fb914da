"""dfs.results: tables recorded by notebooks round-trip with their run context and render as Markdown and LaTeX."""
import json

import numpy as np
import pytest
import torch

from dfs.results import load_tables, record, tex_escape, to_latex, to_markdown



def test_record_round_trips_rows_and_context(tmp_path, context):
    rows = [{"model": "L_simple", "NLL": np.float32(1.25), "n": np.int64(500)},
            {"model": "L_hybrid", "NLL": torch.tensor(1.125), "n": 500}]
    path = record("03_nll", rows, caption="NLL", uncertainty="± s.e.", directory=tmp_path)
    assert path == tmp_path / "results" / "03_nll.json"
    (t,) = load_tables(tmp_path)
    assert t["columns"] == ["model", "NLL", "n"]
    assert t["rows"] == [["L_simple", 1.25, 500], ["L_hybrid", 1.125, 500]]
    assert (t["notebook"], t["quick"], t["seed"]) == ("03_elbo_losses", True, 0)
    assert json.loads(path.read_text())["uncertainty"] == "± s.e."


def test_record_refuses_ragged_rows_empty_tables_and_bad_names(tmp_path, context):
    with pytest.raises(ValueError, match="row 1 has columns"):
        record("t", [{"a": 1, "b": 2}, {"a": 1}], caption="x", directory=tmp_path)
    with pytest.raises(ValueError, match="no rows"):
        record("t", [], caption="x", directory=tmp_path)
    with pytest.raises(ValueError, match="file name"):
        record("../t", [{"a": 1}], caption="x", directory=tmp_path)


def test_non_finite_numbers_become_dashes(tmp_path, context):
    record("t", [{"a": float("nan"), "b": float("inf")}], caption="x", directory=tmp_path)
    (t,) = load_tables(tmp_path)
    assert t["rows"] == [[None, None]]
    assert "| — | — |" in to_markdown(t)


def test_markdown_and_latex_render_every_cell(tmp_path, context):
    record("t", [{"method": "a|b", "top-1 %": 62.0, "note": "50% & up_x"}], caption="ID_top1 & pose",
           uncertainty="95 % bootstrap", directory=tmp_path)
    (t,) = load_tables(tmp_path)
    md = to_markdown(t)
    assert "| method | top-1 % | note |" in md and "a\\|b" in md and "quick mode" in md
    tex = to_latex(t)
    assert r"\caption{ID\_top1 \& pose (95 \% bootstrap)}" in tex
    assert r"a|b & 62 & 50\% \& up\_x \\" in tex
    assert tex.count(r"\\") == 2 and r"\label{tab:t}" in tex


def test_tex_escape_leaves_cyrillic_alone():
    assert tex_escape("Рис. 1.4 ~ 5%") == r"Рис. 1.4 \textasciitilde{} 5\%"
