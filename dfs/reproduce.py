"""``dfs reproduce``: execute the notebooks in order with papermill, collecting executed copies and figures.

Any ``notebooks/NN_*.ipynb`` (or ``NNx_*.ipynb``, a lowercase letter after the number: ``02b`` sorts after ``02``
and before ``03``) is picked up, so adding a notebook needs no change here. A failing notebook
stops the run with a :class:`NotebookFailed` naming the notebook and the cell.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from .paths import figures_dir, repo_root
from .results import results_dir

NOTEBOOK_PATTERN = re.compile(r"^(\d{2}[a-z]?)_.+\.ipynb$")


class NotebookFailed(RuntimeError):
    """A notebook raised: ``notebook`` and ``cell`` (1-based execution order index) say where."""

    def __init__(self, notebook: str, cell: int | None, ename: str, evalue: str, executed: Path):
        self.notebook, self.cell, self.ename, self.evalue, self.executed = notebook, cell, ename, evalue, executed
        where = f"cell {cell}" if cell is not None else "an unknown cell"
        super().__init__(f"notebook {notebook} failed in {where}: {ename}: {evalue}\n"
                         f"the executed copy with the traceback is {executed}")


@dataclass
class NotebookRun:
    notebook: str
    seconds: float
    executed: Path


def find_notebooks(notebooks_dir: Path, only: list[str] | None = None) -> list[Path]:
    """The ``NN_name.ipynb`` / ``NNx_name.ipynb`` files in order; ``only`` keeps those whose number (``"01"``,
    ``"02b"``) or stem matches."""
    notebooks_dir = Path(notebooks_dir)
    if not notebooks_dir.is_dir():
        raise FileNotFoundError(f"no notebooks folder at {notebooks_dir}; run from the dfs checkout or set DFS_ROOT")
    found = sorted(p for p in notebooks_dir.iterdir() if NOTEBOOK_PATTERN.match(p.name))
    if only:
        wanted = {o.strip().zfill(2) if o.strip().isdigit() else o.strip() for o in only if o.strip()}
        picked = [p for p in found if NOTEBOOK_PATTERN.match(p.name).group(1) in wanted or p.stem in wanted]
        missing = wanted - {NOTEBOOK_PATTERN.match(p.name).group(1) for p in picked} - {p.stem for p in picked}
        if missing:
            raise ValueError(f"no notebook matches {sorted(missing)}; available: {[p.stem for p in found]}")
        found = picked
    return found


def run_notebook(path: Path, out_dir: Path, quick: bool, parameters: dict | None = None,
                 timeout: int | None = None) -> NotebookRun:
    """Execute one notebook with papermill (kernel ``python3``) into ``out_dir``; raise NotebookFailed on error."""
    import papermill as pm

    out_dir.mkdir(parents=True, exist_ok=True)
    executed = out_dir / path.name
    params = {"QUICK": bool(quick), **(parameters or {})}
    old = {k: os.environ.get(k) for k in ("DFS_NOTEBOOK", "MPLBACKEND", "DFS_FIGURES")}
    os.environ["DFS_NOTEBOOK"] = path.stem
    os.environ.setdefault("MPLBACKEND", "Agg")
    os.environ["DFS_FIGURES"] = str(figures_dir())
    start = time.perf_counter()
    try:
        pm.execute_notebook(str(path), str(executed), parameters=params, kernel_name="python3",
                            cwd=str(path.parent), progress_bar=False, execution_timeout=timeout)
    except pm.PapermillExecutionError as e:
        raise NotebookFailed(path.stem, e.exec_count or e.cell_index + 1, e.ename, e.evalue, executed) from None
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return NotebookRun(path.stem, time.perf_counter() - start, executed)


def reproduce(quick: bool = False, only: list[str] | None = None, out: str | Path = "build",
              notebooks_dir: str | Path | None = None, parameters: dict | None = None, log=print) -> list[NotebookRun]:
    """Run every notebook (or ``only`` some) in order; executed copies go to ``<out>/notebooks/``.

    A run of every notebook first removes the tables earlier runs recorded (``figures/results/*.json``), so the
    results chapter it ends with reads this run's numbers only; a run of ``only`` some keeps the others' tables."""
    notebooks = find_notebooks(Path(notebooks_dir or repo_root() / "notebooks"), only)
    if not only:
        stale = sorted(results_dir().glob("*.json"))
        for p in stale:
            p.unlink()
        if stale:
            log(f"removed {len(stale)} table(s) recorded by earlier runs from {results_dir()}")
    out_dir = Path(out) / "notebooks"
    runs: list[NotebookRun] = []
    mode = "quick" if quick else "full"
    bar = tqdm(notebooks, desc=f"dfs reproduce ({mode})", unit="notebook")
    for nb in bar:
        bar.set_postfix_str(nb.stem)
        run = run_notebook(nb, out_dir, quick, parameters)
        runs.append(run)
        bar.write(f"  {run.notebook:<40s} {run.seconds:7.1f} s  -> {run.executed}")
    log(f"{len(runs)} notebook(s) in {sum(r.seconds for r in runs):.1f} s; figures in {figures_dir()}")
    return runs
