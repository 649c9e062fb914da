"""Figure text in English by default and in Russian under DFS_LANG=ru (dfs.labels): the switch, the catalogue, the
drawing code's coverage, and real figures of several modules read back from their Axes."""
import ast
import re
import string
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nbformat  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from dfs import figures, gan_figures, gan_study, labels, notebook, results_chapter, thesis_map  # noqa: E402
from dfs.exercises import figures as EF  # noqa: E402
from dfs.labels import RUSSIAN, MissingTranslation, lbl  # noqa: E402
from dfs.swap import faceshifter_figures as FF  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CYRILLIC = re.compile("[А-Яа-яЁё]")
MATH = re.compile(r"\$[^$]*\$")
NUMBER = re.compile(r"\d+(?:\.\d+)?")


@pytest.fixture
def russian(monkeypatch):
    monkeypatch.setenv("DFS_LANG", "ru")


# ---- the switch -------------------------------------------------------------------------------------------------
def test_language_is_read_at_call_time(monkeypatch):
    monkeypatch.delenv("DFS_LANG", raising=False)
    assert labels.language() == "en" and lbl("step {step}", step=500) == "step 500"
    for value in ("", "en", " EN "):
        monkeypatch.setenv("DFS_LANG", value)
        assert lbl("step {step}", step=500) == "step 500"
    for value in ("ru", " RU"):
        monkeypatch.setenv("DFS_LANG", value)
        assert lbl("step {step}", step=500) == "шаг 500"
    monkeypatch.delenv("DFS_LANG")
    assert lbl("generator step") == "generator step"


@pytest.mark.parametrize("bad", ["de", "russian", "ru_RU"])
def test_unknown_language_is_a_clear_error_already_at_notebook_setup(monkeypatch, bad):
    monkeypatch.setenv("DFS_LANG", bad)
    with pytest.raises(ValueError, match=f"DFS_LANG='{bad}' is not a figure language.*DFS_LANG=ru"):
        lbl("step")
    with pytest.raises(ValueError, match="DFS_LANG"):
        notebook.setup("00_test", quick=True)


def test_the_manifest_records_each_figures_language(tmp_path, monkeypatch):
    monkeypatch.delenv("DFS_LANG", raising=False)
    figures.save(plt.figure(), "en_figure", directory=tmp_path)
    monkeypatch.setenv("DFS_LANG", "ru")
    figures.save(plt.figure(), "ru_figure", directory=tmp_path)
    plt.close("all")
    manifest = figures.read_manifest(tmp_path)
    assert manifest["en_figure"]["language"] == "en" and manifest["ru_figure"]["language"] == "ru"


def test_missing_translation_warns_and_draws_english(russian):
    with pytest.warns(MissingTranslation, match=r"'no such label \{n\}'.*dfs/labels.py"):
        assert lbl("no such label {n}", n=3) == "no such label 3"


# ---- the catalogue ----------------------------------------------------------------------------------------------
def fields(template: str) -> list:
    return sorted((name, spec) for _, name, spec, _ in string.Formatter().parse(template) if name is not None)


def test_every_key_has_a_russian_translation_with_the_same_numbers_maths_and_fields():
    for en, ru in RUSSIAN.items():
        assert ru != en and CYRILLIC.search(ru), f"{en!r} -> {ru!r}: not a Russian translation"
        assert not CYRILLIC.search(en), f"key {en!r} is not English"
        assert fields(ru) == fields(en), f"{en!r}: format fields {fields(en)} but the Russian has {fields(ru)}"
        assert sorted(MATH.findall(ru)) == sorted(MATH.findall(en)), f"{en!r}: the Russian changes the maths"
        assert sorted(NUMBER.findall(ru)) == sorted(NUMBER.findall(en)), f"{en!r}: the Russian changes a number"


def test_dfs_names_drawn_through_lbl_are_in_the_catalogue():
    """Texts that the drawing code passes to lbl() as variables, not literals (so the source scan cannot see them)."""
    dynamic = {*gan_study.TITLES.values(), *thesis_map.STATUSES, *thesis_map.KINDS,
               *(col for _, col, _ in results_chapter.EVAL_METRICS),
               "linear", "cosine",                                         # schedule names (notebooks 01, 03, ex. 01)
               "pixel", "latent",                                          # notebook 04's two models
               "source", "target", "classical", "source pasted"}           # notebook 05's swap columns
    assert dynamic - set(RUSSIAN) == set()


def test_every_catalogue_text_renders_in_dejavu_without_missing_glyphs(russian):
    fig, ax = plt.subplots()
    for k, en in enumerate(RUSSIAN):
        values = {name: 1 for name, _ in fields(en)}
        ax.text(0, k, lbl(en, **values))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig.canvas.draw()
    plt.close(fig)
    assert [str(w.message) for w in caught if "missing from font" in str(w.message)] == []


def test_the_glyph_check_catches_a_font_without_cyrillic():
    """The check above is not vacuous: Computer Modern (shipped with matplotlib) has no Cyrillic."""
    with matplotlib.rc_context({"font.family": "cmr10"}), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig = plt.figure()
        fig.text(0.5, 0.5, "шаг")
        fig.canvas.draw()
        plt.close(fig)
    assert any("missing from font" in str(w.message) for w in caught)


# ---- the drawing code's coverage --------------------------------------------------------------------------------
def sources():
    """(where, Python source) of every dfs module and every notebook code cell (IPython magics dropped)."""
    for path in sorted((ROOT / "dfs").rglob("*.py")):
        yield str(path.relative_to(ROOT)), path.read_text()
    for path in sorted((ROOT / "notebooks").rglob("*.ipynb")):
        for i, cell in enumerate(nbformat.read(path, as_version=4).cells):
            if cell.cell_type == "code":
                code = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))
                yield f"{path.relative_to(ROOT)}[{i}]", code


def literal_texts(node) -> list:
    """The literal strings an lbl() argument can be: a constant, or either branch of `a if c else b`."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.IfExp):
        return literal_texts(node.body) + literal_texts(node.orelse)
    return []


def lbl_calls():
    for where, code in sources():
        for node in ast.walk(ast.parse(code)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "lbl":
                yield where, node


def test_every_literal_passed_to_lbl_is_in_the_catalogue():
    calls = list(lbl_calls())
    drawing = {where.split("[")[0] for where, _ in calls}
    assert {"dfs/gan_figures.py", "dfs/exercises/figures.py", "dfs/thesis_map.py", "dfs/results_chapter.py",
            "dfs/swap/faceshifter_figures.py", "notebooks/02_toy_2d_diffusion.ipynb",
            "notebooks/08_faceshifter.ipynb"} <= drawing, "the scan found no lbl() calls where figures are drawn"
    missing = [(where, text) for where, node in calls for text in literal_texts(node.args[0]) if text not in RUSSIAN]
    assert missing == []


PLOT_METHODS = {"plot", "semilogy", "loglog", "hist", "scatter", "axhline", "axvline", "axhspan", "errorbar", "step",
                "quiver", "fill_between", "bar", "barh"}
TEXT_METHODS = {"set_title", "set_xlabel", "set_ylabel", "suptitle", "text", "annotate"}
TEXT_KEYWORDS = {"title", "xlabel", "ylabel", "legend_title", "xaxis_title", "yaxis_title"}
WORD = re.compile(r"\b[a-z]{3,}\b")


def bare_words(node) -> str:
    """The English words of a literal or f-string argument outside $maths$ and outside its {fields}; '' else."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        text = node.value
    elif isinstance(node, ast.JoinedStr):
        text = "".join(v.value for v in node.values if isinstance(v, ast.Constant))
    elif isinstance(node, ast.BinOp):
        return f"{bare_words(node.left)} {bare_words(node.right)}".strip()
    else:
        return ""
    return " ".join(WORD.findall(MATH.sub(" ", text)))


def test_no_figure_text_with_english_words_bypasses_lbl():
    """Titles, axis labels, notes and legend entries written as literals straight into matplotlib/plotly calls."""
    bypass = []
    for where, code in sources():
        for node in ast.walk(ast.parse(code)):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            method = node.func.attr
            args = ([node.args[0]] if method in TEXT_METHODS and node.args and method != "text" else
                    [node.args[2]] if method == "text" and len(node.args) > 2 else [])
            args += [k.value for k in node.keywords if k.arg in TEXT_KEYWORDS
                     or (k.arg == "label" and method in PLOT_METHODS)]
            bypass += [(where, method, words) for a in args if (words := bare_words(a))]
    assert bypass == []


# ---- real figures, read back from their Axes --------------------------------------------------------------------
def texts(fig) -> list[str]:
    out = [t.get_text() for t in fig.texts]
    if fig._suptitle is not None:
        out.append(fig._suptitle.get_text())
    for ax in fig.axes:
        out += [ax.get_title(loc) for loc in ("left", "center", "right")]
        out += [ax.get_xlabel(), ax.get_ylabel()] + [t.get_text() for t in ax.texts]
        out += [t.get_text() for t in ax.get_xticklabels() + ax.get_yticklabels()]
        legend = ax.get_legend()
        if legend is not None:
            out += [t.get_text() for t in legend.get_texts()]
    for legend in fig.legends:
        out += [t.get_text() for t in legend.get_texts()]
    return [t for t in out if t]


def fake_gan_result():
    cfg = gan_study.StudyConfig(datasets=("eight_gaussians",), variants=("NS-GAN", "WGAN-GP"), seeds=2, steps=20,
                                eval_every=10, shown_steps=(10, 20))
    covered = torch.tensor([[[1, 1, 0, 0, 1, 0, 0, 0], [1, 0, 0, 0, 1, 1, 0, 0]]] * 2, dtype=torch.bool)
    curves = {("eight_gaussians", v): {"steps": [10, 20], "covered": covered} for v in cfg.variants}
    return gan_study.StudyResult(config=cfg, curves=curves)


FIGURES = {   # name: (draw, English texts it must show, their Russian)
    "thesis map coverage (dfs.thesis_map)": (
        thesis_map.plot_coverage,
        ["entries of the thesis map", "covered", "equation"], ["записи карты диссертации", "покрыто", "формула"]),
    "paired differences (dfs.results_chapter)": (
        lambda: results_chapter.plot_differences([]),
        ["no dfs eval report\nwith paired differences", "Δ ID top-1\n(higher is better)",
         "Δ pose error (°)\n(lower is better)"],
        ["нет отчёта dfs eval\nс парными разностями", "Δ top-1\nличности\n(больше — лучше)",
         "Δ ошибка\nпозы (°)\n(меньше — лучше)"]),
    "SNR schedules (dfs.exercises.figures)": (
        lambda: EF.snr_schedule(T=50), ["Ho et al. (T = 1000)", "cosine (T = 50)"],
        ["Ho и др. (T = 1000)", "косинусное (T = 50)"]),
    "AEI-Net schematic (dfs.swap.faceshifter_figures)": (
        lambda: FF.draw_architecture([{"level": 1, "size": 2, "z_att": 8, "h_in": 16, "h_out": 16, "params": 4000}],
                                     id_dim=128),
        ["attributes encoder\n(U-Net decoder outputs)", "AAD ResBlk 1: 16→16\n4k params"],
        ["энкодер атрибутов\n(выходы декодера U-Net)", "AAD ResBlk 1: 16→16\n4k параметров"]),
    "covered-mode maps (dfs.gan_figures)": (
        lambda: gan_figures.mode_maps(fake_gan_result(), "eight_gaussians"),
        ["mode index", "generator step", "NS-GAN\n1 drop", "WGAN-GP\n1 drop",
         "8 Gaussians (ring): covered modes over training (seed 0)"],
        ["номер моды", "шаг генератора", "NS-GAN\nвыпадений моды: 1",
         "8 гауссиан (кольцо): покрытые моды в ходе обучения (сид 0)"]),
}


@pytest.mark.parametrize("name", FIGURES)
def test_real_figures_are_english_by_default_and_russian_under_dfs_lang_ru(monkeypatch, name):
    draw, english_texts, russian_texts = FIGURES[name]
    monkeypatch.delenv("DFS_LANG", raising=False)
    fig = draw()
    shown = texts(fig)
    plt.close(fig)
    assert set(english_texts) <= set(shown) and not any(CYRILLIC.search(t) for t in shown), shown
    monkeypatch.setenv("DFS_LANG", "ru")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig = draw()
        fig.canvas.draw()
    shown = texts(fig)
    plt.close(fig)
    assert set(russian_texts) <= set(shown), shown
    assert not set(english_texts) & set(shown)
    assert [str(w.message) for w in caught if "missing from font" in str(w.message)
            or isinstance(w.message, MissingTranslation)] == []
