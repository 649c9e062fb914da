"""The thesis's results chapter (§2.2–2.4), assembled from the runs' own numbers (notebook 09).

* §2.2 **experimental results**: every table the notebooks recorded with :func:`dfs.results.record`
  (``figures/results/*.json``) and every ``dfs eval`` report (``results/**/eval_*.json``, turned into a table of
  values with their 95 % bootstrap intervals and a table of paired differences to the classical swap by
  :func:`eval_tables`);
* §2.3 **conclusions**: one computed verdict per claim (:func:`judge`), each naming its table: *supported* when
  the interval lies on the claimed side, *refuted* when it lies on the other side, *inconclusive* when the
  intervals overlap (or a difference's interval contains 0), *not judged* when the table records no uncertainty,
  *not measured* when its table or row is absent;
* §2.4 **further work** (:func:`further_work`): what was not measured and why, computed from the same inputs
  (missing tables, quick-only or CPU-only runs, FID not computed, one identity judge, inconclusive claims) and
  from the thesis map's uncovered entries.

:func:`build_chapter` collects all of it; :func:`write_chapter` writes ``figures/results.md`` and one ``.tex``
table per result (``figures/results/tex/<name>.tex``, plus ``verdicts.tex``).
"""
from __future__ import annotations

import json
import os
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from . import figures, results, thesis_map
from .labels import lbl
from .paths import figures_dir, repo_root
from .smoke import smoke_caps

Z95 = 1.959963984540054   # two-sided 95 % normal quantile, for "± s.e." columns

# dfs eval's metrics with a bootstrap interval: (key, column, which way is better)
EVAL_METRICS = (("id_top1", "ID top-1", "higher"), ("id_cos_source", "ID cos to source", "higher"),
                ("pose_error", "pose error (°)", "lower"), ("expression_error", "expression error (% IOD)", "lower"),
                ("face_found", "face found", "higher"))
SUPPORTED, REFUTED, INCONCLUSIVE, NOT_JUDGED, NOT_MEASURED = ("supported", "refuted", "inconclusive", "not judged",
                                                              "not measured")


# ---- intervals and verdicts ----------------------------------------------------------------------------------
def interval(table: dict, row: str, column: str) -> tuple[float | None, float | None, float | None]:
    """(value, low, high) of ``row`` (first-column value) in ``column``; low/high from ``"<column> low"``/
    ``"<column> high"``, or value ± 1.96 · ``"<column> ± s.e."``; (value, None, None) when the table records no
    uncertainty for it; KeyError when the row or the column is absent."""
    cols = table["columns"]
    if column not in cols:
        raise KeyError(f"table {table['name']!r} has no column {column!r}")
    match = [r for r in table["rows"] if str(r[0]) == row]
    if not match:
        raise KeyError(f"table {table['name']!r} has no row {row!r}")
    r = dict(zip(cols, match[0]))
    value = r[column]
    if value is None:
        return None, None, None
    if f"{column} low" in r and f"{column} high" in r and r[f"{column} low"] is not None \
            and r[f"{column} high"] is not None:
        return float(value), float(r[f"{column} low"]), float(r[f"{column} high"])
    se = r.get(f"{column} ± s.e.")
    if se is not None:
        return float(value), float(value) - Z95 * float(se), float(value) + Z95 * float(se)
    return float(value), None, None


def compare(a: tuple[float, float], b: tuple[float, float], better: str) -> str:
    """Verdict for "a is better than b" from two closed intervals (low, high): *inconclusive* when they overlap
    (touching counts), else *supported* / *refuted*. A number b is the interval (b, b)."""
    if better not in results.BETTER:
        raise ValueError(f"better must be one of {results.BETTER}, got {better!r}")
    (alo, ahi), (blo, bhi) = a, b
    if alo > ahi or blo > bhi:
        raise ValueError(f"intervals must have low <= high, got {a} and {b}")
    if alo > bhi:
        return SUPPORTED if better == "higher" else REFUTED
    if ahi < blo:
        return REFUTED if better == "higher" else SUPPORTED
    return INCONCLUSIVE


@dataclass
class Verdict:
    claim: dict
    table: str
    verdict: str
    evidence: str
    mode: str = ""


def judge(claim: dict, table: dict | None, table_name: str | None = None) -> Verdict:
    """The verdict on one claim (:func:`dfs.results.claim`) from its table (None: the table is absent)."""
    name = table["name"] if table else table_name or "?"
    if table is None:
        return Verdict(claim, name, NOT_MEASURED, f"table {name} was not recorded in this run")
    mode = results.mode_name(table)
    try:
        v, lo, hi = interval(table, claim["row"], claim["column"])
        versus = claim["versus"]
        other = interval(table, versus, claim["column"]) if isinstance(versus, str) else (versus, versus, versus)
    except KeyError as e:
        return Verdict(claim, name, NOT_MEASURED, str(e.args[0]), mode)
    fmt = results.format_cell
    if v is None or other[0] is None:
        return Verdict(claim, name, NOT_MEASURED, f"no value for {claim['column']}", mode)

    def show(x, label):
        return f"{label} {fmt(x[0], 3)}" + (f" [{fmt(x[1], 3)}, {fmt(x[2], 3)}]" if x[1] is not None else "")
    mine = show((v, lo, hi), claim["row"])
    theirs = show(other, claim["versus"]) if isinstance(claim["versus"], str) else f"{fmt(claim['versus'], 3)}"
    evidence = f"{claim['column']}: {mine} vs {theirs} ({claim['better']} is better)"
    if lo is None or other[1] is None:
        return Verdict(claim, name, NOT_JUDGED, evidence + "; the table records no interval", mode)
    return Verdict(claim, name, compare((lo, hi), (other[1], other[2]), claim["better"]), evidence, mode)


# ---- dfs eval reports ----------------------------------------------------------------------------------------
def eval_mode(summary: dict) -> tuple[bool | None, str]:
    """(quick?, note) of a ``dfs eval`` report, read from its checkpoint's name (the report does not store the
    preset): a name with "quick" is quick mode, with "full" full mode; None when it says neither."""
    ckpt = str(summary.get("settings", {}).get("checkpoint"))
    name = "/".join(Path(ckpt).parts[-2:]) if ckpt not in ("None", "") else ""
    if not name:
        return None, "no checkpoint"
    words = set(re.split(r"[^a-z]+", name.lower()))
    quick = True if "quick" in words else False if "full" in words else None
    return quick, f"checkpoint {name}, {summary['settings'].get('crop_size', '?')} px"


def find_eval_reports(root: str | os.PathLike | None = None, subfolders: bool = True,
                      prefix: str = "", variant: str | None = None) -> list[tuple[str, dict]]:
    """(table name stem, report) for every ``eval_*.json`` in ``root`` (default ``<repo>/results``) and, with
    ``subfolders``, in every folder below (a subfolder path names a variant, e.g. an ablation: it is kept in the
    report as ``"variant"`` unless the report names its own; ``variant`` sets it for the top level). ``prefix`` goes
    before each stem. JSON that is not a ``dfs eval`` report is skipped."""
    root = Path(root) if root is not None else Path(repo_root()) / "results"
    found = []
    files = sorted(root.glob("eval_*.json")) + (sorted(p for p in root.rglob("eval_*.json") if p.parent != root)
                                                   if subfolders else [])
    for p in files if root.is_dir() else []:
        try:
            summary = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{p} is not valid JSON ({e})") from e
        if not isinstance(summary, dict) or "rows" not in summary or "settings" not in summary:
            continue
        folder = p.parent.relative_to(root).as_posix().replace("/", "-") if p.parent != root else ""
        stem = prefix + (p.stem if not folder else f"eval_{folder}_{p.stem[len('eval_'):]}")
        if folder:
            summary.setdefault("variant", folder)
        elif variant:
            summary["variant"] = variant
        found.append((stem, summary))
    return found


def eval_tables(summary: dict, name: str, label: str | None = None) -> list[dict]:
    """A ``dfs eval`` report as :func:`dfs.results.record` arguments (``name``, ``rows``, ``caption``,
    ``uncertainty``, ``claims``): the values of every row with 95 % bootstrap intervals, and (when the report has
    them) the paired differences to the comparison row. Claims: the method moves identity towards the source
    (ID cos to source above "target unchanged"), and it beats the comparison row on each metric."""
    s, rows_in, ints = summary["settings"], summary["rows"], summary.get("intervals", {})
    method, label = s["method"], label or s["method"]
    where = (f"{summary.get('n_pairs', s.get('pairs'))} held-out pairs (seed {s.get('seed')}) of "
             f"{len(summary.get('gallery_people', []))} held-out people, judged by {s.get('encoder')}")
    rows = []
    for row_name, r in rows_in.items():
        row = {"method": row_name, "n": r.get("n")}
        for key, col, _ in EVAL_METRICS:
            low, high = (ints.get(row_name, {}).get(key) or [None, None])
            row.update({col: r.get(key), f"{col} low": low, f"{col} high": high})
        row.update({"ID top-5": r.get("id_top5"), "s / swap": r.get("seconds_per_swap")})
        rows.append(row)
    claims = []
    if method in rows_in and "target unchanged" in rows_in and method != "target unchanged":
        claims.append(results.claim(f"{label} moves identity towards the source (ID cos to source above the "
                                    "unchanged target's)", method, "ID cos to source", "higher", "target unchanged"))
    out = [{"name": name, "rows": rows, "claims": claims,
            "caption": f"dfs eval, {label}: {where}; rates as fractions",
            "uncertainty": "95 % percentile bootstrap over the pairs"}]
    ref, diffs = summary.get("compare"), summary.get("differences") or {}
    if ref and diffs:
        drows, dclaims = [], []
        for row_name, d in diffs.items():
            row = {"method": row_name}
            for key, col, _ in EVAL_METRICS:
                x = d.get(key) or {}
                row.update({f"Δ {col}": x.get("mean"), f"Δ {col} low": x.get("low"), f"Δ {col} high": x.get("high")})
            row["pairs"] = max((d.get(k) or {}).get("n") or 0 for k, *_ in EVAL_METRICS)
            drows.append(row)
        if method in diffs:
            for key, col, better in EVAL_METRICS:
                if (diffs[method].get(key) or {}).get("mean") is not None:
                    dclaims.append(results.claim(f"{label} beats the {ref} swap on {col}", method, f"Δ {col}", better,
                                                 0.0))
        out.append({"name": f"{name}_vs_{ref}" if ref != method else f"{name}_paired", "rows": drows, "claims": dclaims,
                    "caption": f"dfs eval, {label}: paired differences (row − {ref}) on the same pairs; {where}",
                    "uncertainty": "95 % percentile bootstrap over the pairs, paired"})
    return out


def eval_report_tables(stem: str, summary: dict) -> list[dict]:
    """:func:`eval_tables` of a report file, as finished tables with the report's mode and command."""
    quick, note = eval_mode(summary)
    variant = f"{summary['variant']}: " if summary.get("variant") else ""
    label = f"{summary['settings']['method']} ({variant}{note})"
    return [results.make_table(**t, notebook="dfs eval", quick=quick, seed=summary["settings"].get("seed"),
                               device=summary["settings"].get("device"), commit="not recorded", mode_note=note,
                               command=summary.get("command"))
            for t in eval_tables(summary, stem, label)]


# ---- the chapter ---------------------------------------------------------------------------------------------
@dataclass
class Chapter:
    tables: list[dict]
    verdicts: list[Verdict]
    missing: list[str]                      # notebooks that recorded no table
    reports: list[tuple[str, dict]] = field(default_factory=list)
    further: list[str] = field(default_factory=list)
    n_figures: int = 0                      # entries of figures/MANIFEST.json


def expected_notebooks(notebooks_dir: str | os.PathLike | None = None,
                       exclude: tuple[str, ...] = ("00_thesis_map", "09_results")) -> list[str]:
    """The notebooks whose tables the chapter expects: every ``NN_*.ipynb`` but the map and the chapter itself."""
    from .reproduce import NOTEBOOK_PATTERN

    folder = Path(notebooks_dir or Path(repo_root()) / "notebooks")
    return sorted(p.stem for p in folder.glob("*.ipynb") if NOTEBOOK_PATTERN.match(p.name) and p.stem not in exclude)


def further_work(tables: list[dict], verdicts: list[Verdict], missing: list[str], reports: list[tuple[str, dict]],
                 map_entries=thesis_map.ENTRIES) -> list[str]:
    """§2.4: what was not measured and why, computed from the chapter's inputs and the thesis map."""
    items = []
    if missing:
        items.append(f"No table was recorded by {', '.join(missing)}: run them (`dfs reproduce`) before this "
                     "notebook, or they do not record their measurements yet.")
    modes = {t.get("quick") for t in tables}
    if tables and False not in modes:
        items.append("No full-mode run: every number here comes from quick mode (small models, few steps, a CPU) "
                     "or from checkpoints whose mode is not recorded; the full presets need a GPU and have not been "
                     "run.")
    devices = {str(t.get("device")) for t in tables if t.get("device")}
    if devices and not any("cuda" in d for d in devices):
        items.append(f"No GPU run: the numbers were measured on {', '.join(sorted(devices))}.")
    reasons = {r["inception"]["reason"] for _, r in reports if not r.get("inception", {}).get("available", True)}
    for reason in sorted(reasons):
        items.append(f"FID/KID were not computed ({reason}); the eval tables' ID-feature FD is not FID.")
    encoders = {r["settings"].get("encoder") for _, r in reports}
    if len(encoders) == 1:
        items.append(f"Every face swap is judged by one identity network ({encoders.pop()}); a second, independent "
                     "face-recognition model was not run.")
    pairs = sorted({r.get("n_pairs") for _, r in reports if r.get("n_pairs")})
    people = sorted({len(r.get("gallery_people", [])) for _, r in reports})
    if reports:
        items.append(f"The swaps were evaluated on {', '.join(map(str, pairs))} pairs of "
                     f"{', '.join(map(str, people))} held-out people; a larger held-out set would narrow the "
                     "intervals.")
    open_claims = [v for v in verdicts if v.verdict == INCONCLUSIVE]
    if open_claims:
        items.append("Inconclusive at this sample size (more pairs or seeds needed): "
                     + "; ".join(f"{v.claim['claim']} ({v.table})" for v in open_claims) + ".")
    unjudged = [v for v in verdicts if v.verdict == NOT_JUDGED]
    if unjudged:
        items.append("Recorded without an interval, so not judged: "
                     + "; ".join(f"{v.claim['claim']} ({v.table})" for v in unjudged) + ".")
    for e in thesis_map.not_covered(map_entries):
        items.append(f"Thesis {e.label} (l.{e.line}) is {e.status} here: {e.note}.")
    return items


def build_chapter(figures_directory: str | os.PathLike | None = None, results_root: str | os.PathLike | None = None,
                  notebooks_dir: str | os.PathLike | None = None) -> Chapter:
    """Collect the recorded tables and the ``dfs eval`` reports, judge every claim, list the further work.

    Reports: those in ``results_root`` (default ``<repo>/results``: the runs kept with the repository) and those a
    notebook of this run wrote into ``<figures>/results`` (table names ``run_eval_*``, variant "this run")."""
    recorded = results.load_tables(Path(figures_directory) if figures_directory else None)
    if smoke_caps() is None:   # a smoke run's tables (dfs reproduce --smoke) are never results
        recorded = [t for t in recorded if not t.get("smoke")]
    reports = find_eval_reports(results_root) + find_eval_reports(
        results.results_dir(Path(figures_directory) if figures_directory else None), subfolders=False,
        prefix="run_", variant="this run")
    tables = recorded + [t for stem, r in reports for t in eval_report_tables(stem, r)]
    seen = {t.get("notebook") for t in recorded}
    missing = [nb for nb in expected_notebooks(notebooks_dir) if nb not in seen]
    verdicts = [judge(c, t) for t in tables for c in t.get("claims", [])]
    chapter = Chapter(tables, verdicts, missing, reports,
                      n_figures=len(figures.read_manifest(Path(figures_directory) if figures_directory else None)))
    chapter.further = further_work(tables, verdicts, missing, reports)
    return chapter


def verdicts_table(verdicts: list[Verdict]) -> dict:
    """The §2.3 verdicts as a table (for Markdown/LaTeX)."""
    rows = [{"claim": v.claim["claim"], "verdict": v.verdict, "evidence": v.evidence, "table": v.table,
             "mode": v.mode} for v in verdicts] or [{"claim": "—", "verdict": "—", "evidence": "no claims were "
                                                     "recorded", "table": "—", "mode": "—"}]
    return {"name": "verdicts", "caption": "Conclusions: one computed verdict per claim", "uncertainty": "",
            "columns": list(rows[0]), "rows": [list(r.values()) for r in rows], "notebook": "09_results",
            "quick": None, "seed": None, "commit": None, "mode_note": "each claim's mode is its table's"}


def render_markdown(ch: Chapter) -> str:
    """The chapter as Markdown: §2.2 tables, §2.3 verdicts, §2.4 further work."""
    counts = {k: sum(v.verdict == k for v in ch.verdicts)
              for k in (SUPPORTED, REFUTED, INCONCLUSIVE, NOT_JUDGED, NOT_MEASURED)}
    n_eval = sum(t.get("notebook") == "dfs eval" for t in ch.tables)
    intro = (f"{len(ch.tables)} tables: {len(ch.tables) - n_eval} recorded by the notebooks, {n_eval} from "
             f"{len(ch.reports)} `dfs eval` reports. Each caption says which notebook or command, mode (quick/full), "
             f"seed and commit the numbers came from. `figures/MANIFEST.json` lists {ch.n_figures} figures.")
    out = ["# 2.2 Experimental results", "", intro]
    if ch.missing:
        out += ["", f"Missing: no table from {', '.join(ch.missing)}."]
    for t in ch.tables:
        out += ["", f"### {t['name']}", "", results.to_markdown(t).rstrip()]
        if t.get("command"):
            out += ["", f"Command: `{t['command']}`"]
    out += ["", "# 2.3 Conclusions", "",
            ", ".join(f"{n} {k}" for k, n in counts.items() if n) + f" ({len(ch.verdicts)} claims). A verdict is "
            "*inconclusive* when the intervals overlap (or a difference's interval contains 0).", "",
            "| claim | verdict | evidence | table | mode |", "|---|---|---|---|---|"]
    out += [f"| {v.claim['claim']} | **{v.verdict}** | {v.evidence} | {v.table} | {v.mode} |".replace("\n", " ")
            for v in ch.verdicts]
    out += ["", "# 2.4 Further work", ""] + [f"- {item}" for item in ch.further]
    return "\n".join(out) + "\n"


def write_chapter(ch: Chapter, directory: str | os.PathLike | None = None) -> dict[str, Path]:
    """``<figures>/results.md`` and ``<figures>/results/tex/<name>.tex`` (one per table, plus ``verdicts.tex``)."""
    directory = Path(directory or figures_dir())
    tex_dir = results.results_dir(directory) / "tex"
    tex_dir.mkdir(parents=True, exist_ok=True)
    written = {"markdown": directory / "results.md"}
    figures._atomic_write_text(written["markdown"], render_markdown(ch))
    for t in ch.tables + [verdicts_table(ch.verdicts)]:
        path = tex_dir / f"{t['name']}.tex"
        figures._atomic_write_text(path, results.to_latex(t))
        written[t["name"]] = path
    return written


def plot_differences(reports: list[tuple[str, dict]]):
    """Each ``dfs eval`` method's paired difference to the comparison row on every metric, with its 95 % interval
    (one panel per metric; 0 = no difference). Returns the matplotlib figure."""
    import matplotlib.pyplot as plt

    runs = [(stem, r) for stem, r in reports if r.get("differences") and r["settings"]["method"] in r["differences"]]
    fig, axes = plt.subplots(1, len(EVAL_METRICS), figsize=(3.2 * len(EVAL_METRICS), 0.5 * max(len(runs), 1) + 1.6),
                             sharey=True, squeeze=False)
    labels = [textwrap.fill(f"{r['settings']['method']} · {r.get('variant') or eval_mode(r)[1]} · n = {r.get('n_pairs')}",
                            70) for _, r in runs]
    for ax, (key, col, better) in zip(axes[0], EVAL_METRICS):
        for i, (_, r) in enumerate(runs):
            d = r["differences"][r["settings"]["method"]].get(key) or {}
            if d.get("mean") is None:
                continue
            good = (d["low"] > 0) if better == "higher" else (d["high"] < 0)
            bad = (d["high"] < 0) if better == "higher" else (d["low"] > 0)
            colour = "tab:green" if good else "tab:red" if bad else "tab:gray"
            ax.errorbar(d["mean"], i, xerr=[[d["mean"] - d["low"]], [d["high"] - d["mean"]]], fmt="o", color=colour,
                        capsize=3)
        ax.axvline(0, color="k", lw=0.8, ls=":")
        ax.set_title(lbl("Δ {metric}\n(higher is better)" if better == "higher" else "Δ {metric}\n(lower is better)",
                         metric=lbl(col)), fontsize=9)
        ax.tick_params(labelsize=8)
        ax.locator_params(axis="x", nbins=4)
    axes[0, 0].set_yticks(range(len(runs)), labels, fontsize=8)
    axes[0, 0].invert_yaxis()
    if not runs:
        axes[0, 0].text(0.5, 0.5, lbl("no dfs eval report\nwith paired differences"), ha="center", va="center",
                        transform=axes[0, 0].transAxes)
    ref = runs[0][1].get("compare") if runs else lbl("the comparison row")
    fig.suptitle(lbl("Paired difference to the {ref} swap (mean, 95 % bootstrap interval; green: better, red: worse, "
                     "grey: inconclusive)", ref=ref), fontsize=10)
    fig.tight_layout()
    return fig
