"""`dfs reproduce` runs notebooks in order, passes QUICK, collects figures, and names the failing cell."""
import json

import nbformat
import pytest

from dfs import cli
from dfs.reproduce import NotebookFailed, find_notebooks, reproduce


def _notebook(path, cells):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell("QUICK = False\nSEED = 0")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# test"), params] + [nbformat.v4.new_code_cell(c) for c in cells]
    nbformat.write(nb, path)


@pytest.fixture()
def notebooks(tmp_path, monkeypatch):
    d = tmp_path / "notebooks"
    d.mkdir()
    _notebook(d / "01_ok.ipynb", [
        "from dfs.notebook import setup\ndevice = setup('01_ok', quick=QUICK, seed=SEED)",
        "import matplotlib.pyplot as plt, dfs.figures\nfig = plt.figure()\n"
        "dfs.figures.save(fig, '01_fig_quick' if QUICK else '01_fig_full')",
    ])
    _notebook(d / "02_fails.ipynb", ["x = 1", "raise RuntimeError('boom in the second code cell')"])
    (d / "notes.ipynb").write_text("{}")  # not NN_*: ignored
    figs = tmp_path / "figures"
    monkeypatch.setenv("DFS_FIGURES", str(figs))
    return d, figs, tmp_path / "build"


def test_find_notebooks_orders_and_filters(notebooks):
    d, _, _ = notebooks
    assert [p.stem for p in find_notebooks(d)] == ["01_ok", "02_fails"]
    assert [p.stem for p in find_notebooks(d, ["2"])] == ["02_fails"]
    assert [p.stem for p in find_notebooks(d, ["01_ok"])] == ["01_ok"]
    with pytest.raises(ValueError, match="no notebook matches"):
        find_notebooks(d, ["07"])


def test_a_lettered_notebook_sorts_between_its_neighbours_and_is_selectable(notebooks):
    d, _, _ = notebooks
    _notebook(d / "01b_extra.ipynb", ["x = 1"])
    _notebook(d / "01B_upper.ipynb", ["x = 1"])          # only a lowercase letter is a notebook number
    assert [p.stem for p in find_notebooks(d)] == ["01_ok", "01b_extra", "02_fails"]
    assert [p.stem for p in find_notebooks(d, ["01b"])] == ["01b_extra"]
    assert [p.stem for p in find_notebooks(d, ["01"])] == ["01_ok"]


def test_reproduce_quick_writes_executed_copy_and_manifest(notebooks):
    d, figs, build = notebooks
    runs = reproduce(quick=True, only=["01"], out=build, notebooks_dir=d, log=lambda *_: None)
    assert [r.notebook for r in runs] == ["01_ok"] and runs[0].seconds > 0
    executed = nbformat.read(build / "notebooks" / "01_ok.ipynb", as_version=4)
    assert any("QUICK = True" in c.source for c in executed.cells)  # papermill's injected parameters
    manifest = json.loads((figs / "MANIFEST.json").read_text())
    assert set(manifest) == {"01_fig_quick"}
    assert manifest["01_fig_quick"]["notebook"] == "01_ok" and manifest["01_fig_quick"]["mode"] == "quick"
    assert (figs / "01_fig_quick.png").exists()


def test_a_full_run_starts_from_no_recorded_tables_and_a_partial_run_keeps_them(notebooks):
    d, figs, build = notebooks
    (d / "02_fails.ipynb").unlink()
    old = figs / "results" / "05_old_table.json"
    old.parent.mkdir(parents=True)
    old.write_text("{}")
    reproduce(quick=True, only=["01"], out=build, notebooks_dir=d, log=lambda *_: None)
    assert old.exists()                      # a partial run keeps what the other notebooks recorded
    said = []
    reproduce(quick=True, out=build, notebooks_dir=d, log=said.append)
    assert not old.exists() and any("removed 1 table" in s for s in said)


def test_failing_notebook_stops_the_run_naming_notebook_and_cell(notebooks):
    d, _, build = notebooks
    with pytest.raises(NotebookFailed) as err:
        reproduce(quick=True, out=build, notebooks_dir=d, log=lambda *_: None)
    e = err.value
    assert e.notebook == "02_fails" and e.ename == "RuntimeError" and "boom" in e.evalue
    # cells: markdown, parameters, injected-parameters, "x = 1", raise → the 4th code cell to run
    assert e.cell == 4
    assert "02_fails" in str(e) and "cell 4" in str(e)


def test_cli_reports_failure_and_bad_selection(notebooks, monkeypatch, capsys):
    d, _, build = notebooks
    monkeypatch.setenv("DFS_ROOT", str(d.parent))
    assert cli.main(["reproduce", "--quick", "--only", "02", "--out", str(build)]) == 1
    assert "02_fails failed in cell 4" in capsys.readouterr().err
    assert cli.main(["reproduce", "--only", "09"]) == 2
    assert "no notebook matches" in capsys.readouterr().err
