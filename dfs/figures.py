"""``save(fig, name)``: the one way a notebook writes a thesis figure.

The figure goes to ``figures/<name>.png`` (matplotlib) or ``figures/<name>.html`` (plotly; plus a PNG when
kaleido can find a Chrome), and ``figures/MANIFEST.json`` gets one entry per figure: which notebook made it,
quick or full mode, device, seed, the language of its text (``DFS_LANG``, :mod:`dfs.labels`), git commit and time.
The notebook context comes from :func:`dfs.notebook.setup` (or :func:`set_context`).
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import subprocess
import tempfile
from pathlib import Path

from .labels import language
from .paths import figures_dir, repo_root
from .smoke import smoke_caps

MANIFEST = "MANIFEST.json"
_context: dict = {"notebook": os.environ.get("DFS_NOTEBOOK"), "quick": None, "seed": None, "device": None}


def set_context(**kwargs) -> dict:
    """Record which notebook/mode/seed/device the next figures belong to; returns the whole context."""
    unknown = set(kwargs) - set(_context)
    if unknown:
        raise ValueError(f"unknown figure context keys {sorted(unknown)}; known: {sorted(_context)}")
    _context.update(kwargs)
    return dict(_context)


def git_commit(root: Path | None = None) -> str:
    """The checkout's commit hash (``+dirty`` when tracked files changed), or ``"unknown"`` outside git."""
    root = root or repo_root()
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def read_manifest(directory: Path | None = None) -> dict:
    path = Path(directory or figures_dir()) / MANIFEST
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); delete it and re-run `dfs reproduce`") from e


def save(fig, name: str, directory: str | Path | None = None, dpi: int = 150, **extra) -> Path:
    """Save a matplotlib or plotly figure as ``<name>.png`` / ``<name>.html`` and record it in the manifest.

    ``name`` is a file stem such as ``"fig1_1_forward_process"`` (no folders, no extension). Extra keyword
    arguments (e.g. ``caption="..."``) are stored in the manifest entry. Returns the main file written.
    """
    if not name or "/" in name or "\\" in name or name.startswith(".") or Path(name).suffix in {".png", ".html", ".pdf"}:
        raise ValueError(f"figure name must be a plain file stem like 'fig1_1_forward', got {name!r}")
    out_dir = Path(directory or figures_dir())
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    if hasattr(fig, "savefig"):  # matplotlib
        path = out_dir / f"{name}.png"
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
        files.append(path.name)
    elif hasattr(fig, "write_html"):  # plotly
        path = out_dir / f"{name}.html"
        fig.write_html(path, include_plotlyjs="cdn")
        files.append(path.name)
        try:  # a static copy needs kaleido + a Chrome; the HTML is the figure of record
            fig.write_image(out_dir / f"{name}.png")
            files.append(f"{name}.png")
        except Exception:  # noqa: BLE001 - kaleido/Chrome missing is not an error for an interactive figure
            pass
    else:
        raise TypeError(f"save() takes a matplotlib Figure or a plotly Figure, got {type(fig).__name__}")
    from .device import describe_device

    ctx = dict(_context)
    entry = {
        "files": files,
        "notebook": ctx["notebook"] or os.environ.get("DFS_NOTEBOOK") or "interactive",
        "mode": "smoke" if ctx["quick"] is False and smoke_caps() else {True: "quick", False: "full",
                                                                         None: "unknown"}[ctx["quick"]],
        "device": ctx["device"] or describe_device(),
        "seed": ctx["seed"],
        "language": language(),
        "commit": git_commit(),
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **extra,
    }
    manifest = read_manifest(out_dir)
    manifest[name] = entry
    _atomic_write_text(out_dir / MANIFEST, json.dumps(dict(sorted(manifest.items())), indent=2) + "\n")
    return path


def as_image(x):
    """An image for ``imshow``: a (3, H, W) tensor in [−1, 1] (the models' crops), an (H, W, 3) uint8 array, or an
    (H, W) map, as (H, W, 3) floats in [0, 1] (or the map itself)."""
    import numpy as np

    if hasattr(x, "detach"):
        x = x.detach().cpu().float()
        if x.ndim == 3 and x.shape[0] in (1, 3):
            x = ((x.clamp(-1, 1) + 1) / 2).permute(1, 2, 0)
        x = x.numpy()
    x = np.asarray(x)
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    return x[..., 0] if x.ndim == 3 and x.shape[-1] == 1 else x


def image_grid(columns: dict, row_labels=None, size: float = 1.6, cmap: str = "magma", fontsize: int = 9):
    """A grid of images: one column per ``columns`` entry (title -> list of images, :func:`as_image` forms), one row
    per image; ``row_labels`` (optional) are written left of each row.  Returns the matplotlib figure."""
    import matplotlib.pyplot as plt

    titles = list(columns)
    n = len(columns[titles[0]])
    if any(len(columns[t]) != n for t in titles):
        raise ValueError(f"every column needs {n} images, got {[len(columns[t]) for t in titles]}")
    fig, ax = plt.subplots(n, len(titles), figsize=(size * len(titles), size * n), squeeze=False)
    for c, t in enumerate(titles):
        for r, im in enumerate(columns[t]):
            ax[r, c].imshow(as_image(im), cmap=cmap)
            ax[r, c].set_xticks([]), ax[r, c].set_yticks([])
        ax[0, c].set_title(t, fontsize=fontsize)
    for r, label in enumerate(row_labels or []):
        ax[r, 0].set_ylabel(label, fontsize=fontsize - 1)
    fig.tight_layout()
    return fig
