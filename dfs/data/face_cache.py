"""The preprocessing cache: photo -> detect -> landmarks -> align -> crop -> mask -> (identity embedding), once.

    report = build_face_cache(lfw_dataset(), "cache/lfw256", size=256, template="ffhq", embed="dlib")
    print(report)                       # photos, faces, skipped by reason, shards built / re-used
    data = load_face_cache("cache/lfw256")   # dict of arrays, one row per face

Per face the cache holds: ``crop`` (S, S, 3) uint8, ``mask`` (S, S) uint8 (the soft face mask x 255),
``landmarks5`` / ``landmarks68`` in crop coordinates, ``matrix`` (2, 3) image -> crop (for pasting back),
``box`` in the photo, ``image_size`` (H, W), ``path``, ``identity`` and, with an embedder, ``embedding``.

Storage: ``shard_<i>_<key>.npz`` files of ``shard_size`` input photos each, and ``manifest.json`` (written
atomically after every shard).  A shard's key hashes the settings and its photos' (path, identity, size, mtime),
so a second run re-uses every shard whose inputs and settings are unchanged: after an interruption only the
unfinished shards are built, after editing a few photos only their shards.  Photos that cannot be used (missing,
corrupt, not an image, no face) are skipped with a warning and listed in the report and the manifest.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from dfs.faces.align import alignment_matrix, apply_affine, face_mask, warp_image
from dfs.faces.detect import Face, FaceAnalyzer, FaceNotFoundError
from dfs.faces.dlib_chips import DlibEmbedder
from dfs.faces.images import BadImageError, load_image

FORMAT = 1
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class CacheSettings:
    """What the cached arrays depend on (besides the analyzer's settings and the embedder's name)."""

    size: int = 256                 # crop side (pixels)
    template: str = "ffhq"          # "ffhq" | "arcface" (dfs.faces.align)
    mask_feather: float = 0.02      # Gaussian edge of the mask, standard deviation as a fraction of size
    mask_dilate: float = 0.0        # mask dilation as a fraction of size
    face_index: int | None = None   # None: the largest face of each photo; i: the i-th largest


@dataclass
class CacheReport:
    photos: int = 0
    faces: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)   # (path, reason)
    shards_built: int = 0
    shards_reused: int = 0
    seconds: float = 0.0

    @property
    def skipped_by_reason(self) -> dict[str, int]:
        return dict(Counter(reason.split(":")[0] for _, reason in self.skipped))

    def __str__(self) -> str:
        why = ", ".join(f"{k}: {v}" for k, v in sorted(self.skipped_by_reason.items())) or "none"
        return (f"{self.photos} photos -> {self.faces} faces; skipped {len(self.skipped)} ({why}); "
                f"shards built {self.shards_built}, re-used {self.shards_reused}; {self.seconds:.1f} s")


# ---------------------------------------------------------------------------------------------------------------
# identity embedders: callables (image, face) -> (D,) float array, with a ``name`` for the cache key.  An
# embedder that also has ``chip(image, face)`` and ``embed_chips(chips)`` is run in batches of ``batch_size``.


def _embedder(embed) -> tuple[Callable | None, str | None]:
    if embed is None:
        return None, None
    if embed == "dlib":
        e = DlibEmbedder()
        return e, e.name
    if callable(embed):
        name = getattr(embed, "name", None)
        if not isinstance(name, str):
            raise ValueError("an embed callable needs a string attribute `name` (it is part of the cache key), "
                             "e.g. embed.name = 'my_encoder_v1'")
        return embed, name
    raise ValueError(f"embed must be None, 'dlib' or a callable (image, face) -> vector, got {embed!r}")


# ---------------------------------------------------------------------------------------------------------------
# inputs


def _records(inputs) -> list[tuple[Path, str | None]]:
    """FaceImages | paths | (path, identity) pairs -> [(path, identity)]."""
    if hasattr(inputs, "records"):
        return [(Path(r.path), r.identity) for r in inputs.records]
    out = []
    for item in inputs:
        if isinstance(item, (str, os.PathLike)):
            out.append((Path(item), None))
        elif isinstance(item, (tuple, list)) and len(item) == 2:
            out.append((Path(item[0]), None if item[1] is None else str(item[1])))
        else:
            raise ValueError(f"inputs must be a FaceImages, paths, or (path, identity) pairs; got {item!r}")
    return out


def _fingerprint(path: Path, identity: str | None) -> str:
    try:
        st = path.stat()
        size, mtime = st.st_size, st.st_mtime_ns
    except OSError:
        size, mtime = -1, -1
    return f"{path.resolve()}|{identity}|{size}|{mtime}"


def _tmp_name(path: Path) -> Path:
    """A temporary name beside ``path`` that no other process writes (two jobs may build one cache at once)."""
    return path.with_name(f"{path.name}.{os.getpid()}.tmp")


def _left_by_a_dead_process(tmp: Path) -> bool:
    """Whether a ``<name>.<pid>.tmp`` file was left by a process that no longer runs (an interrupted build)."""
    try:
        os.kill(int(tmp.name.split(".")[-2]), 0)
    except (ValueError, IndexError, ProcessLookupError):
        return True
    except PermissionError:              # alive, another user's
        return False
    return False


def _atomic_write_json(path: Path, obj) -> None:
    tmp = _tmp_name(path)
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------------------------
# one photo


def preprocess_face(image: np.ndarray, face: Face, settings: CacheSettings, mask: bool = True) -> dict[str, np.ndarray]:
    """Align one detected face: crop, mask, landmarks in crop coordinates, matrix (see the module docstring).
    ``mask=False`` leaves the mask out (``_masks`` computes a batch of them at once)."""
    if face.landmarks68 is None:
        raise ValueError("the face mask needs 68-point landmarks; the analyzer returned none (use the dlib backend "
                         "or insightface's landmark_3d_68 model)")
    S = settings.size
    M = alignment_matrix(face.landmarks5, settings.template, S)
    lm68 = apply_affine(M, face.landmarks68)
    out = {"crop": warp_image(image, M, S), "landmarks5": apply_affine(M, face.landmarks5).astype(np.float32),
           "landmarks68": lm68.astype(np.float32), "matrix": M, "box": face.box.astype(np.float32),
           "image_size": np.array(image.shape[:2], np.int32)}
    if mask:
        out["mask"] = _masks(lm68[None], settings)[0]
    return out


def _masks(landmarks68: np.ndarray, settings: CacheSettings) -> np.ndarray:
    """(N, 68, 2) crop landmarks -> (N, S, S) uint8 soft masks (x 255), in one batched call."""
    S = settings.size
    m = face_mask(landmarks68, S, feather=settings.mask_feather * S, dilate=settings.mask_dilate * S)
    return np.round(m * 255).astype(np.uint8)


def _process_shard(records, settings, analyzer, embed) -> tuple[dict[str, np.ndarray], list[tuple[str, str]]]:
    rows, skipped = [], []
    batched = hasattr(embed, "chip") and hasattr(embed, "embed_chips")
    for path, identity in records:
        try:
            image = load_image(path)
            face = analyzer.largest(image, index=settings.face_index, name=str(path))
        except FileNotFoundError as e:
            skipped.append((str(path), f"missing: {e}"))
        except BadImageError as e:
            skipped.append((str(path), f"unreadable: {e}"))
        except FaceNotFoundError as e:
            skipped.append((str(path), f"no face: {e}"))
        else:
            row = preprocess_face(image, face, settings, mask=False)
            row["path"], row["identity"] = np.array(str(path)), np.array("" if identity is None else identity)
            if embed is not None and batched:
                row["chip"] = embed.chip(image, face)
            elif embed is not None:
                row["embedding"] = np.asarray(embed(image, face), dtype=np.float32)
            rows.append(row)
            continue
        warnings.warn(f"face cache: skipped {skipped[-1][0]} ({skipped[-1][1]})", stacklevel=3)
    if not rows:
        return {}, skipped
    arrays = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    arrays["mask"] = _masks(arrays["landmarks68"], settings)
    if batched:
        chips, step = arrays.pop("chip"), getattr(embed, "batch_size", 32)
        arrays["embedding"] = np.concatenate([embed.embed_chips(chips[i:i + step])
                                              for i in range(0, len(chips), step)]).astype(np.float32)
    return arrays, skipped


# ---------------------------------------------------------------------------------------------------------------
# the cache


def build_face_cache(inputs, out_dir: str | os.PathLike, *, size: int = 256, template: str = "ffhq",
                     mask_feather: float = 0.02, mask_dilate: float = 0.0, face_index: int | None = None,
                     analyzer: FaceAnalyzer | None = None, embed=None, shard_size: int = 256,
                     progress: bool = True, compress: bool = True) -> CacheReport:
    """Build (or finish, or re-use) the cache of ``inputs`` in ``out_dir``; see the module docstring.

    ``inputs``: a ``FaceImages`` (dfs.data.faces), paths, or (path, identity) pairs.  ``analyzer``: a
    ``FaceAnalyzer`` (default: dlib HOG + 68 points).  ``embed``: None, "dlib" (``DlibEmbedder``) or a callable
    ``(image, face) -> vector`` with a ``name`` attribute.
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    settings = CacheSettings(size, template, mask_feather, mask_dilate, face_index)
    if template not in ("ffhq", "arcface"):
        raise ValueError(f"template must be 'ffhq' or 'arcface', got {template!r}")
    if not isinstance(shard_size, int) or shard_size < 1:
        raise ValueError(f"shard_size must be a positive integer (photos per shard), got {shard_size!r}")
    if not (0 <= mask_feather < 0.5 and 0 <= mask_dilate < 0.5):
        raise ValueError("mask_feather and mask_dilate are fractions of the crop size in [0, 0.5)")
    analyzer = analyzer or FaceAnalyzer()
    embed_fn, embed_name = _embedder(embed)
    records = _records(inputs)
    if not records:
        raise ValueError("no input photos")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = {"format": FORMAT, "settings": asdict(settings), "analyzer": analyzer.settings(), "embed": embed_name,
              "compress": compress}
    config_json = json.dumps(config, sort_keys=True)

    old = {}
    if (out_dir / MANIFEST).is_file():
        try:
            old = {s["index"]: s for s in json.loads((out_dir / MANIFEST).read_text()).get("shards", [])}
        except (json.JSONDecodeError, KeyError, TypeError):
            warnings.warn(f"{out_dir / MANIFEST} is unreadable; rebuilding every shard", stacklevel=2)

    n_shards = (len(records) + shard_size - 1) // shard_size
    report = CacheReport(photos=len(records))
    shards: list[dict] = []

    def manifest(complete: bool) -> dict:
        later = [old[i] for i in sorted(old) if i >= len(shards) and i < n_shards]  # not yet revisited
        return {**config, "photos": len(records), "shard_size": shard_size, "complete": complete,
                "faces": sum(s["faces"] for s in shards), "shards": shards + ([] if complete else later)}

    bar = tqdm(total=len(records), unit="photo", desc=f"face cache {out_dir.name}", disable=not progress)
    for i in range(n_shards):
        chunk = records[i * shard_size:(i + 1) * shard_size]
        key = hashlib.sha256("\n".join([config_json] + [_fingerprint(p, s) for p, s in chunk]).encode()).hexdigest()
        prev = old.get(i)
        if prev and prev.get("key") == key and (prev["file"] is None or (out_dir / prev["file"]).is_file()):
            shards.append(prev)
            report.shards_reused += 1
        else:
            arrays, skipped = _process_shard(chunk, settings, analyzer, embed_fn)
            name = f"shard_{i:05d}_{key[:12]}.npz"
            if arrays:
                tmp = _tmp_name(out_dir / name)
                with open(tmp, "wb") as f:
                    (np.savez_compressed if compress else np.savez)(f, **arrays)
                os.replace(tmp, out_dir / name)
            shards.append({"index": i, "file": name if arrays else None, "key": key, "photos": len(chunk),
                           "faces": len(arrays.get("crop", [])), "skipped": [list(s) for s in skipped]})
            report.shards_built += 1
            _atomic_write_json(out_dir / MANIFEST, manifest(complete=False))
        report.skipped += [tuple(s) for s in shards[-1]["skipped"]]
        report.faces += shards[-1]["faces"]
        bar.update(len(chunk))
    bar.close()
    _atomic_write_json(out_dir / MANIFEST, manifest(complete=True))
    keep = {s["file"] for s in shards}
    for f in out_dir.glob("shard_*.npz"):                    # superseded
        if f.name not in keep:
            f.unlink(missing_ok=True)
    for f in out_dir.glob("shard_*.npz*.tmp"):               # half-written by an interrupted build
        if _left_by_a_dead_process(f):
            f.unlink(missing_ok=True)
    report.seconds = time.perf_counter() - t0
    return report


def read_manifest(out_dir: str | os.PathLike) -> dict:
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: build the cache with build_face_cache(inputs, {out_dir!s})")
    return json.loads(path.read_text())


def load_face_cache(out_dir: str | os.PathLike, keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """All cached faces as arrays (one row per face, shards concatenated in input order)."""
    m = read_manifest(out_dir)
    if not m.get("complete"):
        raise ValueError(f"the cache in {out_dir} is incomplete (interrupted?): run build_face_cache again with "
                         "the same inputs and settings to finish it")
    parts: dict[str, list[np.ndarray]] = {}
    for s in m["shards"]:
        if s["file"] is None:
            continue
        with np.load(Path(out_dir) / s["file"], allow_pickle=False) as z:
            for k in (keys or z.files):
                parts.setdefault(k, []).append(z[k])
    return {k: np.concatenate(v) for k, v in parts.items()}
