"""The embedded face sample in data/ (the default DFS_DATA): what a fresh clone trains and evaluates on."""
from __future__ import annotations

import filecmp
import shutil

import pytest

from dfs.data.faces import LFW_PAIR_FILES, lfw_pair_paths, load_faces
from dfs.data.lfw_sample import draw_pairs, make_lfw_sample
from dfs.paths import repo_root

DATA = repo_root() / "data"


def test_the_sample_is_the_default_and_splits_into_train_and_held_out_people(monkeypatch):
    monkeypatch.delenv("DFS_DATA", raising=False)
    faces = load_faces()
    assert faces.name == "lfw" and len(faces.identities) == 50 and 400 <= len(faces) <= 500
    train, held = faces.split(0.2, 0)
    assert len(held.identities) == 10 and not set(train.identities) & set(held.identities)
    assert all(len(p) >= 2 for p in held.by_identity().values())   # every held-out person can be a source


@pytest.mark.parametrize("subset", sorted(LFW_PAIR_FILES))
def test_pairs_files_name_photos_of_the_sample(subset):
    pairs = lfw_pair_paths(subset, DATA)
    same = [p for p in pairs if p.same]
    assert pairs and len(same) * 2 == len(pairs)
    for p in pairs:
        assert p.a.is_file() and p.b.is_file() and p.a != p.b
        assert (p.a.parent == p.b.parent) == p.same      # same person <=> same folder
    if subset == "10_folds":
        folds = {p.fold for p in pairs}
        assert folds == set(range(10))
        people = [{x.parent.name for p in pairs if p.fold == f for x in (p.a, p.b)} for f in folds]
        assert all(not (a & b) for k, a in enumerate(people) for b in people[k + 1:])   # identity-disjoint folds


def test_scikit_learn_reads_the_sample_as_lfw(tmp_path):
    from sklearn.datasets import fetch_lfw_pairs
    shutil.copytree(DATA / "lfw_home", tmp_path / "lfw_home")
    test = fetch_lfw_pairs(subset="test", data_home=str(tmp_path), download_if_missing=False)
    assert test.pairs.shape[0] == len(lfw_pair_paths("test", DATA))


def test_the_sample_is_re_made_exactly_from_the_developer_subset(tmp_path):
    from tests.shared_data import shared_faces
    make_lfw_sample(shared_faces(), tmp_path, per_identity=10, seed=0)
    cmp = filecmp.dircmp(tmp_path / "lfw_home", DATA / "lfw_home", ignore=["joblib"])
    assert not cmp.left_only and not cmp.right_only and not cmp.diff_files
    for name in LFW_PAIR_FILES.values():
        assert (tmp_path / "lfw_home" / name).read_text() == (DATA / "lfw_home" / name).read_text()
    for sub in cmp.subdirs.values():
        assert not sub.left_only and not sub.right_only and not sub.diff_files


def test_draw_pairs_is_exact_and_refuses_impossible_counts():
    import random
    pairs = draw_pairs({"a": 3, "b": 2, "c": 1}, 4, 5, random.Random(0))
    same, diff = pairs[:4], pairs[4:]
    assert len(set(same)) == 4 and all(len(p) == 3 and p[1] < p[2] for p in same)   # C(3,2) + C(2,2) = 4: all
    assert len(set(diff)) == 5 and all(p[0] != p[2] for p in diff)
    with pytest.raises(ValueError, match="cannot draw 5 same-person pairs"):
        draw_pairs({"a": 3, "b": 2}, 5, 1, random.Random(0))
