"""dfs.figures.save writes the file and a manifest entry with the notebook context."""
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import plotly.graph_objects as go  # noqa: E402
import pytest  # noqa: E402

from dfs import figures  # noqa: E402


def test_save_matplotlib_records_manifest(tmp_path):
    figures.set_context(notebook="01_test", quick=True, seed=7, device="cpu (test)")
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = figures.save(fig, "01_line", directory=tmp_path, caption="a line")
    assert path == tmp_path / "01_line.png" and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    entry = json.loads((tmp_path / "MANIFEST.json").read_text())["01_line"]
    assert entry["notebook"] == "01_test" and entry["mode"] == "quick" and entry["seed"] == 7
    assert entry["device"] == "cpu (test)" and entry["caption"] == "a line" and entry["files"] == ["01_line.png"]
    assert entry["commit"] and entry["time"].endswith("+00:00")
    # a second figure keeps the first entry; re-saving the same name replaces its entry
    figures.set_context(quick=False)
    figures.save(plt.figure(), "01_other", directory=tmp_path)
    figures.save(fig, "01_line", directory=tmp_path)
    manifest = figures.read_manifest(tmp_path)
    assert set(manifest) == {"01_line", "01_other"} and manifest["01_line"]["mode"] == "full"
    plt.close("all")


def test_save_plotly_writes_html(tmp_path):
    path = figures.save(go.Figure(go.Scatter(x=[1, 2], y=[3, 4])), "02_plotly", directory=tmp_path)
    assert path.suffix == ".html" and "plotly" in path.read_text()[:5000].lower()
    assert "02_plotly" in figures.read_manifest(tmp_path)


@pytest.mark.parametrize("bad", ["", "a/b", "x.png", ".hidden"])
def test_bad_names_are_rejected(tmp_path, bad):
    with pytest.raises(ValueError, match="figure name"):
        figures.save(plt.figure(), bad, directory=tmp_path)


def test_unknown_object_and_context_keys_are_rejected(tmp_path):
    with pytest.raises(TypeError, match="matplotlib Figure or a plotly Figure"):
        figures.save(object(), "x", directory=tmp_path)
    with pytest.raises(ValueError, match="unknown figure context"):
        figures.set_context(colour="red")


def test_corrupt_manifest_is_a_clear_error(tmp_path):
    (tmp_path / "MANIFEST.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        figures.save(plt.figure(), "x", directory=tmp_path)
