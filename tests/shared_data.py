"""Where the tests find the shared face data: ``DFS_DATA`` (CI: ../shared/data/faces), else <repo>/../shared/data/faces."""
import os
from pathlib import Path

import pytest

from dfs.paths import repo_root


def shared_faces() -> Path:
    """The shared LFW subset's root (the folder holding ``lfw_home/``); skips the test when it is absent."""
    root = Path(os.environ.get("DFS_DATA") or repo_root().parent / "shared" / "data" / "faces").resolve()
    if not (root / "lfw_home" / "lfw_funneled").is_dir():
        pytest.skip(f"the shared LFW subset is not at {root} (set DFS_DATA to a folder holding lfw_home/)")
    return root


def shared_lfw_photos() -> Path:
    """The subset's photo folder, ``lfw_home/lfw_funneled`` (one folder per person)."""
    return shared_faces() / "lfw_home" / "lfw_funneled"
