"""Face photos with identity labels, split by identity.

    ds = lfw_dataset()                              # LFW from dfs.paths.data_dir() (DFS_DATA), in LFW's layout
    train, held_out = ds.split(held_out=0.2, seed=0)  # disjoint identities, fixed by (names, fraction, seed)
    image, label = train[0]                         # (H, W, 3) uint8 RGB, index into train.identities

Sources, all giving a ``FaceImages`` (a torch ``Dataset`` of (image, label) with ``records``: path + identity):

* ``folder_dataset(root)``: any folder-per-identity tree ``<root>/<identity>/<image files>`` (LFW's
  ``lfw_funneled/``, the shared deepface faces, your own photos).
* ``lfw_dataset(data_home, download)``: LFW in scikit-learn's layout ``<data_home>/lfw_home/lfw_funneled/...``;
  ``download=True`` fetches it with scikit-learn (``fetch_lfw_pairs``, ~230 MB) first.  ``lfw_people`` and
  ``lfw_pairs`` call scikit-learn's ``fetch_lfw_people`` / ``fetch_lfw_pairs`` themselves (arrays, as
  scikit-learn returns them); ``lfw_pair_paths`` reads a pairs file as file paths with fold numbers.
  scikit-learn writes a joblib cache into ``lfw_home/``: when that folder is read-only, a mirror of symlinks in the
  dfs cache folder is used instead (``sklearn_data_home``), so shared data stays untouched.
* ``celeba_dataset(root, download)``: CelebA in torchvision's layout (``<root>/celeba/img_align_celeba/``,
  ``identity_CelebA.txt``); ``download=True`` asks torchvision to fetch it.
* ``image_folder(root)``: photos without identities (FFHQ, CelebA-HQ); labels are -1.

The split (``split_identities``): identities ranked by SHA-256 of ``"<seed>/<name>"``; the first
``round(held_out * n)`` (or ``held_out`` when an int) are held out.  It depends only on the set of names, the
fraction and the seed -- not on file order, platform or library versions.
"""
from __future__ import annotations

import csv
import hashlib
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch.utils.data

from dfs.faces.images import is_image_file, load_image
from dfs.paths import data_dir

LFW_PAIR_FILES = {"train": "pairsDevTrain.txt", "test": "pairsDevTest.txt", "10_folds": "pairs.txt"}


@dataclass(frozen=True)
class FaceRecord:
    path: Path
    identity: str | None  # None: an identity-less photo (FFHQ, CelebA-HQ)


def split_identities(names: Iterable[str], held_out: float | int = 0.2, seed: int = 0) -> tuple[list[str], list[str]]:
    """(train names, held-out names), disjoint, both sorted; see the module docstring for the rule."""
    names = sorted(set(names))
    n = len(names)
    if isinstance(held_out, bool) or not isinstance(held_out, (int, float)):
        raise ValueError(f"held_out must be a fraction in (0, 1) or a count, got {held_out!r}")
    if isinstance(held_out, float):
        if not 0.0 < held_out < 1.0:
            raise ValueError(f"held_out as a fraction must lie in (0, 1), got {held_out}")
        k = min(max(round(held_out * n), 1), n - 1)
    else:
        k = held_out
    if n < 2 or not 0 < k < n:
        raise ValueError(f"cannot hold out {k} of {n} identities: both parts need at least one identity")
    ranked = sorted(names, key=lambda s: hashlib.sha256(f"{seed}/{s}".encode()).hexdigest())
    held = set(ranked[:k])
    return [s for s in names if s not in held], [s for s in names if s in held]


class FaceImages(torch.utils.data.Dataset):
    """(image, label) pairs: ``image`` is (H, W, 3) uint8 RGB (or ``transform(image)``), ``label`` indexes
    ``identities`` (sorted names; -1 for photos without identity)."""

    def __init__(self, records: Sequence[FaceRecord], transform: Callable | None = None, name: str = "faces"):
        self.records = list(records)
        self.transform = transform
        self.name = name
        self.identities = sorted({r.identity for r in self.records if r.identity is not None})
        index = {s: i for i, s in enumerate(self.identities)}
        self.labels = np.array([index.get(r.identity, -1) for r in self.records], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        image = load_image(self.records[i].path)
        return (self.transform(image) if self.transform else image), int(self.labels[i])

    def __repr__(self) -> str:
        return f"FaceImages({self.name!r}: {len(self)} photos, {len(self.identities)} identities)"

    @property
    def paths(self) -> list[Path]:
        return [r.path for r in self.records]

    def by_identity(self) -> dict[str, list[Path]]:
        out: dict[str, list[Path]] = {s: [] for s in self.identities}
        for r in self.records:
            if r.identity is not None:
                out[r.identity].append(r.path)
        return out

    def subset(self, identities: Iterable[str], name: str | None = None) -> "FaceImages":
        keep = set(identities)
        unknown = keep - set(self.identities)
        if unknown:
            raise ValueError(f"identities not in {self.name}: {sorted(unknown)[:5]}")
        return FaceImages([r for r in self.records if r.identity in keep], self.transform, name or self.name)

    def split(self, held_out: float | int = 0.2, seed: int = 0) -> tuple["FaceImages", "FaceImages"]:
        """(train, held-out) by identity: no person is in both (see ``split_identities``)."""
        if not self.identities:
            raise ValueError(f"{self.name} has no identity labels, so it cannot be split by identity")
        train, held = split_identities(self.identities, held_out, seed)
        return self.subset(train, f"{self.name}/train"), self.subset(held, f"{self.name}/held-out")


# ---------------------------------------------------------------------------------------------------------------
# folders


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and is_image_file(p))


def folder_dataset(root: str | os.PathLike, min_per_identity: int = 1, max_per_identity: int | None = None,
                   transform: Callable | None = None) -> FaceImages:
    """A folder-per-identity tree: each subfolder of ``root`` is one person, its image files (sorted) the photos.

    ``min_per_identity`` drops people with fewer photos (scikit-learn's ``min_faces_per_person``);
    ``max_per_identity`` keeps the first N of each.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder; expected <root>/<identity>/<photos>")
    records = []
    for person in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = _image_files(person)
        if len(files) >= min_per_identity:
            records += [FaceRecord(f, person.name) for f in files[:max_per_identity]]
    if not records:
        raise ValueError(f"no identity folder with at least {min_per_identity} image(s) in {root}; expected "
                         "<root>/<identity>/<photo>.jpg")
    return FaceImages(records, transform, name=root.name)


def image_folder(root: str | os.PathLike, recursive: bool = True, transform: Callable | None = None) -> FaceImages:
    """Photos without identity labels (FFHQ, CelebA-HQ, ...): every image file under ``root``; labels are -1."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder of images")
    files = sorted(p for p in (root.rglob("*") if recursive else root.iterdir())
                   if p.is_file() and not p.name.startswith(".") and is_image_file(p))
    if not files:
        raise ValueError(f"no image files (.jpg, .png, ...) under {root}")
    return FaceImages([FaceRecord(p, None) for p in files], transform, name=root.name)


# ---------------------------------------------------------------------------------------------------------------
# LFW through scikit-learn


def _read_only(folder: Path) -> bool:
    """True when we may not (or should not) write into ``folder``: no write permission, or no write bit at all
    (a folder marked read-only, even for root)."""
    return not os.access(folder, os.W_OK) or not (folder.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def sklearn_data_home(data_home: str | os.PathLike | None = None) -> Path:
    """A ``data_home`` scikit-learn may write its joblib cache into, for the LFW in ``data_home``.

    ``data_home`` itself when ``<data_home>/lfw_home`` is writable (or absent: scikit-learn downloads there);
    otherwise a mirror ``<dfs cache>/lfw/<hash>/lfw_home/`` whose ``lfw_funneled`` and pairs files are symlinks to
    the originals (copies where symlinks are not allowed).
    """
    from dfs.paths import cache_dir

    data_home = Path(data_home) if data_home is not None else data_dir()
    lfw_home = data_home / "lfw_home"
    if not lfw_home.is_dir() or not _read_only(lfw_home):
        return data_home
    key = hashlib.sha256(str(lfw_home.resolve()).encode()).hexdigest()[:12]
    mirror = cache_dir() / "lfw" / key
    (mirror / "lfw_home").mkdir(parents=True, exist_ok=True)
    for name in ["lfw_funneled", "lfw", *LFW_PAIR_FILES.values()]:
        src, dst = lfw_home / name, mirror / "lfw_home" / name
        if not src.exists() or dst.exists() or dst.is_symlink():
            continue
        try:
            dst.symlink_to(src.resolve(), target_is_directory=src.is_dir())
        except OSError:  # no symlinks (Windows without developer mode): copy
            shutil.copytree(src, dst) if src.is_dir() else shutil.copy2(src, dst)
    return mirror


def _missing_lfw(lfw_home: Path) -> FileNotFoundError:
    return FileNotFoundError(
        f"LFW is not in {lfw_home} (expected lfw_funneled/<Person>/<Person>_0001.jpg and pairs*.txt). Set DFS_DATA "
        "to a folder that holds lfw_home/, or pass download=True to fetch it with scikit-learn (~230 MB).")


def ensure_lfw(data_home: str | os.PathLike | None = None, download: bool = False) -> Path:
    """The ``lfw_home`` folder of LFW in ``data_home`` (default ``dfs.paths.data_dir()``); downloads it with
    scikit-learn when absent and ``download=True``."""
    data_home = Path(data_home) if data_home is not None else data_dir()
    lfw_home = data_home / "lfw_home"
    if (lfw_home / "lfw_funneled").is_dir():
        return lfw_home
    if not download:
        raise _missing_lfw(lfw_home)
    from sklearn.datasets import fetch_lfw_pairs
    fetch_lfw_pairs(subset="test", data_home=str(data_home), download_if_missing=True)  # fetches everything
    return lfw_home


def lfw_dataset(data_home: str | os.PathLike | None = None, download: bool = False, min_per_identity: int = 1,
                max_per_identity: int | None = None, transform: Callable | None = None) -> FaceImages:
    """LFW (deep-funneled or funneled images, ``lfw_funneled/``) as a folder-per-identity ``FaceImages``."""
    ds = folder_dataset(ensure_lfw(data_home, download) / "lfw_funneled", min_per_identity, max_per_identity,
                        transform)
    ds.name = "lfw"
    return ds


def lfw_people(data_home: str | os.PathLike | None = None, download: bool = False, **kwargs):
    """scikit-learn's ``fetch_lfw_people`` on the LFW in ``data_home`` (arrays; kwargs go to scikit-learn)."""
    from sklearn.datasets import fetch_lfw_people
    data_home = Path(data_home) if data_home is not None else data_dir()
    if download:
        ensure_lfw(data_home, download=True)
    elif not (data_home / "lfw_home" / "lfw_funneled").is_dir():
        raise _missing_lfw(data_home / "lfw_home")
    return fetch_lfw_people(data_home=str(sklearn_data_home(data_home)), download_if_missing=False, **kwargs)


def lfw_pairs(subset: str = "10_folds", data_home: str | os.PathLike | None = None, download: bool = False,
              **kwargs):
    """scikit-learn's ``fetch_lfw_pairs`` on the LFW in ``data_home`` (arrays; kwargs go to scikit-learn)."""
    from sklearn.datasets import fetch_lfw_pairs
    if subset not in LFW_PAIR_FILES:
        raise ValueError(f"subset must be one of {tuple(LFW_PAIR_FILES)}, got {subset!r}")
    data_home = Path(data_home) if data_home is not None else data_dir()
    if download:
        ensure_lfw(data_home, download=True)
    elif not (data_home / "lfw_home" / "lfw_funneled").is_dir():
        raise _missing_lfw(data_home / "lfw_home")
    return fetch_lfw_pairs(subset=subset, data_home=str(sklearn_data_home(data_home)), download_if_missing=False,
                           **kwargs)


def resolved_data(data: str | os.PathLike | None = None) -> Path:
    """The faces folder a ``data`` setting means: itself, or (None) ``dfs.paths.data_dir()`` -- DFS_DATA, else the
    embedded sample ``data/``."""
    return (Path(data) if data is not None else data_dir()).resolve()


def load_faces(data: str | os.PathLike | None = None):
    """The labelled photos in ``data`` (default ``dfs.paths.data_dir()``): LFW's layout when ``lfw_home/`` is
    there, else a folder-per-identity tree."""
    root = resolved_data(data)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder: --data must be a folder-per-identity tree of photos or a "
                                "folder holding LFW's lfw_home/ (set DFS_DATA or pass --data). Without network, "
                                "unset DFS_DATA to use the embedded sample in data/; with network, "
                                "dfs.data.faces.lfw_dataset(download=True) fetches the full LFW into DFS_DATA")
    if (root / "lfw_home" / "lfw_funneled").is_dir():
        return lfw_dataset(root)
    return folder_dataset(root)


@dataclass(frozen=True)
class FacePair:
    a: Path
    b: Path
    same: bool
    fold: int  # 0-based fold (always 0 for the train/test files)


def lfw_pair_paths(subset: str = "10_folds", data_home: str | os.PathLike | None = None,
                   download: bool = False) -> list[FacePair]:
    """An LFW pairs file as file paths, in the file's order (scikit-learn's order).

    LFW's format: a header (``n`` or ``folds n``), then per fold ``n`` same-person lines ``name i j`` and ``n``
    different-person lines ``name1 i name2 j``; indices are 1-based positions in the sorted folder.
    """
    if subset not in LFW_PAIR_FILES:
        raise ValueError(f"subset must be one of {tuple(LFW_PAIR_FILES)}, got {subset!r}")
    lfw_home = ensure_lfw(data_home, download)
    path = lfw_home / LFW_PAIR_FILES[subset]
    lines = [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
    header, specs = lines[0], lines[1:]
    per_fold = 2 * int(header[-1])
    folders: dict[str, list[Path]] = {}

    def photo(name: str, i: str) -> Path:
        if name not in folders:
            folders[name] = sorted((lfw_home / "lfw_funneled" / name).iterdir())
        return folders[name][int(i) - 1]

    pairs = []
    for k, s in enumerate(specs):
        if len(s) == 3:
            pairs.append(FacePair(photo(s[0], s[1]), photo(s[0], s[2]), True, k // per_fold))
        elif len(s) == 4:
            pairs.append(FacePair(photo(s[0], s[1]), photo(s[2], s[3]), False, k // per_fold))
        else:
            raise ValueError(f"{path}, line {k + 2}: expected 'name i j' or 'name1 i name2 j', got {s}")
    return pairs


def read_manifest(path: str | os.PathLike) -> list[dict]:
    """Rows of a shared-data ``MANIFEST.csv`` (identity, file, ...)."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------------------------------------------------
# CelebA


def read_celeba_identities(root: str | os.PathLike) -> list[FaceRecord]:
    """CelebA's ``identity_CelebA.txt`` (lines ``000001.jpg 2880``) in torchvision's layout
    ``<root>/celeba/{identity_CelebA.txt, img_align_celeba/}`` -> records (identity = the number, as text)."""
    base = Path(root) / "celeba"
    ident = base / "identity_CelebA.txt"
    if not ident.is_file():
        raise FileNotFoundError(f"{ident} is missing: CelebA is expected in torchvision's layout "
                                f"({base}/img_align_celeba/*.jpg and identity_CelebA.txt); pass download=True to "
                                "let torchvision fetch it, or download it from the CelebA site")
    records = []
    for n, line in enumerate(ident.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[1].isdigit():
            raise ValueError(f"{ident}, line {n}: expected '<file> <identity number>', got {line!r}")
        records.append(FaceRecord(base / "img_align_celeba" / parts[0], parts[1]))
    return records


def celeba_dataset(root: str | os.PathLike | None = None, download: bool = False,
                   transform: Callable | None = None) -> FaceImages:
    """CelebA (aligned 178x218 photos, 10,177 identities) with its identity labels.

    ``download=True`` calls ``torchvision.datasets.CelebA(root, target_type="identity", download=True)`` first
    (a Google Drive download that is often rate-limited; the files can also be fetched by hand).
    """
    root = Path(root) if root is not None else data_dir()
    if download and not (root / "celeba" / "identity_CelebA.txt").is_file():
        import torchvision
        torchvision.datasets.CelebA(str(root), split="all", target_type="identity", download=True)
    ds = FaceImages(read_celeba_identities(root), transform, name="celeba")
    return ds
