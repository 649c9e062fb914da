"""Face verification on LFW-style pairs files: ROC AUC and accuracy per fold (Huang et al. 2007, "View 2").

``read_lfw_pairs(lfw_home)`` reads ``pairs.txt`` in LFW's text format -- the file ``sklearn.datasets.fetch_lfw_pairs``
reads (header ``n_folds n_pairs``, then per fold ``n_pairs`` same-person lines ``name i j`` and ``n_pairs``
different-person lines ``name1 i name2 j``) -- without decoding every image into a float array as scikit-learn
does (450 MB for the 600 pairs of the shared subset).  ``lfw_verification(encoder, lfw_home)`` cuts dlib chips,
embeds them and scores each pair by the cosine of the two unit vectors.

Accuracy follows LFW's protocol: for each fold the threshold is the one with the best accuracy on the other nine
folds, applied to the held-out fold; ``best_accuracy`` is the fold's own best (an optimistic upper bound).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass
class Pair:
    a: Path
    b: Path
    same: bool
    fold: int


def read_lfw_pairs(lfw_home: str | os.PathLike, pairs_file: str = "pairs.txt",
                   images: str = "lfw_funneled") -> list[Pair]:
    """The pairs of ``<lfw_home>/<pairs_file>``; image i of a person is ``<images>/<name>/<name>_<i:04d>.jpg``.

    ``pairs.txt`` starts with ``n_folds n_pairs``; ``pairsDevTrain.txt`` / ``pairsDevTest.txt`` with ``n_pairs``
    (one fold).
    """
    lfw_home = Path(lfw_home)
    path = lfw_home / pairs_file
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: lfw_home must hold LFW's {pairs_file} and {images}/")
    lines = [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
    header = [int(v) for v in lines[0]]
    n_folds, n = (header[0], header[1]) if len(header) == 2 else (1, header[0])
    if len(lines) - 1 != 2 * n_folds * n:
        raise ValueError(f"{path}: header says {n_folds} fold(s) of {n} same + {n} different pairs, "
                         f"but there are {len(lines) - 1} pair lines")

    def img(name, i):
        return lfw_home / images / name / f"{name}_{int(i):04d}.jpg"

    pairs = []
    for k, fields in enumerate(lines[1:]):
        fold, same = k // (2 * n), (k % (2 * n)) < n
        if same and len(fields) == 3:
            pairs.append(Pair(img(fields[0], fields[1]), img(fields[0], fields[2]), True, fold))
        elif not same and len(fields) == 4:
            pairs.append(Pair(img(fields[0], fields[1]), img(fields[2], fields[3]), False, fold))
        else:
            raise ValueError(f"{path}: line {k + 2} {' '.join(fields)!r} should be a "
                             f"{'same' if same else 'different'}-person pair")
    return pairs


def _best_threshold(scores: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """(threshold, accuracy) maximising the accuracy of ``score >= threshold`` <=> same person."""
    order = np.sort(np.unique(scores))
    candidates = np.concatenate([[order[0] - 1e-6], (order[:-1] + order[1:]) / 2, [order[-1] + 1e-6]])
    acc = ((scores[None, :] >= candidates[:, None]) == same[None, :]).mean(axis=1)
    i = int(acc.argmax())
    return float(candidates[i]), float(acc[i])


def fold_metrics(scores: np.ndarray, same: np.ndarray, folds: np.ndarray) -> dict:
    """Per fold: ROC AUC, accuracy at the threshold chosen on the other folds (LFW protocol), the fold's own best
    accuracy and that threshold.  Higher score = more likely the same person."""
    from sklearn.metrics import roc_auc_score

    scores, same, folds = np.asarray(scores, float), np.asarray(same, bool), np.asarray(folds)
    if not (scores.shape == same.shape == folds.shape) or scores.ndim != 1:
        raise ValueError(f"scores, same and folds must be 1-D of one length, got {scores.shape}, {same.shape}, "
                         f"{folds.shape}")
    out = {"fold": [], "auc": [], "accuracy": [], "threshold": [], "best_accuracy": []}
    ids = np.unique(folds)
    for f in ids:
        test = folds == f
        train = ~test if len(ids) > 1 else test
        thr, _ = _best_threshold(scores[train], same[train])
        out["fold"].append(int(f))
        out["auc"].append(float(roc_auc_score(same[test], scores[test])))
        out["accuracy"].append(float(((scores[test] >= thr) == same[test]).mean()))
        out["threshold"].append(thr)
        out["best_accuracy"].append(_best_threshold(scores[test], same[test])[1])
    for k in ("auc", "accuracy", "best_accuracy"):
        out[f"{k}_mean"], out[f"{k}_std"] = float(np.mean(out[k])), float(np.std(out[k]))
    return out


def lfw_verification(encoder, lfw_home: str | os.PathLike, pairs_file: str = "pairs.txt", batch: int = 64,
                     progress: bool = False) -> dict:
    """Verify the pairs of an LFW-style folder with an :class:`~dfs.faces.identity.IdentityEncoder` on dlib chips.

    Every image is detected and aligned with dlib (HOG + 5 points, the largest face; ``get_face_chip`` at the
    encoder's input size, padding 0.25).  Pairs with an image where dlib finds no face are left out and counted in
    ``"no_face"``.  Returns :func:`fold_metrics`' dict plus ``"scores"``, ``"same"``, ``"n_pairs"``, ``"no_face"``.
    """
    from tqdm.auto import tqdm

    from dfs.faces.dlib_chips import face_chips
    from dfs.faces.images import load_image

    pairs = read_lfw_pairs(lfw_home, pairs_file)
    paths = sorted({p for pair in pairs for p in (pair.a, pair.b)})
    chips, missing = {}, []
    for p in tqdm(paths, desc="dlib chips", disable=not progress):
        faces = face_chips(load_image(p), size=encoder.input_size)
        if faces:
            chips[p] = faces[0].chip
        else:
            missing.append(p)
    have = [p for p in paths if p in chips]
    emb = {}
    with torch.no_grad():
        for i in tqdm(range(0, len(have), batch), desc="embed", disable=not progress):
            x = torch.from_numpy(np.stack([chips[p] for p in have[i:i + batch]])).permute(0, 3, 1, 2)
            for p, e in zip(have[i:i + batch], encoder.embed(x).cpu().numpy()):
                emb[p] = e
    kept = [pair for pair in pairs if pair.a in emb and pair.b in emb]
    scores = np.array([float(emb[p.a] @ emb[p.b]) for p in kept])
    same = np.array([p.same for p in kept])
    out = fold_metrics(scores, same, np.array([p.fold for p in kept]))
    out.update(scores=scores, same=same, n_pairs=len(kept), no_face=len(pairs) - len(kept),
               images_without_face=[str(p) for p in missing])
    return out
