"""Where the project's folders are: the repository root (for notebooks/ and figures/), the data setting and the
thesis draft (outside the repository, in the shared folder)."""
from __future__ import annotations

import os
from pathlib import Path


def repo_root() -> Path:
    """The checkout that holds ``notebooks/`` and ``figures/``.

    ``DFS_ROOT`` wins; else the folder above the installed ``dfs`` package when it is a checkout (editable
    install, the normal case); else the current directory.
    """
    if os.environ.get("DFS_ROOT"):
        return Path(os.environ["DFS_ROOT"]).resolve()
    here = Path(__file__).resolve().parent.parent
    if (here / "notebooks").is_dir() and (here / "pyproject.toml").is_file():
        return here
    return Path.cwd().resolve()


def figures_dir() -> Path:
    """Where ``dfs.figures.save`` writes: ``DFS_FIGURES`` or ``<repo>/figures``."""
    return Path(os.environ.get("DFS_FIGURES") or repo_root() / "figures").resolve()


def data_dir() -> Path:
    """The one data setting: ``DFS_DATA`` (tests and CI point it at ``../shared/data/faces``) or ``<repo>/data``.

    Loaders that download (LFW through scikit-learn, for users) download into this folder.
    """
    return Path(os.environ.get("DFS_DATA") or repo_root() / "data").resolve()


def cache_dir() -> Path:
    """Where dfs caches converted weights and mirrors: ``DFS_CACHE``, else the user cache directory
    (platformdirs' ``dfs``, else ``$XDG_CACHE_HOME/dfs`` or ``~/.cache/dfs``)."""
    if os.environ.get("DFS_CACHE"):
        return Path(os.environ["DFS_CACHE"]).expanduser()
    try:
        import platformdirs
        return Path(platformdirs.user_cache_dir("dfs", appauthor=False))
    except ImportError:
        return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "dfs"


DRAFT_RELATIVE = Path("thesis") / "draft_ru.txt"


def draft_path() -> Path:
    """The thesis draft: ``$DFS_SHARED/thesis/draft_ru.txt``, else ``<repo>/../shared/thesis/draft_ru.txt`` (CI: the
    clone sits at ``<x>/main`` with ``<x>/shared`` beside it). The path is returned whether or not the file exists:
    the draft is not part of the repository."""
    shared = os.environ.get("DFS_SHARED")
    base = Path(shared) if shared else repo_root().parent / "shared"
    return (base / DRAFT_RELATIVE).resolve()


def draft_lines(path: str | os.PathLike | None = None) -> list[str]:
    """The draft's lines (index 0 is line 1), read as UTF-8; FileNotFoundError naming where it was looked for."""
    path = Path(path) if path is not None else draft_path()
    if not path.is_file():
        raise FileNotFoundError(f"the thesis draft is not at {path}: set DFS_SHARED to the shared folder that holds "
                                f"{DRAFT_RELATIVE.as_posix()}")
    return path.read_text(encoding="utf-8").split("\n")
