"""The swap models' training data: aligned faces of the training identities as tensors, and the pair sampler.

Shared by the diffusion swap (:mod:`dfs.swap.diffusion`) and FaceShifter (:mod:`dfs.swap.faceshifter_train`): the
same identity split (``held_out`` / ``split_seed``, the one ``dfs eval`` uses), the same preprocessing cache
(:mod:`dfs.data.face_cache`), the same (target, source) pairs.  :func:`warped_references` gives the diffusion swap
its pixel reference of the source: the source crop warped onto the target's landmarks (the classical swap's warp).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from dfs import smoke
from dfs.data.face_cache import build_face_cache, load_face_cache
from dfs.data.faces import FaceImages, load_faces
from dfs.faces.align import mirror_landmarks68
from dfs.faces.identity_chips import FaceEmbedder, chip_matrices, identity_encoder, identity_of_crops
from dfs.swap.classical import warp_source_onto_target
from dfs.swap.config import SwapConfig


def warped_references(sources_uint8, sources_landmarks68, targets_uint8, targets_landmarks68,
                      generator: torch.Generator | None = None, warp_jitter: float = 0.0,
                      colour_jitter: float = 0.0, blur_prob: float = 0.0) -> torch.Tensor:
    """r: each source crop warped onto its target's landmarks and colour-matched to it (the classical swap's steps
    1-3, :func:`dfs.swap.classical.warp_source_onto_target`), as (B, 3, S, S) in [−1, 1].

    With a ``generator`` (training), each reference is degraded so that the model learns to repair what a warp of
    another photo gets wrong: landmark noise of standard deviation ``warp_jitter`` · S before the warp, a gain
    1 + ``colour_jitter`` · N(0, 1) per channel and an offset ``colour_jitter`` · N(0, 1) after it, and with
    probability ``blur_prob`` a Gaussian blur of standard deviation U(0.3, 1.2) · S/64 pixels."""
    import torchvision.transforms.functional as TF

    out = []
    for src, src_lm, tgt, tgt_lm in zip(sources_uint8, sources_landmarks68, targets_uint8, targets_landmarks68):
        S = tgt.shape[0]
        src_lm = np.asarray(src_lm, np.float64)
        if generator is not None and warp_jitter > 0:
            src_lm = src_lm + torch.randn(68, 2, generator=generator).double().numpy() * warp_jitter * S
        r = torch.from_numpy(warp_source_onto_target(np.asarray(src), src_lm, np.asarray(tgt),
                                                     np.asarray(tgt_lm))).permute(2, 0, 1).float() / 127.5 - 1
        if generator is not None:
            gain = 1 + colour_jitter * torch.randn(3, 1, 1, generator=generator)
            offset = colour_jitter * torch.randn(1, generator=generator)
            r = (r * gain + offset).clamp(-1, 1)
            if torch.rand(1, generator=generator).item() < blur_prob:
                sigma = (0.3 + 0.9 * torch.rand(1, generator=generator).item()) * S / 64
                r = TF.gaussian_blur(r[None], 2 * math.ceil(2 * sigma) + 1, sigma)[0]
        out.append(r)
    return torch.stack(out)




def to_unit(crops_uint8: np.ndarray) -> torch.Tensor:
    """(N, S, S, 3) uint8 -> (N, 3, S, S) float in [−1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(crops_uint8)).permute(0, 3, 1, 2).float() / 127.5 - 1


def to_uint8(crops: torch.Tensor) -> np.ndarray:
    """(N, 3, S, S) float in [−1, 1] -> (N, S, S, 3) uint8 (the inverse of :func:`to_unit`)."""
    return ((crops.detach().cpu().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


class SwapData:
    """Aligned training faces as tensors, and the pair sampler the Trainer calls: ``data(step, generator)`` draws
    ``batch_size`` targets uniformly among faces whose person has another photo, and for each a source photo of
    the same person (not the same photo).  Returns (target, mask, landmarks68, source embedding, chip matrix).

    ``flip``: each target is mirrored left-right with probability 1/2 (crop, mask, and landmarks through
    :func:`dfs.faces.align.mirror_landmarks68`); a person's identity does not change in a mirror, so the source's
    embedding stays, and the data the model sees doubles.

    ``source_pixels``: a 6th element, the source photo's crop warped onto the target's landmarks and degraded
    (:func:`warped_references` with ``augment``: its ``warp_jitter``, ``colour_jitter`` and ``blur_prob``) -- a
    self-reconstruction: the model learns to turn another photo of the person, warped, into this photo."""

    def __init__(self, crops: torch.Tensor, masks: torch.Tensor, landmarks68: torch.Tensor,
                 embeddings: torch.Tensor, identities, batch_size: int, chip_M: torch.Tensor | None = None,
                 flip: bool = False, source_pixels: bool = False, augment: dict | None = None,
                 p_cross: float = 0.0, cross_after: int = 0):
        n = len(crops)
        if not (len(masks) == len(landmarks68) == len(embeddings) == len(identities) == n):
            raise ValueError("crops, masks, landmarks68, embeddings and identities need one row per face")
        ids = np.asarray(identities).astype(str)
        order = np.argsort(ids, kind="stable")
        self.crops, self.masks = crops[order], masks[order]
        self.landmarks68, self.embeddings = landmarks68[order].float(), embeddings[order].float()
        self.identities = ids[order]
        self.chip_M = (chip_M[order] if chip_M is not None else chip_matrices(self.landmarks68))
        _, start, count = np.unique(self.identities, return_index=True, return_counts=True)
        group = np.repeat(np.arange(len(start)), count)
        self._start, self._count = torch.from_numpy(start[group]), torch.from_numpy(count[group])
        self._usable = torch.from_numpy(np.nonzero(count[group] >= 2)[0])
        if len(self._usable) == 0:
            raise ValueError("training pairs need at least one person with two or more photos")
        self.batch_size, self.flip = batch_size, bool(flip)
        if self.flip:
            self.landmarks68_mirrored = mirror_landmarks68(self.landmarks68, self.crops.shape[-1])
            self.chip_M_mirrored = chip_matrices(self.landmarks68_mirrored)
        self.source_pixels, self.augment = bool(source_pixels), dict(augment or {})
        if p_cross and not self.source_pixels:
            raise ValueError("cross-identity training pairs (p_cross > 0) need source_pixels: their x_0 is the warp")
        self.p_cross, self.cross_after = float(p_cross), int(cross_after)
        unknown = set(self.augment) - {"warp_jitter", "colour_jitter", "blur_prob"}
        if unknown:
            raise ValueError(f"augment takes warp_jitter, colour_jitter and blur_prob, got {sorted(unknown)}")

    @classmethod
    def from_aligned(cls, faces, identities, batch_size: int, flip: bool = False, source_pixels: bool = False,
                     augment: dict | None = None) -> "SwapData":
        """From :class:`~dfs.swap.pipeline.AlignedFace` s (``SwapPipeline.align``) and their people's names: the
        identity vectors come from the full photos (the chips dlib cuts, as in the training cache)."""

        emb = torch.from_numpy(FaceEmbedder(identity_encoder("cpu"))([(a.image, a.face) for a in faces])).float()
        return cls(to_unit(np.stack([a.crop for a in faces])),
                   torch.from_numpy(np.stack([a.mask for a in faces]))[:, None].float(),
                   torch.from_numpy(np.stack([a.landmarks68 for a in faces])).float(), emb, list(identities),
                   batch_size, flip=flip, source_pixels=source_pixels, augment=augment)

    def __len__(self) -> int:
        return len(self.crops)

    @property
    def people(self) -> int:
        return len(set(self.identities))

    def pairs(self, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(target indices, source indices): same person, different photos."""
        i = self._usable[torch.randint(0, len(self._usable), (batch,), generator=generator)]
        return i, self._other_photos(i, generator)

    def distinct_pairs(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Like :meth:`pairs`, but ``n`` *different* targets (every usable face once when there are fewer): for
        per-image statistics, where a face drawn twice would count twice."""
        i = self._usable[torch.randperm(len(self._usable), generator=generator)[:n]]
        return i, self._other_photos(i, generator)

    def _other_photos(self, i: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """For each target index, a uniformly drawn other photo of the same person."""
        start, count = self._start[i], self._count[i]
        shift = 1 + (torch.rand(len(i), generator=generator) * (count - 1).double()).long()   # 1 .. count-1
        return start + (i - start + shift) % count

    def __call__(self, step: int, generator: torch.Generator):
        i, j = self.pairs(self.batch_size, generator)
        cross = None
        if self.p_cross > 0 and step >= self.cross_after:   # no draws before: earlier steps stay as they were
            cross = torch.rand(len(i), generator=generator) < self.p_cross
            other = self.other_person(i, generator)
            j = torch.where(cross, other, j)
        return self.batch(i, j, generator, cross)

    def other_person(self, i, generator: torch.Generator) -> torch.Tensor:
        """For each target index, a uniformly drawn face of another person."""
        j = torch.randint(0, len(self) - 1, (len(i),), generator=generator)
        for k in range(len(i)):        # draw again until the person differs (most people hold < 5 % of faces)
            while self.identities[j[k]] == self.identities[i[k]]:
                j[k] = torch.randint(0, len(self), (1,), generator=generator)
        return j

    def batch(self, i, j, generator: torch.Generator, cross: torch.Tensor | None = None):
        """The training batch for targets ``i`` and sources ``j`` (flips and degradations drawn from
        ``generator``): (target, mask, landmarks68, source embedding, chip matrix[, warped source]).

        ``cross`` marks *cross-identity* samples (source j of another person, ``source_pixels`` only): their
        x_0 is the target with the clean (undegraded) warp of the source inside the mask, so the model learns to
        keep the source's pixels where the target's context suggests another face, and the identity loss pulls
        towards the source's embedding."""
        crops, masks, lm, chip = self.crops[i], self.masks[i], self.landmarks68[i], self.chip_M[i]
        if self.flip:
            f = torch.rand(len(i), generator=generator) < 0.5
            crops, masks = torch.where(f[:, None, None, None], crops.flip(-1), crops), \
                torch.where(f[:, None, None, None], masks.flip(-1), masks)
            lm = torch.where(f[:, None, None], self.landmarks68_mirrored[i], lm)
            chip = torch.where(f[:, None, None], self.chip_M_mirrored[i], chip)
        if not self.source_pixels:
            return (crops, masks, lm, self.embeddings[j], chip)
        ref = warped_references(to_uint8(self.crops[j]), self.landmarks68[j], to_uint8(crops), lm, generator,
                                **self.augment)
        if cross is not None and cross.any():
            k = torch.nonzero(cross).flatten()
            clean = warped_references(to_uint8(self.crops[j[k]]), self.landmarks68[j[k]], to_uint8(crops[k]), lm[k])
            crops = crops.clone()
            crops[k] = masks[k] * clean + (1 - masks[k]) * crops[k]
        return (crops, masks, lm, self.embeddings[j], chip, ref)

    def references(self, i, j) -> torch.Tensor:
        """The warped sources (no degradation) for targets ``i`` and sources ``j``."""
        return warped_references(to_uint8(self.crops[j]), self.landmarks68[j], to_uint8(self.crops[i]),
                                 self.landmarks68[i])


def prepare_training_data(config: SwapConfig, progress: bool = True, split: str = "train") -> SwapData:
    """The training identities (``held_out`` / ``split_seed`` split, the one ``dfs eval`` uses) of ``config.data``,
    aligned at ``image_size`` through the preprocessing cache (built once, re-used).  ``split="held_out"``: the
    held-out identities instead (for validation; cached in a folder of their own)."""
    if split not in ("train", "held_out"):
        raise ValueError(f"split must be 'train' or 'held_out', got {split!r}")
    faces = load_faces(config.data)
    train, held = faces.split(config.held_out, config.split_seed)
    train = train if split == "train" else held
    seen: dict[str, int] = {}
    keep = []
    for r in train.records:
        seen[r.identity] = seen.get(r.identity, 0) + 1
        if seen[r.identity] <= config.max_per_identity:
            keep.append(r)
    train = FaceImages(keep, name=train.name)
    cache = config.resolved_cache_dir()
    cache = cache if split == "train" else cache.with_name(cache.name + "_held_out")
    report = build_face_cache(train, cache, size=config.image_size, template=config.template, embed="dlib",
                              progress=progress)
    if progress:
        print(f"training faces: {report}")
    a = load_face_cache(cache)
    wanted = {str(p) for p in train.paths}
    rows = np.array([str(p) in wanted for p in a["path"]])
    return SwapData(to_unit(a["crop"][rows]), torch.from_numpy(a["mask"][rows]).float()[:, None] / 255.0,
                    torch.from_numpy(a["landmarks68"][rows]).float(), torch.from_numpy(a["embedding"][rows]),
                    a["identity"][rows], config.batch_size, flip=config.flip and split == "train",
                    source_pixels=config.source_pixels,
                    augment={"warp_jitter": config.warp_jitter, "colour_jitter": config.colour_jitter,
                             "blur_prob": config.blur_prob},
                    p_cross=config.p_cross if split == "train" else 0.0, cross_after=config.cross_after)


def cross_pairs(data: SwapData, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` (target, source) index pairs of *different* people (a swap, not a reconstruction), drawn with
    ``seed``; ``dfs reproduce --smoke`` keeps ``max_eval_pairs`` of them (the identity scores and the swap grids
    of notebooks 06–08 take their pairs here)."""
    n = smoke.cap(n, "max_eval_pairs")
    g = torch.Generator().manual_seed(seed)
    i = torch.randint(0, len(data), (n,), generator=g)
    j = torch.randint(0, len(data), (n,), generator=g)
    for k in range(n):
        while data.identities[j[k]] == data.identities[i[k]]:
            j[k] = torch.randint(0, len(data), (1,), generator=g)
    return i, j


def identity_cosines(out: torch.Tensor, data: SwapData, i, j, blur: float = 0.0) -> dict:
    """Mean cosines of ID(``out``) (crops aligned like ``data.crops[i]``) to the sources' embeddings
    ``data.embeddings[j]`` and to the targets' ``data.embeddings[i]`` (and the per-pair values).  ``blur``: a Gaussian blur (standard
    deviation, pixels) first — a check that the identity is not a high-frequency pattern that only the identity
    network (the loss's, and the metric's) reads."""
    if blur > 0:
        import torchvision.transforms.functional as TF
        out = TF.gaussian_blur(out, 2 * math.ceil(2 * blur) + 1, blur)
    e = identity_of_crops(out, data.chip_M[i])
    to_source, to_target = (e * data.embeddings[j]).sum(-1), (e * data.embeddings[i]).sum(-1)
    return {"cos_source": float(to_source.mean()), "cos_target": float(to_target.mean()),
            "per_pair_source": to_source.tolist(), "per_pair_target": to_target.tolist()}
