"""Every notebook is committed clean and runs in quick mode, saving its figures through dfs.figures."""
import json
from pathlib import Path

import nbformat
import pytest

from dfs.reproduce import run_notebook

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_clean_with_parameters_and_budget(path):
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "strip outputs"
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and "QUICK" in params[0].source
    intro = nb.cells[0]
    assert intro.cell_type == "markdown" and "budget" in intro.source.lower()
    assert "setup(" in "".join(c.source for c in code[:3]), "call dfs.notebook.setup near the top"
    longest = max(len(c.source.splitlines()) for c in code)
    assert longest <= 40, f"a {longest}-line code cell: long code belongs in dfs/"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_quick_mode_and_saves_figures(path, tmp_path, monkeypatch):
    monkeypatch.setenv("DFS_FIGURES", str(tmp_path / "figures"))
    run = run_notebook(path, tmp_path / "build", quick=True)
    manifest = json.loads((tmp_path / "figures" / "MANIFEST.json").read_text())
    mine = {k: v for k, v in manifest.items() if v["notebook"] == path.stem}
    assert mine, f"{path.stem} saved no figure through dfs.figures.save"
    assert all(v["mode"] == "quick" for v in mine.values())
    for entry in mine.values():
        for f in entry["files"]:
            assert (tmp_path / "figures" / f).stat().st_size > 0
    print(f"{path.stem}: {run.seconds:.1f} s, {len(mine)} figures")
