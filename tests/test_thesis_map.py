"""The thesis map quotes the draft verbatim at the right lines, points only at things that exist, and covers every
reference [1]–[13] and every Fig. 1.x of the draft."""
import re

import pytest

from dfs import thesis_map as tm
from dfs.paths import draft_lines, draft_path


@pytest.fixture(scope="module")
def draft():
    path = draft_path()
    if not path.is_file():
        pytest.skip(f"the thesis draft is not at {path} (it is not in the repository; set DFS_SHARED to the shared "
                    "folder holding thesis/draft_ru.txt)")
    return draft_lines(path)


@pytest.mark.parametrize("entry", tm.ENTRIES, ids=lambda e: f"{e.label}@{e.line}")
def test_quote_is_verbatim_on_its_line(entry, draft):
    assert entry.line <= len(draft)
    assert entry.quote in draft[entry.line - 1], f"l.{entry.line}: {draft[entry.line - 1][:200]!r}"


@pytest.mark.parametrize("entry", tm.ENTRIES, ids=lambda e: f"{e.label}@{e.line}")
def test_code_notebooks_headings_and_figures_exist(entry):
    assert tm.check_entry(entry) == []


def test_every_reference_of_the_draft_has_an_entry(draft):
    start = next(i for i, line in enumerate(draft) if "СПИСОК ИСПОЛЬЗОВАННЫХ ИСТОЧНИКОВ" in line)
    refs = {int(m.group(1)): i + 1 for i, line in enumerate(draft[start:], start)
            if (m := re.match(r"^- (\d+)\. ", line))}
    assert sorted(refs) == list(range(1, 14))
    mapped = {e.label: e.line for e in tm.ENTRIES if e.kind == "reference"}
    assert mapped == {f"[{n}]": line for n, line in refs.items()}


def test_every_figure_of_the_draft_has_an_entry(draft):
    figs = {m.group(1): i + 1 for i, line in enumerate(draft) if (m := re.match(r"^Рис\. (1\.\d+)\.", line))}
    assert len(figs) == 7
    mapped = {e.label: e.line for e in tm.ENTRIES if e.kind == "figure"}
    assert mapped == {f"Fig. {n}": line for n, line in figs.items()}


def test_numbered_equations_and_appendices_have_entries(draft):
    numbered = [i for i, line in enumerate(draft, 1) if re.fullmatch(r"\s*\((\d)\)\s*", line)]
    assert len(numbered) == 4   # eq. (1)-(4): the number sits on the line after the formula
    labels = {e.label: e.line for e in tm.ENTRIES}
    for n, line in enumerate(numbered, 1):
        assert labels[f"eq. ({n})"] == line - 1
    apps = [e for e in tm.ENTRIES if e.kind == "appendix"]
    assert [e.label for e in apps] == ["App. 1", "App. 2", "App. 3"]


def test_tools_of_section_2_1_each_have_an_entry(draft):
    tools = [t.strip() for line in draft[197:204] for t in line.split(" - ") if t.strip()]
    tools = [t.lstrip("- ").strip() for t in tools]
    assert len(tools) == 10
    mapped = {e.quote for e in tm.ENTRIES if e.kind == "tool"}
    assert set(tools) <= mapped


def test_entry_validation_refuses_unsupported_status_and_silent_gaps():
    with pytest.raises(ValueError, match="status"):
        tm.Entry("figure", "Fig. 9", 1, "x", "done")
    with pytest.raises(ValueError, match="must point at"):
        tm.Entry("figure", "Fig. 9", 1, "x", tm.COVERED)
    with pytest.raises(ValueError, match="why"):
        tm.Entry("figure", "Fig. 9", 1, "x", tm.NOT_COVERED)


def test_check_entry_reports_a_wrong_quote_a_missing_object_and_heading(tmp_path):
    bad = tm.Entry("section", "x", 2, "не то", tm.COVERED, notebooks=(("01_ddpm_forward_reverse", "No such heading"),),
                   code=("dfs.diffusion.no_such_function",))
    problems = tm.check_entry(bad, lines=["a", "то самое"])
    assert any("not on line 2" in p for p in problems)
    assert any("no_such_function" in p for p in problems)
    assert any("No such heading" in p for p in problems)


def test_resolve_imports_modules_and_attributes():
    from dfs.diffusion import q_sample

    assert tm.resolve("dfs.diffusion.q_sample") is q_sample
    with pytest.raises(AttributeError):
        tm.resolve("dfs.diffusion.q_sampel")


def test_markdown_has_one_row_per_entry_and_coverage_adds_up():
    md = tm.to_markdown()
    assert md.count("\n") == len(tm.ENTRIES) + 2
    assert sum(sum(c.values()) for c in tm.coverage().values()) == len(tm.ENTRIES)
    assert all(e.status != tm.COVERED for e in tm.not_covered())
