"""``dfs reproduce``: execute the notebooks in order with papermill, collecting executed copies and figures.

Any ``notebooks/NN_*.ipynb`` (or ``NNx_*.ipynb``, a lowercase letter after the number: ``02b`` sorts after ``02``
and before ``03``) is picked up, so adding a notebook needs no change here. A failing notebook
stops the run with a :class:`NotebookFailed` naming the notebook and the cell.

``smoke=True`` (``dfs reproduce --smoke``) runs every notebook in *full* mode (``QUICK = False``) with
``DFS_SMOKE=1``, which caps every loop at a couple of steps (:mod:`dfs.smoke`), and keeps everything it writes in
``<out>/smoke/``: executed notebooks in ``notebooks/``, figures and tables in ``figures/`` (tables marked
``"smoke"``), training runs in ``checkpoints/`` (removed after a run that passed). The quick run's ``figures/`` and
``<out>/notebooks/`` are not touched.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from .paths import figures_dir, repo_root
from .results import results_dir
from .smoke import DIR_ENV, ENV

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
    start = time.perf_counter()
    with environment(DFS_NOTEBOOK=path.stem, MPLBACKEND=os.environ.get("MPLBACKEND", "Agg"),
                     DFS_FIGURES=str(figures_dir())):
        try:
            pm.execute_notebook(str(path), str(executed), parameters=params, kernel_name="python3",
                                cwd=str(path.parent), progress_bar=False, execution_timeout=timeout)
        except pm.PapermillExecutionError as e:
            raise NotebookFailed(path.stem, e.exec_count or e.cell_index + 1, e.ename, e.evalue, executed) from None
    return NotebookRun(path.stem, time.perf_counter() - start, executed)


@contextlib.contextmanager
def environment(**values: str):
    """Set environment variables for the block, then restore them."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def smoke_environment(out: str | Path) -> dict[str, str]:
    """The variables of a smoke run writing below ``<out>/smoke``: ``DFS_SMOKE=1``, its own figures folder and
    the folder its training runs go to."""
    root = (Path(out) / "smoke").resolve()
    return {ENV: "1", DIR_ENV: str(root), "DFS_FIGURES": str(root / "figures")}


def reproduce(quick: bool = False, only: list[str] | None = None, out: str | Path = "build",
              notebooks_dir: str | Path | None = None, parameters: dict | None = None, log=print,
              smoke: bool = False) -> list[NotebookRun]:
    """Run every notebook (or ``only`` some) in order; executed copies go to ``<out>/notebooks/``.

    A run of every notebook first removes the tables earlier runs recorded (``figures/results/*.json``), so the
    results chapter it ends with reads this run's numbers only; a run of ``only`` some keeps the others' tables.
    ``smoke``: full mode at toy length, everything below ``<out>/smoke/`` (module docstring)."""
    if smoke:
        if quick:
            raise ValueError("--smoke runs full mode at toy length: leave out --quick")
        env = smoke_environment(out)
        with environment(**env):
            runs = reproduce(False, only, Path(env[DIR_ENV]), notebooks_dir, parameters, log)
        shutil.rmtree(Path(env[DIR_ENV]) / "checkpoints", ignore_errors=True)
        log(f"smoke run passed: executed notebooks in {Path(env[DIR_ENV]) / 'notebooks'}, figures and tables "
            f"(marked smoke) in {env['DFS_FIGURES']}")
        return runs
    notebooks = find_notebooks(Path(notebooks_dir or repo_root() / "notebooks"), only)
    if not only:
        stale = sorted(results_dir().glob("*.json"))
        for p in stale:
            p.unlink()
        if stale:
            log(f"removed {len(stale)} table(s) recorded by earlier runs from {results_dir()}")
    out_dir = Path(out) / "notebooks"
    runs: list[NotebookRun] = []
    mode = "quick" if quick else "smoke" if os.environ.get(ENV) == "1" else "full"
    bar = tqdm(notebooks, desc=f"dfs reproduce ({mode})", unit="notebook")
    for nb in bar:
        bar.set_postfix_str(nb.stem)
        run = run_notebook(nb, out_dir, quick, parameters)
        runs.append(run)
        bar.write(f"  {run.notebook:<40s} {run.seconds:7.1f} s  -> {run.executed}")
    log(f"{len(runs)} notebook(s) in {sum(r.seconds for r in runs):.1f} s; figures in {figures_dir()}")
    return runs
