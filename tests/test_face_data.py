"""dfs.data.faces (loaders, identity split, LFW through scikit-learn, CelebA parsing) and dfs.data.face_cache
(detect -> align -> crop -> mask -> embedding, sharded, resumable, re-used) on the shared face photos."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from dfs.data import faces as fd
from shared_data import shared_faces  # noqa: E402

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402


@pytest.fixture
def lfw_root() -> Path:
    return shared_faces()


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Keep scikit-learn's LFW mirror and converted weights out of the user's cache folder."""
    monkeypatch.setenv("DFS_CACHE", str(tmp_path_factory.getbasetemp() / "dfs_cache"))


# ---------------------------------------------------------------------------------------------------------------
# loaders and the split


def test_lfw_subset_matches_its_manifest(lfw_root):
    ds = fd.lfw_dataset(lfw_root)
    rows = fd.read_manifest(lfw_root / "MANIFEST.csv")
    assert len(ds) == len(rows) == 913 and len(ds.identities) == 50
    assert sorted((r["identity"], r["file"]) for r in rows) == sorted(
        (rec.identity, rec.path.relative_to(lfw_root).as_posix()) for rec in ds.records)
    image, label = ds[17]
    assert image.shape == (250, 250, 3) and image.dtype == np.uint8
    assert ds.identities[label] == ds.records[17].identity == ds.records[17].path.parent.name
    few = fd.lfw_dataset(lfw_root, min_per_identity=25, max_per_identity=3)
    assert all(len(v) == 3 for v in few.by_identity().values())
    assert set(few.identities) == {k for k, v in ds.by_identity().items() if len(v) >= 25}


def test_split_by_identity_is_disjoint_seeded_and_stable(lfw_root):
    ds = fd.lfw_dataset(lfw_root)
    train, held = ds.split(held_out=0.2, seed=0)
    assert set(train.identities).isdisjoint(held.identities)
    assert set(train.identities) | set(held.identities) == set(ds.identities)
    assert len(held.identities) == 10 and len(train) + len(held) == len(ds)
    assert {r.identity for r in held.records} == set(held.identities)            # no photo crosses over
    for sub in (train, held):
        i = len(sub) // 2
        assert sub.identities[sub.labels[i]] == sub.records[i].identity
    # the same every time, whatever the order of the photos; another seed, another split
    shuffled = fd.FaceImages(list(reversed(ds.records)))
    assert shuffled.split(0.2, seed=0)[1].identities == held.identities
    assert ds.split(0.2, seed=0)[1].identities == held.identities
    assert ds.split(0.2, seed=1)[1].identities != held.identities
    # a larger held-out fraction extends the smaller one (identities are ranked once per seed)
    assert set(held.identities) <= set(ds.split(0.4, seed=0)[1].identities)
    assert len(ds.split(held_out=7, seed=3)[1].identities) == 7
    with pytest.raises(ValueError, match="fraction"):
        ds.split(held_out=1.5)
    with pytest.raises(ValueError, match="at least one identity"):
        fd.split_identities(["only_one"], 0.5)


def test_lfw_through_scikit_learn_uses_a_writable_mirror(lfw_root, tmp_path):
    read_only = fd._read_only(lfw_root / "lfw_home")
    home = fd.sklearn_data_home(lfw_root)
    if read_only:  # a mirror of symlinks in the (test's) dfs cache folder
        assert home.is_relative_to(os.environ["DFS_CACHE"]) and (home / "lfw_home" / "lfw_funneled").resolve() == (
            lfw_root / "lfw_home" / "lfw_funneled").resolve()
    had_joblib = (lfw_root / "lfw_home" / "joblib").exists()
    people = fd.lfw_people(lfw_root, resize=0.2)
    ds = fd.lfw_dataset(lfw_root)
    assert people.images.shape[0] == 913
    assert list(people.target_names) == [s.replace("_", " ") for s in ds.identities]
    counts = {k: len(v) for k, v in ds.by_identity().items()}
    assert np.bincount(people.target).tolist() == [counts[s] for s in ds.identities]
    if read_only:
        assert (lfw_root / "lfw_home" / "joblib").exists() == had_joblib       # the shared folder untouched
        assert (home / "lfw_home" / "joblib").is_dir()                         # scikit-learn's cache went here
    with pytest.raises(FileNotFoundError, match="download=True"):
        fd.lfw_people(tmp_path)


def test_lfw_pairs(lfw_root):
    folds = fd.lfw_pair_paths("10_folds", lfw_root)
    assert len(folds) == 600 and sum(p.same for p in folds) == 300
    for p in folds:
        assert (p.a.parent.name == p.b.parent.name) == p.same and p.a.is_file() and p.b.is_file()
    people = [{q.a.parent.name for q in folds if q.fold == k} | {q.b.parent.name for q in folds if q.fold == k}
              for k in range(10)]
    assert all(sum(q.fold == k for q in folds) == 60 for k in range(10))
    assert all(people[i].isdisjoint(people[j]) for i in range(10) for j in range(i))   # README: disjoint folds
    train, test = fd.lfw_pair_paths("train", lfw_root), fd.lfw_pair_paths("test", lfw_root)
    assert (len(train), len(test)) == (400, 200)
    names = [{n for q in s for n in (q.a.parent.name, q.b.parent.name)} for s in (train, test)]
    assert names[0].isdisjoint(names[1]) and (len(names[0]), len(names[1])) == (35, 15)
    # scikit-learn reads the same pairs: same labels, same pixels
    try:
        from sklearn.datasets._lfw import _load_imgs
    except ImportError:
        pytest.skip("scikit-learn's private _load_imgs moved; the label check above still ran")
    sk = fd.lfw_pairs("test", lfw_root, resize=0.25)
    assert sk.target.tolist() == [int(q.same) for q in test]
    ours = _load_imgs([str(x) for q in test for x in (q.a, q.b)], (slice(70, 195), slice(78, 172)), False, 0.25)
    assert np.array_equal(sk.pairs.reshape(ours.shape), ours)


def test_deepface_folder(lfw_root):
    root = lfw_root.parent / "faces-deepface"
    if not root.is_dir():
        pytest.skip(f"{root} is absent")
    ds = fd.folder_dataset(root)
    rows = fd.read_manifest(root / "MANIFEST.csv")
    assert (len(ds), len(ds.identities)) == (len(rows), len({r["identity"] for r in rows})) == (45, 9)


def test_celeba_identity_file_and_folders(tmp_path):
    base = tmp_path / "celeba"
    (base / "img_align_celeba").mkdir(parents=True)
    ids = {"000001.jpg": 2880, "000002.jpg": 2937, "000003.jpg": 2880, "000004.jpg": 4, "000005.jpg": 4}
    for f, i in ids.items():
        Image.fromarray(np.full((22, 18, 3), i % 255, np.uint8)).save(base / "img_align_celeba" / f)
    (base / "identity_CelebA.txt").write_text("".join(f"{f} {i}\n" for f, i in ids.items()))
    ds = fd.celeba_dataset(tmp_path)
    assert len(ds) == 5 and ds.identities == ["2880", "2937", "4"]
    assert [ds.identities[k] for k in ds.labels] == [str(i) for i in ids.values()]
    image, label = ds[3]
    assert image.shape == (22, 18, 3) and image[0, 0, 0] == 4 and ds.identities[label] == "4"
    (base / "identity_CelebA.txt").write_text("000001.jpg 2880\n000002.jpg\n")
    with pytest.raises(ValueError, match="line 2"):
        fd.celeba_dataset(tmp_path)
    with pytest.raises(FileNotFoundError, match="torchvision's layout"):
        fd.celeba_dataset(tmp_path / "nowhere")

    # identity-less folders (FFHQ / CelebA-HQ): every image under the root, labels -1, no identity split
    (tmp_path / "ffhq" / "00000").mkdir(parents=True)
    for k in range(3):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "ffhq" / "00000" / f"{k:05d}.png")
    (tmp_path / "ffhq" / "LICENSE.txt").write_text("not an image")
    flat = fd.image_folder(tmp_path / "ffhq")
    assert len(flat) == 3 and flat.labels.tolist() == [-1] * 3 and flat[0][1] == -1
    with pytest.raises(ValueError, match="no identity labels"):
        flat.split()
    with pytest.raises(FileNotFoundError, match="not a folder"):
        fd.folder_dataset(tmp_path / "missing")


# ---------------------------------------------------------------------------------------------------------------
# the preprocessing cache


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Four shared LFW photos of two people (copied to tmp so their mtimes can change), a corrupt file and a
    photo without a face, interleaved: [A, A, corrupt, B, no-face, B]."""
    pytest.importorskip("dlib")
    root = shared_faces() / "lfw_home" / "lfw_funneled"
    d = tmp_path_factory.mktemp("photos")
    out = []
    for name in ("Tom_Hanks", "Muhammad_Ali"):
        for k in (1, 2):
            src = root / name / f"{name}_{k:04d}.jpg"
            shutil.copy(src, d / src.name)
            out.append((d / src.name, name))
    (d / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a whole JPEG")
    y, x = np.mgrid[0:120, 0:160]
    Image.fromarray(np.stack([x, y, x + y], -1).astype(np.uint8)).save(d / "wall.png")
    return [out[0], out[1], (d / "corrupt.jpg", "X"), out[2], (d / "wall.png", "Y"), out[3]]


def _counting_analyzer(fail_after: int | None = None):
    from dfs.faces.detect import FaceAnalyzer

    class Counting(FaceAnalyzer):
        calls = 0

        def largest(self, image, index=None, name=None):
            self.calls += 1
            if fail_after is not None and self.calls > fail_after:
                raise KeyboardInterrupt  # as if the user pressed Ctrl-C here
            return super().largest(image, index, name)

    return Counting()


@pytest.fixture(scope="module")
def reference_cache(photos, tmp_path_factory):
    from dfs.data.face_cache import build_face_cache, load_face_cache
    out = tmp_path_factory.mktemp("reference")
    with pytest.warns(UserWarning) as caught:
        report = build_face_cache(photos, out, size=64, shard_size=2, progress=False)
    return out, report, [str(w.message) for w in caught], load_face_cache(out)


def test_cache_contents_and_skips(reference_cache, photos):
    from dfs.data.face_cache import read_manifest
    out, report, warned, data = reference_cache
    assert (report.photos, report.faces, report.shards_built) == (6, 4, 3)
    assert report.skipped_by_reason == {"unreadable": 1, "no face": 1}
    assert any("corrupt.jpg" in w for w in warned) and any("wall.png" in w and "no face" in w for w in warned)
    assert data["crop"].shape == (4, 64, 64, 3) and data["crop"].dtype == np.uint8
    assert data["identity"].tolist() == ["Tom_Hanks", "Tom_Hanks", "Muhammad_Ali", "Muhammad_Ali"]
    assert data["path"].tolist() == [str(photos[i][0]) for i in (0, 1, 3, 5)]
    assert data["mask"].shape == (4, 64, 64) and (data["mask"][:, 32, 32] > 250).all()
    assert (data["mask"][:, 0, 0] == 0).all()
    lm = data["landmarks5"]  # in crop coordinates: eyes above the nose above the mouth, all inside the crop
    assert ((lm > 0) & (lm < 64)).all() and (lm[:, 0, 1] < lm[:, 2, 1]).all() and (lm[:, 2, 1] < lm[:, 3, 1]).all()
    assert (data["image_size"] == [250, 250]).all()
    m = read_manifest(out)
    assert m["complete"] and m["faces"] == 4 and m["settings"]["size"] == 64
    assert sum(len(s["skipped"]) for s in m["shards"]) == 2


def test_cache_reused_and_partly_rebuilt(reference_cache, photos, tmp_path):
    from dfs.data.face_cache import build_face_cache, load_face_cache
    out = tmp_path / "cache"
    shutil.copytree(reference_cache[0], out)
    (out / "notes.txt").write_text("mine")
    a = _counting_analyzer()
    report = build_face_cache(photos, out, size=64, shard_size=2, progress=False, analyzer=a)
    assert a.calls == 0 and (report.shards_reused, report.shards_built) == (3, 0)
    assert report.faces == 4 and report.skipped_by_reason == {"unreadable": 1, "no face": 1}
    # a changed photo (new mtime) rebuilds its shard only: [corrupt, B1] -> one detection
    st = photos[3][0].stat()
    os.utime(photos[3][0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    a = _counting_analyzer()
    with pytest.warns(UserWarning, match="corrupt.jpg"):
        report = build_face_cache(photos, out, size=64, shard_size=2, progress=False, analyzer=a)
    assert a.calls == 1 and (report.shards_reused, report.shards_built) == (2, 1)
    assert len(list(out.glob("shard_*.npz"))) == 3
    for k, v in reference_cache[3].items():
        assert np.array_equal(load_face_cache(out)[k], v)
    # other settings: everything rebuilt, the old shards removed, other files kept
    with pytest.warns(UserWarning):
        report = build_face_cache(photos, out, size=48, template="arcface", shard_size=2, progress=False)
    assert report.shards_built == 3 and len(list(out.glob("shard_*.npz"))) == 3
    assert load_face_cache(out)["crop"].shape == (4, 48, 48, 3)
    assert (out / "notes.txt").read_text() == "mine"


def test_cache_resumes_after_interruption(reference_cache, photos, tmp_path):
    from dfs.data.face_cache import build_face_cache, load_face_cache, read_manifest
    out = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt), pytest.warns(UserWarning):
        build_face_cache(photos, out, size=64, shard_size=2, progress=False, analyzer=_counting_analyzer(3))
    m = read_manifest(out)
    assert not m["complete"] and [s["index"] for s in m["shards"]] == [0, 1]   # [A, A], [corrupt, B] done
    with pytest.raises(ValueError, match="incomplete"):
        load_face_cache(out)
    import subprocess
    import sys
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout.strip()
    (out / f"shard_00002_000000000000.npz.{finished}.tmp").write_bytes(b"half a shard")  # its writer died
    (out / "shard_00002_000000000000.npz.tmp").write_bytes(b"half a shard")              # an older name
    busy = out / f"shard_00002_000000000000.npz.{os.getppid()}.tmp"    # another build, still running
    busy.write_bytes(b"being written")
    a = _counting_analyzer()
    with pytest.warns(UserWarning, match="wall.png"):
        report = build_face_cache(photos, out, size=64, shard_size=2, progress=False, analyzer=a)
    assert a.calls == 2 and (report.shards_reused, report.shards_built) == (2, 1)    # [no-face, B] only
    assert report.skipped_by_reason == {"unreadable": 1, "no face": 1}
    assert list(out.glob("*.tmp")) == [busy]          # a running build's file is not pulled from under it
    data = load_face_cache(out)
    for k, v in reference_cache[3].items():
        assert np.array_equal(data[k], v), k
    assert json.loads((out / "manifest.json").read_text())["complete"]


def test_cache_embeddings(photos, tmp_path):
    from dfs.data.face_cache import build_face_cache, load_face_cache
    good = [photos[0], photos[3]]

    def mean_colour(image, face):
        x0, y0, x1, y1 = face.box.astype(int)
        return image[y0:y1, x0:x1].reshape(-1, 3).mean(0)

    with pytest.raises(ValueError, match="name"):
        build_face_cache(good, tmp_path / "c", size=32, embed=mean_colour, progress=False)
    mean_colour.name = "mean_colour"
    build_face_cache(good, tmp_path / "c", size=32, embed=mean_colour, progress=False)
    emb = load_face_cache(tmp_path / "c")["embedding"]
    assert emb.shape == (2, 3) and emb.dtype == np.float32 and not np.allclose(emb[0], emb[1])

    # the dlib embedder: the same vector as dlib's own compute_face_descriptor on dlib's own chip
    dlib = pytest.importorskip("dlib")
    try:
        from dfs.faces.dlib_chips import DlibEmbedder
        from dfs.faces.identity import dlib_model_path
        embedder = DlibEmbedder()
    except (ImportError, FileNotFoundError) as e:
        pytest.skip(f"dfs.faces.identity's dlib encoder is unavailable: {e}")
    report = build_face_cache(good, tmp_path / "d", size=32, embed=embedder, progress=False)
    assert report.faces == 2
    emb = load_face_cache(tmp_path / "d")["embedding"]
    det = dlib.get_frontal_face_detector()
    sp5 = dlib.shape_predictor(str(dlib_model_path("shape_predictor_5_face_landmarks.dat")))
    rec = dlib.face_recognition_model_v1(str(dlib_model_path()))
    from dfs.faces.images import load_image
    for (path, _), e in zip(good, emb):
        img = load_image(path)
        r = max(det(img, 1), key=lambda r: r.area())
        ref = np.array(rec.compute_face_descriptor(img, sp5(img, r)))
        assert float(e @ ref / np.linalg.norm(ref)) > 0.999
