"""The course kit: the student edition (stubs fail every check, the reference solutions pass every check), the
exercise notebooks' layout, headless sliders, and ``dfs book`` on a tiny executed notebook."""
import json
import re
from pathlib import Path

import matplotlib
import nbformat
import pytest

from dfs import cli
from dfs.exercises import EXERCISES
from dfs.exercises.student import (
    CHECK,
    SOLUTION,
    exercise_notebooks,
    grade,
    notebook_exercises,
    run_cells,
    stub_source,
    student_edition,
)
from dfs.reproduce import find_notebooks

matplotlib.use("Agg")
ROOT = Path(__file__).resolve().parent.parent
EX_NOTEBOOKS = exercise_notebooks(ROOT / "notebooks" / "exercises")


def test_exercise_notebooks_cover_every_exercise_and_stay_out_of_reproduce():
    named = [n for p in EX_NOTEBOOKS for n in notebook_exercises(nbformat.read(p, as_version=4))]
    assert sorted(named) == sorted(EXERCISES)
    assert not [p for p in find_notebooks(ROOT / "notebooks") if "exercises" in p.parts]
    assert not [p for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb") if "exercises" in p.parts]


@pytest.mark.parametrize("path", EX_NOTEBOOKS, ids=lambda p: p.stem)
def test_exercise_notebook_is_literate_and_clean(path):
    nb = nbformat.read(path, as_version=4)
    assert nb.cells[0].cell_type == "markdown" and "budget" in nb.cells[0].source.lower()
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    assert next(c for c in code if "parameters" in c.metadata.get("tags", [])).source.startswith("QUICK = True")
    assert "setup(" in code[1].source
    assert max(len(c.source.splitlines()) for c in code) <= 40
    for i, cell in enumerate(nb.cells):           # every solution cell is followed by its check cell
        if cell.cell_type == "code" and SOLUTION in cell.metadata.get("tags", []):
            nxt = nb.cells[i + 1]
            assert CHECK in nxt.metadata.get("tags", []), f"cell {i} of {path.name}: a solution without a check"
            name = re.search(r"def (\w+)", cell.source).group(1)
            assert f'check("{name}", {name})' in nxt.source


def test_stub_keeps_signature_and_docstring_and_drops_the_body():
    src = 'import math\n\ndef f(a, b=2,\n      c=3):\n    """Doc."""\n    return a + b  # secret\n\nX = 1\n'
    stub = stub_source(src)
    assert "def f(a, b=2,\n      c=3):" in stub and '"""Doc."""' in stub and "secret" not in stub
    assert 'raise NotImplementedError("exercise: implement f")' in stub and "import math" in stub and "X = 1" in stub
    ns = {}
    exec(stub, ns)  # noqa: S102 - the stub is ours
    with pytest.raises(NotImplementedError, match="exercise: implement f"):
        ns["f"](1)
    with pytest.raises(ValueError, match="several lines"):
        stub_source("def g(x): return x\n")


def test_student_edition_fails_every_check_and_passes_with_the_solutions_filled_in(tmp_path, capsys):
    assert cli.main(["exercises", "--out", str(tmp_path / "student")]) == 0
    written = sorted((tmp_path / "student").glob("*.ipynb"))
    assert [p.name for p in written] == [p.name for p in EX_NOTEBOOKS]
    for student, teacher in zip(written, EX_NOTEBOOKS):
        snb, tnb = nbformat.read(student, as_version=4), nbformat.read(teacher, as_version=4)
        assert not any(SOLUTION in c.metadata.get("tags", []) for c in snb.cells)
        assert "Answer (teacher's edition)" not in "".join(c.source for c in snb.cells)
        results = grade(student)                       # stubs left: every check fails with its message
        assert results and all(not r.passed and "not implemented yet" in r.message for r in results)
        filled = nbformat.from_dict(snb)               # stubs filled in with the reference solutions
        sols = iter(c.source for c in tnb.cells if c.cell_type == "code" and SOLUTION in c.metadata.get("tags", []))
        for cell in filled.cells:
            if "exercise" in cell.metadata.get("tags", []) and cell.cell_type == "code":
                cell.source = next(sols)
        nbformat.write(filled, tmp_path / student.name)
        results = grade(tmp_path / student.name)
        assert all(r.passed for r in results), [str(r) for r in results if not r.passed]
    assert cli.main(["exercises", "--grade", str(written[0])]) == 1
    assert "not implemented yet" in capsys.readouterr().out
    assert cli.main(["exercises"]) == 2


def test_check_cells_of_the_student_edition_raise_with_their_message(tmp_path):
    student_edition(tmp_path)
    nb = nbformat.read(tmp_path / "04_latent.ipynb", as_version=4)
    ns = run_cells(nb)
    checks = [c for c in nb.cells if CHECK in c.metadata.get("tags", [])]
    for cell in checks:
        with pytest.raises(AssertionError, match="not implemented yet"):
            exec(cell.source, ns)  # noqa: S102 - the student edition's check cell


def test_slider_figure_is_static_when_headless():
    from dfs.widgets import is_headless, slider_figure
    calls = []

    def draw(t, schedule):
        calls.append((t, schedule))
        import matplotlib.pyplot as plt
        return plt.figure()

    assert is_headless()
    fig = slider_figure(draw, t=(0, 999, 100), schedule=["linear", "cosine"])
    assert calls == [(100, "linear")] and hasattr(fig, "savefig")
    with pytest.raises(ValueError, match="low ≤ default ≤ high"):
        slider_figure(draw, t=(0, 10, 20))
    with pytest.raises(ValueError, match="expected"):
        slider_figure(draw, t="fast")
    with pytest.raises(TypeError, match="must return a matplotlib figure"):
        slider_figure(lambda t: None, t=(0, 1, 0))


def test_slider_figure_builds_the_controls_when_live():
    import ipywidgets as W
    import matplotlib.pyplot as plt

    from dfs.widgets import slider_figure
    box = slider_figure(lambda t, eta, s: plt.figure(), static=False, t=(0, 999, 100), eta=(0.0, 1.0, 0.5),
                        s=["a", "b"])
    controls = box.children[0].children
    assert [type(c) for c in controls] == [W.IntSlider, W.FloatSlider, W.Dropdown]
    assert [c.value for c in controls] == [100, 0.5, "a"] and (controls[0].min, controls[0].max) == (0, 999)


@pytest.mark.slow
def test_slider_renders_a_png_in_a_headless_kernel(tmp_path):
    from dfs.reproduce import run_notebook
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("QUICK = True", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("import matplotlib.pyplot as plt\nfrom dfs.widgets import slider_figure\n"
                                  "def draw(t):\n    fig, ax = plt.subplots()\n    ax.plot([0, t])\n    return fig\n"
                                  "slider_figure(draw, t=(0, 10, 3));")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "01_tiny.ipynb")
    run = run_notebook(tmp_path / "01_tiny.ipynb", tmp_path / "out", quick=True)
    outputs = nbformat.read(run.executed, as_version=4).cells[-1].outputs
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert any("static figure at t = 3" in o.get("text", "") for o in outputs)


def _tiny_build(tmp_path):
    """A build folder with one executed notebook (as papermill leaves it) and a figures folder with its figure."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# 01 — A tiny notebook\n\nSome $x_t$."),
                                         nbformat.v4.new_code_cell("print(1 + 1)")])
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="2\n")]
    nb.metadata["papermill"] = {"duration": 3.2, "end_time": "2026-11-30T12:00:00.000000"}
    (tmp_path / "build" / "notebooks").mkdir(parents=True)
    nbformat.write(nb, tmp_path / "build" / "notebooks" / "01_tiny.ipynb")
    figs = tmp_path / "figures"
    figs.mkdir()
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    fig.savefig(figs / "fig_tiny.png")
    plt.close(fig)
    import plotly.graph_objects as go
    go.Figure(go.Scatter(x=[0, 1], y=[1, 0])).write_html(figs / "fig_plotly.html", include_plotlyjs="cdn")
    entry = {"notebook": "01_tiny", "mode": "quick", "device": "cpu", "seed": 0, "commit": "abc"}
    (figs / "MANIFEST.json").write_text(json.dumps({"fig_tiny": {"files": ["fig_tiny.png"], **entry},
                                                    "fig_plotly": {"files": ["fig_plotly.html"], **entry}}))
    (figs / "results.md").write_text("# Results\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")
    return figs


def test_book_builds_pages_with_figures_and_no_broken_links(tmp_path):
    from dfs.book import build_book
    figs = _tiny_build(tmp_path)
    done = tmp_path / "build" / "notebooks" / "exercises"      # executed copies present: used, not re-run
    done.mkdir()
    for p in EX_NOTEBOOKS:
        (done / p.name).write_bytes(p.read_bytes())
    index = build_book(tmp_path / "build", tmp_path / "site", figures=figs, exercises=True, log=lambda *_: None)
    site = index.parent
    page = (site / "notebooks" / "01_tiny.html").read_text()
    assert "A tiny notebook" in page and "Figures saved by this run (2)" in page
    assert (site / "figures" / "fig_tiny.png").stat().st_size > 0
    plotly_page = (site / "figures" / "fig_plotly.html").read_text()
    assert "cdn.plot.ly" not in plotly_page and 'src="plotly.min.js"' in plotly_page      # readable offline
    assert (site / "figures" / "plotly.min.js").stat().st_size > 1_000_000
    assert sorted(p.name for p in (site / "exercises").iterdir()) == [p.stem + ".html" for p in EX_NOTEBOOKS]
    assert "<table>" in (site / "results.html").read_text()          # figures/results.md rendered
    assert "appears here once figures/thesis_map.md exists" in (site / "thesis_map.html").read_text()
    assert "Teacher" in (site / "teaching.html").read_text()
    for html_file in site.rglob("*.html"):                          # every local link and image resolves
        text = html_file.read_text()
        loaded = re.findall(r'src="([^"]+)"', text) + re.findall(r'<link[^>]*href="([^"]+)"', text)
        assert not [u for u in loaded if u.startswith(("http:", "https:", "//"))], f"{html_file.name} needs the network"
        for ref in loaded + re.findall(r'<a[^>]*href="([^"#:]+)"', text):
            if not ref.startswith("data:"):
                assert (html_file.parent / ref.split("?")[0]).exists(), f"{html_file.name}: broken {ref}"
    assert "01_tiny.html" in index.read_text() and "3 s" in index.read_text()


def test_book_without_a_build_says_what_to_run(tmp_path, capsys):
    assert cli.main(["book", "--build", str(tmp_path / "nothing"), "--no-exercises"]) == 2
    assert "dfs reproduce" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("path", EX_NOTEBOOKS, ids=lambda p: p.stem)
def test_teacher_edition_runs_in_a_kernel_and_every_check_passes(path, tmp_path, monkeypatch):
    """The teacher's edition under papermill (as `dfs book` runs it): no error, a ✓ per exercise, sliders as PNGs."""
    from dfs.reproduce import run_notebook
    monkeypatch.setenv("DFS_FIGURES", str(tmp_path / "figures"))
    run = run_notebook(path, tmp_path / "out", quick=True)
    nb = nbformat.read(run.executed, as_version=4)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    names = notebook_exercises(nbformat.read(path, as_version=4))
    assert all(f"✓ {n}:" in text for n in names)
    assert f"{len(names)} of {len(names)} exercises pass in this run" in text
    sliders = [c for c in nb.cells if c.cell_type == "code" and "slider_figure(" in c.source]
    assert all(any("image/png" in o.get("data", {}) for o in c.outputs) for c in sliders)
    print(f"{path.stem}: {run.seconds:.1f} s")


# ---------------------------------------------------------------------------------------------- the book in a browser

def _chromium():
    """Headless Chromium: $DFS_CHROMIUM, else chromium/chromium-browser/google-chrome on PATH (Debian: apt-get install
    chromium)."""
    import os
    import shutil
    exe = os.environ.get("DFS_CHROMIUM")
    if exe:
        return exe
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
                 if shutil.which(n)), None)


class _DevTools:
    """The few Chrome DevTools Protocol calls the test needs, over one page's websocket; events are kept."""

    def __init__(self, exe, profile):
        import subprocess
        import time
        import urllib.request

        import websocket
        self.proc = subprocess.Popen([exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                                      "--no-first-run", "--remote-debugging-port=0", "--remote-allow-origins=*",
                                      f"--user-data-dir={profile}", "--window-size=1200,900", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file, deadline = profile / "DevToolsActivePort", time.monotonic() + 60
        while not (port_file.is_file() and port_file.read_text().strip()):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError(f"{exe} did not start its DevTools server")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        pages = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30))
        url = next(p["webSocketDebuggerUrl"] for p in pages if p["type"] == "page")
        self.ws = websocket.create_connection(url, timeout=60, suppress_origin=True)
        self.next_id, self.events, self.urls = 0, [], {}

    def call(self, method, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                assert "error" not in msg, f"{method}: {msg['error']}"
                return msg.get("result", {})
            self.events.append(msg)

    def wait_for(self, event):
        while not any(e.get("method") == event for e in self.events):
            self.events.append(json.loads(self.ws.recv()))

    def evaluate(self, expression):
        out = self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        assert "exceptionDetails" not in out, out["exceptionDetails"]
        return out["result"].get("value")

    def errors(self, allowed=()):
        """Console errors, exceptions and failed loads, except those whose text contains one of ``allowed``."""
        bad = []
        for e in self.events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.exceptionThrown":
                bad.append(p["exceptionDetails"].get("text"))
            elif m == "Runtime.consoleAPICalled" and p.get("type") == "error":
                bad.append(str(p.get("args")))
            elif m == "Log.entryAdded" and p["entry"].get("level") == "error":
                bad.append(f"{p['entry'].get('text')} {p['entry'].get('url', '')}")
            elif m == "Network.loadingFailed":
                bad.append(f"failed to load: {p.get('errorText')} {self.urls.get(p.get('requestId'), '')}")
            elif m == "Network.requestWillBeSent":
                self.urls[p["requestId"]] = p["request"]["url"]
        return [b for b in bad if not any(a in b for a in allowed)]

    def close(self):
        if getattr(self, "ws", None) is not None:
            self.ws.close()
        self.proc.kill()
        self.proc.wait(timeout=30)


PAGE_REPORT = """JSON.stringify({
  broken: [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src),
  links: [...document.querySelectorAll('a[href]')].map(a => a.href),
  external: [...document.querySelectorAll('script[src], link[href], img[src]')].map(e => e.src || e.href)
            .filter(u => !u.startsWith(location.origin) && !u.startsWith('data:')),
})"""
# MathJax 2.7's own font probes, which cannot succeed with the fonts jupyter-server-mathjax ships (equations render):
MATHJAX_FONT_PROBES = ("Access to font at 'about:blank'", "about:blank", "/mathjax/fonts/HTML-CSS/TeX/")
MATH_RENDERED = """new Promise(done => window.MathJax ? MathJax.Hub.Queue(() => done(
  document.querySelectorAll('.MathJax, .MathJax_Display').length)) : done(-1))"""


def test_book_in_headless_chromium_has_no_broken_image_link_or_console_error(tmp_path):
    """The book served on 127.0.0.1 and opened in headless Chromium: index, a notebook page and an exercise page,
    each screenshot; no broken image or link, no console error, nothing fetched from outside (offline readers),
    and MathJax (shipped in the site) renders the equations."""
    import base64
    import functools
    import http.server
    import threading
    import urllib.request

    exe = _chromium()
    if exe is None:
        pytest.skip("headless Chromium not found: apt-get install chromium (Debian), or set DFS_CHROMIUM")
    from dfs.book import build_book
    figs = _tiny_build(tmp_path)
    done = tmp_path / "build" / "notebooks" / "exercises"
    done.mkdir()
    for p in EX_NOTEBOOKS:
        (done / p.name).write_bytes(p.read_bytes())
    site = build_book(tmp_path / "build", tmp_path / "site", figures=figs, log=lambda *_: None).parent

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    origin = f"http://127.0.0.1:{server.server_address[1]}"
    browser = _DevTools(exe, tmp_path / "profile")
    try:
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.call(f"{domain}.enable")
        for page in ("index.html", "notebooks/01_tiny.html", "exercises/01_forward_reverse.html"):
            browser.events.clear()
            browser.call("Page.navigate", url=f"{origin}/{page}")
            browser.wait_for("Page.loadEventFired")
            report = json.loads(browser.evaluate(PAGE_REPORT))
            shot = base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"])
            (tmp_path / (page.replace("/", "_") + ".png")).write_bytes(shot)
            assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 10_000, f"{page}: blank screenshot"
            assert not report["broken"], f"{page}: broken images {report['broken']}"
            assert not report["external"], f"{page}: fetched from outside {report['external']}"
            for link in {u.split("#")[0] for u in report["links"] if u.startswith(origin)}:
                assert urllib.request.urlopen(link, timeout=30).status == 200, f"{page}: broken link {link}"
            if page.startswith("exercises/"):
                assert browser.evaluate(MATH_RENDERED) > 10, f"{page}: MathJax rendered no equation"
            errors = browser.errors(allowed=MATHJAX_FONT_PROBES)
            assert not errors, f"{page}: console errors {errors}"
    finally:
        browser.close()
        server.shutdown()


def test_the_guidance_slider_samples_p_x_at_0_and_p_x_given_y_at_1():
    """The toy behind notebook 04's guidance slider: exact ε's, so s = 0 gives the class its prior share and s = 1
    puts (nearly) every sample in the class."""
    import torch

    from dfs import toy
    from dfs.exercises.figures import guided_samples
    gmm = toy.default_gmm()
    shares = {s: float((gmm.classify(guided_samples(s, "top", n=400, steps=25)) == 2).double().mean()) for s in (0.0, 1.0)}
    prior = float(gmm.weights[2])
    assert abs(shares[0.0] - prior) < 4 * (prior * (1 - prior) / 400) ** 0.5, shares
    assert shares[1.0] > 0.97, shares
    with pytest.raises(ValueError, match="unknown class"):
        guided_samples(1.0, "bottom")
    assert torch.is_tensor(guided_samples(2.0, "left", n=8, steps=5))
