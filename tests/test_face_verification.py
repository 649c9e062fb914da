"""LFW-style pairs reading and per-fold verification metrics (dfs.faces.verification), on hand-computed cases."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from dfs.faces.verification import fold_metrics, read_lfw_pairs
from dfs.paths import repo_root


def test_fold_metrics_hand_computed():
    # fold 0: same 0.9 0.8, different 0.1 0.85; fold 1: same 0.9 0.7, different 0.2 0.3
    scores = np.array([0.9, 0.8, 0.1, 0.85, 0.9, 0.7, 0.2, 0.3])
    same = np.array([1, 1, 0, 0, 1, 1, 0, 0], bool)
    folds = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    m = fold_metrics(scores, same, folds)
    # fold 0 is judged with fold 1's best threshold (0.5, between 0.3 and 0.7): 0.85 is the one error
    assert m["threshold"][0] == pytest.approx(0.5) and m["accuracy"][0] == 0.75
    # fold 1 with fold 0's best threshold (0.45, between 0.1 and 0.8; accuracy 3/4 there): all right
    assert m["threshold"][1] == pytest.approx(0.45) and m["accuracy"][1] == 1.0
    assert m["auc"] == [0.75, 1.0]             # fold 0: 3 of the 4 (same, different) pairs ordered right
    assert m["best_accuracy"] == [0.75, 1.0]
    assert m["accuracy_mean"] == pytest.approx(0.875)
    with pytest.raises(ValueError, match="1-D of one length"):
        fold_metrics(scores, same[:3], folds)


def test_read_lfw_pairs_format(tmp_path):
    (tmp_path / "pairs.txt").write_text("2\t1\nAnn\t1\t3\nBob\t2\tCy\t1\nCy\t1\t2\nAnn\t2\tBob\t1\n")
    p = read_lfw_pairs(tmp_path)
    assert [(x.a.name, x.b.name, x.same, x.fold) for x in p] == [
        ("Ann_0001.jpg", "Ann_0003.jpg", True, 0), ("Bob_0002.jpg", "Cy_0001.jpg", False, 0),
        ("Cy_0001.jpg", "Cy_0002.jpg", True, 1), ("Ann_0002.jpg", "Bob_0001.jpg", False, 1)]
    assert p[0].a == tmp_path / "lfw_funneled" / "Ann" / "Ann_0001.jpg"
    (tmp_path / "pairs.txt").write_text("2\t1\nAnn\t1\t3\n")
    with pytest.raises(ValueError, match="header says 2 fold"):
        read_lfw_pairs(tmp_path)
    with pytest.raises(FileNotFoundError, match="pairsDevTest.txt"):
        read_lfw_pairs(tmp_path, "pairsDevTest.txt")


def test_shared_subset_pairs_point_at_existing_photos():
    env = os.environ.get("DFS_DATA")
    root = Path(env) if env else repo_root().parent / "shared" / "data" / "faces"
    if not root.is_absolute() and not root.exists():
        root = repo_root() / root
    if not (root / "lfw_home" / "pairs.txt").is_file():
        pytest.skip("shared LFW faces not found: set DFS_DATA to the folder holding lfw_home/")
    p = read_lfw_pairs(root / "lfw_home")
    assert len(p) == 600 and {x.fold for x in p} == set(range(10))
    assert sum(x.same for x in p) == 300
    assert all(x.a.is_file() and x.b.is_file() for x in p)
    assert all((x.a.parent == x.b.parent) == x.same for x in p)
