"""``dfs book``: a static HTML site of the executed notebooks of the last ``dfs reproduce``, with their figures.

Plotly figures keep their interactive HTML, with plotly.js copied next to them, and MathJax comes from the
``jupyter-server-mathjax`` package, copied into the site: the book reads offline (no CDN). The pages are made by
nbconvert's ``HTMLExporter`` (already a dependency through papermill/jupyter, and it renders
exactly what was executed; Jupyter Book or mkdocs-jupyter would add a build system for the same result).
``dfs reproduce`` runs notebooks with matplotlib on Agg, so their figures are not inline outputs: each page gets the
figures that notebook saved through :func:`dfs.figures.save` (``figures/MANIFEST.json``), copied into the site.
The index also links the exercise notebooks (executed copies if ``<build>/notebooks/exercises/`` has them, executed
now otherwise, seconds each), the teacher's guide (``notebooks/exercises/TEACHERS_GUIDE.md``), and the thesis map and results chapter
(``figures/thesis_map.md``, ``figures/results.md``) when those exist, else a placeholder that says how to make them.
"""
from __future__ import annotations

import html
import importlib.util
import json
import re
import shutil
from pathlib import Path

import mistune
import nbformat
from nbconvert import HTMLExporter
from plotly.offline import get_plotlyjs

from .exercises.student import exercise_notebooks
from .paths import figures_dir, repo_root
from .reproduce import NOTEBOOK_PATTERN, run_notebook

PLOTLY_CDN = re.compile(r'<script[^>]*src="https://cdn\.plot\.ly/[^"]*"[^>]*></script>')
REQUIRE_JS = re.compile(r'<script[^>]*src="https://cdnjs\.cloudflare\.com/ajax/libs/require\.js/[^"]*"[^>]*>\s*</script>')
MATHJAX_CONFIG = "TeX-AMS-MML_HTMLorMML-full,Safe"
# The package ships MathJax 2.7 with the STIX-Web fonts only (no TeX fonts): configure HTML-CSS for them, as
# Jupyter's classic notebook does. (MathJax's font probes still log a blocked about:blank font and a missing TeX
# font for \mathcal in Chromium; the equations render.)
MATHJAX_FONTS = ('<script type="text/x-mathjax-config">MathJax.Hub.Config({"HTML-CSS": {availableFonts: [], '
                 'preferredFont: null, webFont: "STIX-Web", imageFont: null}});</script>')


def local_mathjax() -> Path | None:
    """MathJax 2.7's files from the ``jupyter-server-mathjax`` package (so equations render offline), if installed."""
    spec = importlib.util.find_spec("jupyter_server_mathjax")
    if spec is None or not spec.submodule_search_locations:
        return None
    static = Path(next(iter(spec.submodule_search_locations))) / "static"
    return static if (static / "MathJax.js").is_file() else None

CSS = """body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;line-height:1.5}
nav.dfs{font-size:.9rem;border-bottom:1px solid #ccc;margin-bottom:1rem;padding:.4rem 0}
nav.dfs a{margin-right:1rem} figure{margin:1rem 0} figure img{max-width:100%} table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:.2rem .5rem} code{background:#f4f4f4}"""


def _title(nb, fallback: str) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            m = re.search(r"^#\s+(.+)$", cell.source, re.MULTILINE)
            if m:
                return m.group(1).strip()
    return fallback


def _markdown_html(text: str) -> str:
    return mistune.html(text)


FAVICON = '<link rel="icon" href="data:,">'   # no favicon.ico request, so no 404 in the reader's console


def _page(title: str, body: str, nav: str) -> str:
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">{FAVICON}<title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body>{nav}<main>{body}</main></body></html>\n")


def _nav(depth: int = 0) -> str:
    up = "../" * depth
    links = [("index.html", "Index"), ("teaching.html", "Teacher's guide"), ("thesis_map.html", "Thesis map"),
             ("results.html", "Results chapter")]
    return ('<nav class="dfs" style="font: 0.9rem system-ui, sans-serif; padding: 0.5rem 1rem; '
            'border-bottom: 1px solid #ccc">' + " · ".join(f'<a href="{up}{h}">{t}</a>' for h, t in links) + "</nav>")


def _copy_figure(src: Path, dst: Path) -> None:
    """Copy a saved figure; a plotly page's CDN script becomes a local ``plotly.min.js`` (readers may be offline)."""
    if src.suffix != ".html":
        shutil.copy2(src, dst)
        return
    text = src.read_text(encoding="utf-8")
    if PLOTLY_CDN.search(text):
        local = dst.parent / "plotly.min.js"
        if not local.is_file():
            local.write_text(get_plotlyjs(), encoding="utf-8")
        text = PLOTLY_CDN.sub('<script charset="utf-8" src="plotly.min.js"></script>', text)
    dst.write_text(text, encoding="utf-8")


def _figures_section(stem: str, manifest: dict, fig_dir: Path, site: Path, depth: int) -> str:
    mine = {k: v for k, v in manifest.items() if v.get("notebook") == stem}
    if not mine:
        return ""
    (site / "figures").mkdir(exist_ok=True)
    parts = [f'<section class="dfs-figures"><h2>Figures saved by this run ({len(mine)})</h2>']
    up = "../" * depth
    for name, entry in sorted(mine.items()):
        files = [f for f in entry.get("files", []) if (fig_dir / f).is_file()]
        for f in files:
            _copy_figure(fig_dir / f, site / "figures" / f)
        caption = html.escape(f"{name} · {entry.get('mode', '?')} mode · {entry.get('device', '?')} · seed "
                              f"{entry.get('seed')} · commit {str(entry.get('commit', '?'))[:10]}")
        pngs = [f for f in files if f.endswith(".png")]
        htmls = [f for f in files if f.endswith(".html")]
        img = f'<img src="{up}figures/{pngs[0]}" alt="{html.escape(name)}">' if pngs else ""
        link = "".join(f' <a href="{up}figures/{h}">interactive version</a>' for h in htmls)
        parts.append(f"<figure>{img}<figcaption>{caption}{link}</figcaption></figure>")
    parts.append("</section>")
    return "".join(parts)


def _notebook_page(path: Path, site_path: Path, manifest: dict, fig_dir: Path, site: Path, depth: int) -> str:
    nb = nbformat.read(path, as_version=4)
    options = {"template_name": "lab"}
    if (site / "mathjax" / "MathJax.js").is_file():
        options["mathjax_url"] = "../" * depth + f"mathjax/MathJax.js?config={MATHJAX_CONFIG}"
    body, _ = HTMLExporter(**options).from_notebook_node(nb)
    if "mathjax_url" in options:
        body = body.replace(f'<script src="{options["mathjax_url"]}">', MATHJAX_FONTS + f'<script src="{options["mathjax_url"]}">', 1)
    body = REQUIRE_JS.sub("", body)         # the pages hold no widgets or inline plotly: require.js is not needed
    extra = _figures_section(path.stem, manifest, fig_dir, site, depth)
    body = re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + _nav(depth), body, count=1)
    body = body.replace("</head>", FAVICON + "</head>", 1)
    body = body.replace("</body>", extra + "</body>", 1)
    site_path.parent.mkdir(parents=True, exist_ok=True)
    site_path.write_text(body, encoding="utf-8")
    return _title(nb, path.stem)


def _executed_exercises(build: Path, log) -> list[Path]:
    """Executed copies of the exercise notebooks: from ``<build>/notebooks/exercises`` or executed now."""
    out = build / "notebooks" / "exercises"
    done = []
    for nb in exercise_notebooks():
        executed = out / nb.name
        if not executed.is_file():
            run = run_notebook(nb, out, quick=True)
            log(f"  executed {nb.name} in {run.seconds:.1f} s")
        done.append(executed)
    return done


def _md_page(site: Path, name: str, title: str, source: Path | None, placeholder: str) -> None:
    body = _markdown_html(source.read_text(encoding="utf-8")) if source is not None and source.is_file() else \
        f"<h1>{html.escape(title)}</h1><p><em>{placeholder}</em></p>"
    (site / name).write_text(_page(title, body, _nav()), encoding="utf-8")


def build_book(build: str | Path = "build", out: str | Path | None = None, figures: str | Path | None = None,
               exercises: bool = True, log=print) -> Path:
    """Build the site into ``out`` (default ``<build>/book``) from ``<build>/notebooks/NN_*.ipynb``; returns index.html."""
    build = Path(build)
    nb_dir = build / "notebooks"
    notebooks = sorted(p for p in nb_dir.glob("*.ipynb") if NOTEBOOK_PATTERN.match(p.name)) if nb_dir.is_dir() else []
    if not notebooks:
        raise FileNotFoundError(f"no executed notebooks in {nb_dir}: run `dfs reproduce --quick` (or --out {build}) first")
    site = Path(out) if out is not None else build / "book"
    site.mkdir(parents=True, exist_ok=True)
    mathjax = local_mathjax()
    if mathjax is not None:
        shutil.copytree(mathjax, site / "mathjax", dirs_exist_ok=True)
    else:
        log("book: jupyter-server-mathjax is not installed, so equations load MathJax from its CDN (online only)")
    fig_dir = Path(figures) if figures is not None else figures_dir()
    manifest_path = fig_dir / "MANIFEST.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    rows = []
    for path in notebooks:
        meta = nbformat.read(path, as_version=4).metadata.get("papermill", {})
        title = _notebook_page(path, site / "notebooks" / (path.stem + ".html"), manifest, fig_dir, site, 1)
        seconds = meta.get("duration")
        rows.append((f"notebooks/{path.stem}.html", title, f"{seconds:.0f} s" if seconds else "", meta.get("end_time", "")[:19]))
    ex_rows = []
    if exercises:
        for path in _executed_exercises(build, log):
            title = _notebook_page(path, site / "exercises" / (path.stem + ".html"), {}, fig_dir, site, 1)
            ex_rows.append((f"exercises/{path.stem}.html", title))
    root = repo_root()
    _md_page(site, "teaching.html", "Teacher's guide", root / "notebooks" / "exercises" / "TEACHERS_GUIDE.md",
             "notebooks/exercises/TEACHERS_GUIDE.md is missing.")
    _md_page(site, "thesis_map.html", "Thesis map", fig_dir / "thesis_map.md",
             "The thesis map (which notebook, figure and table backs which section of the thesis) appears here once "
             "figures/thesis_map.md exists.")
    _md_page(site, "results.html", "Results chapter", fig_dir / "results.md",
             "The results chapter appears here once figures/results.md exists (it is assembled from the tables the "
             "notebooks record with dfs.results.record; run `dfs reproduce`).")
    table = "".join(f'<tr><td><a href="{h}">{html.escape(t)}</a></td><td>{s}</td><td>{e}</td></tr>' for h, t, s, e in rows)
    ex_list = "".join(f'<li><a href="{h}">{html.escape(t)}</a></li>' for h, t in ex_rows)
    body = (f"<h1>Face swap with generative models — the notebooks</h1>"
            f"<p>Executed copies from <code>{html.escape(str(nb_dir))}</code>, with the figures each run saved.</p>"
            f"<table><tr><th>notebook</th><th>run time</th><th>finished (UTC)</th></tr>{table}</table>"
            + (f"<h2>Exercises (teacher's edition, with solutions)</h2><ul>{ex_list}</ul>" if ex_rows else "")
            + '<h2>For teachers and readers</h2><ul><li><a href="teaching.html">Teacher\'s guide</a></li>'
              '<li><a href="thesis_map.html">Thesis map</a></li><li><a href="results.html">Results chapter</a></li></ul>')
    index = site / "index.html"
    index.write_text(_page("dfs — the book", body, _nav()), encoding="utf-8")
    log(f"book: {len(rows)} notebook(s), {len(ex_rows)} exercise notebook(s) -> {index}")
    return index
