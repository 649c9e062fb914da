"""The student edition of the exercise notebooks, and grading a filled-in notebook.

In the teacher's edition (``notebooks/exercises/NN_*.ipynb``) each exercise has a code cell tagged ``solution``
(the reference-quality implementation) followed by a cell tagged ``check`` (``check("name", name)``); written
answers are markdown cells tagged ``solution``. :func:`student_edition` replaces every solution code cell by stubs
that keep each function's signature and docstring and raise ``NotImplementedError("exercise: …")``, every
solution markdown cell by a prompt, and strips outputs. :func:`grade` runs a notebook's code in-process and checks
every exercise whose function it defines.
"""
from __future__ import annotations

import ast
import contextlib
import io
import os
import re
from pathlib import Path

import nbformat

from ..paths import repo_root
from .core import EXERCISES, CheckResult, run_check

SOLUTION, CHECK = "solution", "check"
ANSWER_PROMPT = "**Your answer.** *(Write it here, from the numbers of your run.)*"
EXERCISE_NOTEBOOK = re.compile(r"^(\d{2})_.+\.ipynb$")


def exercises_dir() -> Path:
    return repo_root() / "notebooks" / "exercises"


def exercise_notebooks(folder: str | Path | None = None) -> list[Path]:
    folder = Path(folder or exercises_dir())
    if not folder.is_dir():
        raise FileNotFoundError(f"no exercise notebooks at {folder}")
    return sorted(p for p in folder.iterdir() if EXERCISE_NOTEBOOK.match(p.name))


def _tags(cell) -> list:
    return cell.get("metadata", {}).get("tags", [])


def stub_source(source: str) -> str:
    """A solution cell's code with each top-level function's body replaced by ``raise NotImplementedError``:
    decorators, signature and docstring kept, everything else (imports, constants) kept as written."""
    tree = ast.parse(source)
    lines = source.splitlines()
    out, pos = [], 0
    for node in tree.body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        body = node.body
        doc = body[0] if (body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant)
                          and isinstance(body[0].value.value, str)) else None
        if body[0].lineno == node.lineno:                                          # "def f(x): return x"
            raise ValueError(f"write solution function {node.name} on several lines (the stub keeps its signature)")
        keep_to = doc.end_lineno if doc is not None else body[0].lineno - 1
        start = (node.decorator_list[0].lineno if node.decorator_list else node.lineno) - 1
        out += lines[pos:start] + lines[start:keep_to]
        indent = " " * (body[0].col_offset)
        out.append(f'{indent}raise NotImplementedError("exercise: implement {node.name}")')
        pos = node.end_lineno
    out += lines[pos:]
    return "\n".join(out).rstrip() + "\n"


def student_notebook(nb):
    """A copy of the teacher's notebook ``nb`` with solutions replaced by stubs/prompts and outputs stripped."""
    nb = nbformat.from_dict(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        if SOLUTION in _tags(cell):
            cell.source = stub_source(cell.source) if cell.cell_type == "code" else ANSWER_PROMPT
            cell.metadata["tags"] = [t for t in _tags(cell) if t != SOLUTION] + ["exercise"]
    nb.metadata["dfs_edition"] = "student"
    return nb


def student_edition(out: str | Path, folder: str | Path | None = None) -> list[Path]:
    """Write the student edition of every exercise notebook into ``out``; returns the files written."""
    out = Path(out)
    notebooks = exercise_notebooks(folder)
    if out.resolve() == Path(folder or exercises_dir()).resolve():
        raise ValueError("--out must not be the teacher's folder itself (the solutions would be overwritten)")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in notebooks:
        nb = student_notebook(nbformat.read(path, as_version=4))
        nbformat.write(nb, out / path.name)
        written.append(out / path.name)
    return written


def run_cells(nb, skip_tags=(CHECK,), namespace: dict | None = None) -> dict:
    """Execute a notebook's code cells in-process (in order, output captured), skipping cells with ``skip_tags``;
    returns the namespace. Used for grading and the tests; ``papermill`` runs the real thing."""
    ns = {"__name__": "__main__"} if namespace is None else namespace
    os.environ.setdefault("MPLBACKEND", "Agg")
    for cell in nb.cells:
        if cell.cell_type != "code" or set(_tags(cell)) & set(skip_tags):
            continue
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(cell.source, "<cell>", "exec"), ns)   # noqa: S102 - running the notebook is the point
    return ns


def notebook_exercises(nb) -> list[str]:
    """The exercise names checked in a notebook's ``check`` cells, in order."""
    names = []
    for cell in nb.cells:
        if cell.cell_type == "code" and CHECK in _tags(cell):
            names += re.findall(r"""check\(\s*["']([A-Za-z_]\w*)["']""", cell.source)
    unknown = [n for n in names if n not in EXERCISES]
    if unknown:
        raise ValueError(f"check cells name unknown exercises {unknown}; known: {sorted(EXERCISES)}")
    return names


def grade(path: str | Path) -> list[CheckResult]:
    """Run a (filled-in) exercise notebook's code, then every exercise its check cells name; one result each.
    A function that is missing or whose definition cell raised is reported as failed, never skipped."""
    nb = nbformat.read(path, as_version=4)
    names = notebook_exercises(nb)
    ns: dict = {"__name__": "__main__"}
    cwd = os.getcwd()
    try:
        os.chdir(Path(path).parent)
        for cell in nb.cells:
            if cell.cell_type != "code" or CHECK in _tags(cell):
                continue
            try:
                run_cells(nbformat.from_dict({"cells": [cell]}), namespace=ns)
            except Exception as e:  # noqa: BLE001 - a broken cell fails its exercises, it does not stop grading
                ns.setdefault("_errors", []).append(f"{type(e).__name__}: {e}")
    finally:
        os.chdir(cwd)
    results = []
    for name in names:
        if name not in ns:
            results.append(CheckResult(name, False, f"the notebook defines no function {name}"))
        else:
            results.append(run_check(name, ns[name]))
    return results


def grade_table(results: list[CheckResult]) -> str:
    lines = ["| exercise | notebook | result |", "|---|---|---|"]
    for r in results:
        verdict = "✓ passed" if r.passed else "✗ " + r.message.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {r.name} | {EXERCISES[r.name].notebook} | {verdict} |")
    passed = sum(r.passed for r in results)
    lines.append(f"\n{passed} of {len(results)} exercises pass.")
    return "\n".join(lines)
