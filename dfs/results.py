"""``record(name, rows, caption)``: the one way a notebook hands a table of measured numbers to the results chapter.

Like :func:`dfs.figures.save` for figures: the table goes to ``figures/results/<name>.json`` with the notebook,
mode (quick/full), seed, device and git commit of the run that measured it (the context set by
:func:`dfs.notebook.setup`). Notebook 09 reads every recorded table back (:func:`load_tables`) and renders each one
as Markdown and LaTeX (:func:`to_markdown`, :func:`to_latex`), so the thesis's results chapter is assembled from
the runs themselves, never copied by hand.

    from dfs.results import record
    record("03_nll", [{"model": "L_simple", "NLL (bits/dim)": 1.23, "± s.e.": 0.02, "n": 500}, ...],
           caption="NLL on held-out digits", uncertainty="± one standard error over 500 test digits")
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import re
from pathlib import Path

from . import figures
from .paths import figures_dir

RESULTS = "results"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def results_dir(directory: Path | None = None) -> Path:
    """``figures/results`` (or ``<directory>/results``)."""
    return Path(directory or figures_dir()) / RESULTS


def _plain(value):
    """JSON-safe cell: numpy/torch scalars to Python numbers, NaN/inf to None, everything else to str."""
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return str(value)


def record(name: str, rows: list[dict], caption: str, uncertainty: str = "", directory: Path | None = None) -> Path:
    """Write one table of this run's numbers; returns the JSON path.

    ``rows``: a list of dicts with the same keys (the columns, in the first row's order). ``caption``: what the
    table shows. ``uncertainty``: how the intervals/standard errors in it were computed (over seeds, bootstrap
    over pairs, ...), or empty when the numbers are exact."""
    if not _NAME.match(name):
        raise ValueError(f"table name {name!r}: use letters, digits, '_', '-', '.' (it becomes a file name)")
    rows = list(rows)
    if not rows:
        raise ValueError(f"table {name!r} has no rows")
    columns = list(rows[0])
    for i, r in enumerate(rows):
        if list(r) != columns:
            raise ValueError(f"table {name!r}: row {i} has columns {list(r)}, row 0 has {columns}")
    ctx = figures.set_context()
    table = {"name": name, "caption": caption, "uncertainty": uncertainty, "columns": columns,
             "rows": [[_plain(r[c]) for c in columns] for r in rows],
             "notebook": ctx.get("notebook"), "quick": ctx.get("quick"), "seed": ctx.get("seed"),
             "device": ctx.get("device"), "commit": figures.git_commit(),
             "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    out = results_dir(directory)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    figures._atomic_write_text(path, json.dumps(table, indent=1, ensure_ascii=False) + "\n")
    return path


def load_tables(directory: Path | None = None) -> list[dict]:
    """Every recorded table, ordered by notebook then name."""
    folder = results_dir(directory)
    tables = []
    for p in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            tables.append(json.loads(p.read_text()))
        except json.JSONDecodeError as e:
            raise ValueError(f"{p} is not valid JSON ({e}); delete it and re-run the notebook that wrote it") from e
    return sorted(tables, key=lambda t: (t.get("notebook") or "", t["name"]))


def format_cell(value, digits: int = 4) -> str:
    """Numbers to ``digits`` significant figures, None to an em dash, the rest as text."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _mode(table: dict) -> str:
    return {True: "quick", False: "full"}.get(table.get("quick"), "unknown mode")


def to_markdown(table: dict) -> str:
    """A Markdown table with its caption and where the numbers came from."""
    head = "| " + " | ".join(table["columns"]) + " |"
    rule = "|" + "---|" * len(table["columns"])
    body = ["| " + " | ".join(format_cell(v).replace("|", "\\|") for v in row) + " |" for row in table["rows"]]
    source = f"{table.get('notebook') or '?'}, {_mode(table)} mode, seed {table.get('seed')}, commit {table.get('commit')}"
    lines = [f"**{table['caption']}** ({source})", "", head, rule, *body]
    if table.get("uncertainty"):
        lines += ["", f"Uncertainty: {table['uncertainty']}."]
    return "\n".join(lines) + "\n"


_TEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex_escape(text: str) -> str:
    """Escape LaTeX's special characters (the text is otherwise passed through: UTF-8 for a Russian thesis)."""
    return "".join(_TEX_SPECIAL.get(ch, ch) for ch in str(text))


def to_latex(table: dict) -> str:
    """A ``table`` environment (booktabs) with caption and label ``tab:<name>``."""
    cols = table["columns"]
    lines = [r"\begin{table}[ht]", r"\centering",
             r"\caption{" + tex_escape(table["caption"]) + (f" ({tex_escape(table['uncertainty'])})"
                                                            if table.get("uncertainty") else "") + "}",
             r"\label{tab:" + table["name"] + "}", r"\begin{tabular}{" + "l" * len(cols) + "}", r"\toprule",
             " & ".join(tex_escape(c) for c in cols) + r" \\", r"\midrule"]
    lines += [" & ".join(tex_escape(format_cell(v)) for v in row) + r" \\" for row in table["rows"]]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"
