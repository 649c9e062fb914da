"""Where the project's folders are: the repository root (for notebooks/ and figures/) and the data setting."""
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
