"""``record(name, rows, caption)``: the one way a notebook hands a table of measured numbers to the results chapter.

Like :func:`dfs.figures.save` for figures: the table goes to ``figures/results/<name>.json`` with the notebook,
mode (quick/full), seed, device and git commit of the run that measured it (the context set by
:func:`dfs.notebook.setup`). Notebook 09 reads every recorded table back (:func:`load_tables`) and renders each one
as Markdown and LaTeX (:func:`to_markdown`, :func:`to_latex`), so the thesis's results chapter is assembled from
the runs themselves, never copied by hand.

    from dfs.results import record
    record("03_nll", [{"model": "L_simple", "NLL (bits/dim)": 1.23, "NLL (bits/dim) ± s.e.": 0.02, "n": 500}, ...],
           caption="NLL on held-out digits", uncertainty="± one standard error over 500 test digits",
           claims=[claim("L_hybrid has a lower NLL than L_simple", row="L_hybrid", column="NLL (bits/dim)",
                         better="lower", versus="L_simple")])

Uncertainty is read from companion columns: ``"<column> low"`` and ``"<column> high"`` (an interval, e.g. a 95 %
bootstrap; the renderers show it as ``value [low, high]``), or ``"<column> ± s.e."`` (a standard error; read as
value ± 1.96 s.e.). ``claims`` (see :func:`claim`) are the table's hypotheses; notebook 09 judges them from these
intervals (:mod:`dfs.results_chapter`).
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import re
from pathlib import Path

from . import figures
from .paths import figures_dir
from .smoke import smoke_caps

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


BETTER = ("higher", "lower")


def claim(text: str, row: str, column: str, better: str, versus: str | float = 0.0) -> dict:
    """One hypothesis about a table: ``row`` (the value of the table's first column) is better than ``versus`` on
    ``column``, where better means ``"higher"`` or ``"lower"``. ``versus``: another row's name (the two intervals
    are compared: overlapping means inconclusive) or a number (a threshold; 0 for a difference column)."""
    if better not in BETTER:
        raise ValueError(f"claim {text!r}: better must be one of {BETTER}, got {better!r}")
    if isinstance(versus, bool) or not isinstance(versus, (str, int, float)):
        raise TypeError(f"claim {text!r}: versus must be a row name or a number, got {versus!r}")
    return {"claim": str(text), "row": str(row), "column": str(column), "better": better,
            "versus": versus if isinstance(versus, str) else float(versus)}


def _check_claims(name: str, columns: list[str], rows: list[list], claims) -> list[dict]:
    checked = []
    labels = [str(r[0]) for r in rows]
    for c in claims or []:
        c = claim(c["claim"], c["row"], c["column"], c["better"], c.get("versus", 0.0))
        if c["column"] not in columns:
            raise ValueError(f"table {name!r}: claim {c['claim']!r} names column {c['column']!r}; columns: {columns}")
        for r in [c["row"]] + ([c["versus"]] if isinstance(c["versus"], str) else []):
            if r not in labels:
                raise ValueError(f"table {name!r}: claim {c['claim']!r} names row {r!r}; rows (first column): {labels}")
        checked.append(c)
    return checked


def make_table(name: str, rows: list[dict], caption: str, uncertainty: str = "", claims: list[dict] | None = None,
               **context) -> dict:
    """The table :func:`record` writes, without writing it. ``context``: notebook, quick, seed, device, commit
    (and any further keys, e.g. the ``command`` of a ``dfs eval`` run); missing ones are taken from the current
    figure context."""
    if not _NAME.match(name):
        raise ValueError(f"table name {name!r}: use letters, digits, '_', '-', '.' (it becomes a file name)")
    rows = list(rows)
    if not rows:
        raise ValueError(f"table {name!r} has no rows")
    columns = list(rows[0])
    for i, r in enumerate(rows):
        if list(r) != columns:
            raise ValueError(f"table {name!r}: row {i} has columns {list(r)}, row 0 has {columns}")
    cells = [[_plain(r[c]) for c in columns] for r in rows]
    ctx = figures.set_context()
    table = {"name": name, "caption": caption, "uncertainty": uncertainty, "columns": columns, "rows": cells,
             "claims": _check_claims(name, columns, cells, claims)}
    for key in ("notebook", "quick", "seed", "device"):
        table[key] = context.pop(key, ctx.get(key))
    table["commit"] = context.pop("commit", None) or figures.git_commit()
    table["time"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    if smoke_caps() is not None:   # dfs reproduce --smoke: full mode at toy length, numbers that measure nothing
        table["smoke"] = True
    table.update(context)
    return table


def record(name: str, rows: list[dict], caption: str, uncertainty: str = "", directory: Path | None = None,
           claims: list[dict] | None = None) -> Path:
    """Write one table of this run's numbers; returns the JSON path.

    ``rows``: a list of dicts with the same keys (the columns, in the first row's order). ``caption``: what the
    table shows. ``uncertainty``: how the intervals/standard errors in it were computed (over seeds, bootstrap
    over pairs, ...), or empty when the numbers are exact. ``claims``: hypotheses made with :func:`claim`, judged
    by notebook 09 from the table's intervals."""
    table = make_table(name, rows, caption, uncertainty, claims)
    out = results_dir(directory)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    figures._atomic_write_text(path, json.dumps(table, indent=1, ensure_ascii=False) + "\n")
    return path


def load_tables(directory: Path | None = None) -> list[dict]:
    """Every recorded table, ordered by notebook then name. Other JSON in the folder (a ``dfs eval`` report that a
    notebook wrote there) is not a table and is left out."""
    folder = results_dir(directory)
    tables = []
    for p in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            t = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{p} is not valid JSON ({e}); delete it and re-run the notebook that wrote it") from e
        if isinstance(t, dict) and {"name", "columns", "rows"} <= set(t):
            tables.append(t)
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


def mode_name(table: dict) -> str:
    if table.get("smoke"):
        return "smoke"
    return {True: "quick", False: "full"}.get(table.get("quick"), "unknown mode")


def source_text(table: dict) -> str:
    """Where a table's numbers came from: notebook (or command), mode, seed, commit."""
    mode = {True: "quick mode", False: "full mode"}.get(table.get("quick"), "mode not recorded")
    if table.get("smoke"):
        mode = "SMOKE run (full mode at toy length: the numbers measure nothing)"
    parts = [table.get("notebook") or "?", mode + (f" ({table['mode_note']})" if table.get("mode_note") else "")]
    if table.get("seed") is not None:
        parts.append(f"seed {table['seed']}")
    if table.get("commit"):
        parts.append(f"commit {table['commit']}")
    return ", ".join(parts)


def display_columns(table: dict) -> list[tuple[str, int, int | None, int | None]]:
    """(header, value index, low index, high index) per shown column: ``"<c> low"``/``"<c> high"`` columns are
    folded into ``c`` (shown as ``value [low, high]``)."""
    cols = table["columns"]
    index = {c: i for i, c in enumerate(cols)}
    folded = {f"{c} {end}" for c in cols for end in ("low", "high") if f"{c} low" in index and f"{c} high" in index}
    return [(c, i, index.get(f"{c} low") if f"{c} low" in folded else None,
             index.get(f"{c} high") if f"{c} high" in folded else None)
            for i, c in enumerate(cols) if c not in folded]


def _display_rows(table: dict) -> tuple[list[str], list[list[str]]]:
    shown = display_columns(table)
    rows = []
    for row in table["rows"]:
        cells = []
        for _, i, lo, hi in shown:
            text = format_cell(row[i])
            if lo is not None and row[lo] is not None and row[hi] is not None:
                text += f" [{format_cell(row[lo], 3)}, {format_cell(row[hi], 3)}]"
            cells.append(text)
        rows.append(cells)
    return [c for c, *_ in shown], rows


def to_markdown(table: dict) -> str:
    """A Markdown table with its caption and where the numbers came from."""
    columns, rows = _display_rows(table)
    head = "| " + " | ".join(c.replace("|", "\\|") for c in columns) + " |"
    rule = "|" + "---|" * len(columns)
    body = ["| " + " | ".join(v.replace("|", "\\|") for v in row) + " |" for row in rows]
    lines = [f"**{table['caption']}** ({source_text(table)})", "", head, rule, *body]
    if table.get("uncertainty"):
        lines += ["", f"Uncertainty: {table['uncertainty']}."]
    return "\n".join(lines) + "\n"


_TEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex_escape(text: str) -> str:
    """Escape LaTeX's special characters (the text is otherwise passed through: UTF-8 for a Russian thesis)."""
    return "".join(_TEX_SPECIAL.get(ch, ch) for ch in str(text))


def to_latex(table: dict) -> str:
    """A ``table`` environment (booktabs) with caption (and where the numbers came from) and label ``tab:<name>``."""
    cols, rows = _display_rows(table)
    caption = tex_escape(table["caption"]) + (f" ({tex_escape(table['uncertainty'])})" if table.get("uncertainty")
                                              else "")
    lines = [r"\begin{table}[ht]", r"\centering", r"\caption{" + caption + "}",
             r"\label{tab:" + table["name"] + "}", r"\begin{tabular}{" + "l" * len(cols) + "}", r"\toprule",
             " & ".join(tex_escape(c) for c in cols) + r" \\", r"\midrule"]
    lines += [" & ".join(tex_escape(v) for v in row) + r" \\" for row in rows]
    lines += [r"\bottomrule", r"\end{tabular}", "", r"\smallskip{\footnotesize " + tex_escape(source_text(table)) + "}",
              r"\end{table}"]
    return "\n".join(lines) + "\n"
