"""Every notebook is committed clean and runs in quick mode, saving its figures through dfs.figures."""
import json
import os
from pathlib import Path

import nbformat
import pytest

from dfs.reproduce import NOTEBOOK_PATTERN, run_notebook

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted(p for p in (ROOT / "notebooks").iterdir() if NOTEBOOK_PATTERN.match(p.name))   # 01_…, 02b_…


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


def _executed_copy(path):
    """The copy of ``path`` that the main job (``dfs reproduce --quick``, run first by .ci/run) executed, when
    DFS_EXECUTED_NOTEBOOKS points at its folder; None otherwise (then the test runs the notebook itself)."""
    folder = os.environ.get("DFS_EXECUTED_NOTEBOOKS")
    if not folder:
        return None
    executed = Path(folder) / path.name
    assert executed.is_file(), f"DFS_EXECUTED_NOTEBOOKS={folder} has no {path.name}: did the main job run it?"
    return executed


def _same_code(source_nb, executed_nb) -> bool:
    """The executed copy ran this notebook's code (papermill adds an injected-parameters cell; nothing else)."""
    mine = [c.source for c in source_nb.cells if c.cell_type == "code"]
    theirs = [c.source for c in executed_nb.cells if c.cell_type == "code"
              and "injected-parameters" not in c.metadata.get("tags", [])]
    return mine == theirs


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_quick_mode_and_saves_figures(path, tmp_path, monkeypatch):
    executed = _executed_copy(path)
    if executed is None:
        monkeypatch.setenv("DFS_FIGURES", str(tmp_path / "figures"))
        run = run_notebook(path, tmp_path / "build", quick=True)
        figures, seconds = tmp_path / "figures", run.seconds
    else:   # the main job ran it once already: check that run instead of running it twice
        done = nbformat.read(executed, as_version=4)
        assert _same_code(nbformat.read(path, as_version=4), done), f"{executed} ran other code than {path}"
        errors = [o for c in done.cells if c.cell_type == "code" for o in c.get("outputs", [])
                  if o.get("output_type") == "error"]
        assert not errors, f"{executed}: {errors[0].get('ename')}: {errors[0].get('evalue')}"
        params = [c for c in done.cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert params and "QUICK = True" in params[0].source, f"{executed} was not run in quick mode"
        figures, seconds = ROOT / "figures", done.metadata.get("papermill", {}).get("duration") or 0.0
    manifest = json.loads((figures / "MANIFEST.json").read_text())
    mine = {k: v for k, v in manifest.items() if v["notebook"] == path.stem}
    assert mine, f"{path.stem} saved no figure through dfs.figures.save"
    assert all(v["mode"] == "quick" for v in mine.values())
    for entry in mine.values():
        for f in entry["files"]:
            assert (figures / f).stat().st_size > 0
    print(f"{path.stem}: {seconds:.1f} s, {len(mine)} figures")
