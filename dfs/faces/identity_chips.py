"""Identity embeddings at inference and in training losses: one home for the chips an identity network sees.

* :class:`FaceEmbedder`: (photo, detected face) -> unit identity vector, for any
  :class:`~dfs.faces.identity.IdentityEncoder` (dlib's ResNet on dlib's own chip, ArcFace on its template);
* :func:`chip_matrix` / :func:`chip_matrices`: the map from an aligned crop to dlib's 150-pixel face chip, read off
  dlib's own chip geometry;
* :func:`identity_of_crops`: ID(x), differentiable in the crop (the identity loss of the diffusion swap and of
  FaceShifter, and identity guidance), through :func:`identity_encoder` (dlib's ResNet, loaded once per process).

The swap methods embed their sources with these; :mod:`dfs.metrics` judges with the same :class:`FaceEmbedder`.
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

import numpy as np
import torch

from dfs.faces.align import alignment_matrix, warp_affine, warp_image
from dfs.faces.dlib_chips import DlibEmbedder
from dfs.faces.identity import DlibResNetEncoder

CHIP_SIZE, CHIP_PADDING = 150, 0.25          # dlib's face-recognition chip


def chip_matrix(landmarks68, size: int = CHIP_SIZE, padding: float = CHIP_PADDING) -> np.ndarray:
    """The (2, 3) map from the image the landmarks live in to dlib's face chip (``dlib.get_face_chip`` geometry:
    ``get_face_chip_details`` on the 68 points; the chip's corners are the detail rectangle's corners rotated by
    its angle about its centre, dlib's ``get_mapping_to_chip``)."""
    import cv2
    import dlib

    lm = np.asarray(landmarks68, np.float64)
    if lm.shape != (68, 2):
        raise ValueError(f"landmarks68 must be (68, 2), got {lm.shape}")
    k = 16.0  # dlib points are integers: scale by k (1/16-pixel precision), undo it on the matrix below
    pts = np.round(lm * k)
    x0, y0 = pts.min(0)
    x1, y1 = pts.max(0)
    rect = dlib.rectangle(int(x0), int(y0), int(x1), int(y1))
    det = dlib.full_object_detection(rect, [dlib.point(int(x), int(y)) for x, y in pts])
    d = dlib.get_face_chip_details(det, size, padding)
    c = np.array([(d.rect.left() + d.rect.right()) / 2, (d.rect.top() + d.rect.bottom()) / 2])
    R = np.array([[math.cos(d.angle), -math.sin(d.angle)], [math.sin(d.angle), math.cos(d.angle)]])
    corners = np.array([[d.rect.left(), d.rect.top()], [d.rect.right(), d.rect.top()],
                        [d.rect.right(), d.rect.bottom()]], np.float64)
    src = (corners - c) @ R.T + c
    dst = np.array([[0, 0], [d.cols - 1, 0], [d.cols - 1, d.rows - 1]], np.float64)
    A = cv2.getAffineTransform(src.astype(np.float32), dst.astype(np.float32)).astype(np.float64)
    return A @ np.diag([k, k, 1.0])


def chip_matrices(landmarks68) -> torch.Tensor:
    """(B, 68, 2) -> (B, 2, 3) float32 crop -> chip matrices."""
    lm = np.asarray(torch.as_tensor(landmarks68).detach().cpu(), np.float64)
    return torch.from_numpy(np.stack([chip_matrix(p) for p in lm])).float()


@functools.lru_cache(maxsize=4)
def identity_encoder(device: str = "cpu"):
    """dlib's ResNet (frozen, differentiable in its input) on ``device``, loaded once per process."""
    return DlibResNetEncoder().to(device)


def identity_of_crops(x: torch.Tensor, chip_M: torch.Tensor, encoder=None) -> torch.Tensor:
    """ID(x): unit identity vectors (B, 128) of crops ``x`` in [−1, 1], through the chips ``chip_M`` (B, 2, 3)
    cut differentiably (``warp_affine``)."""
    enc = encoder if encoder is not None else identity_encoder(str(x.device))
    chips = warp_affine(((x.float() + 1) / 2).clamp(0, 1), chip_M.to(x.device), CHIP_SIZE, padding_mode="border")
    return enc.embed(chips.clamp(0, 1))


def random_view(x: torch.Tensor, chip_M: torch.Tensor, generator: torch.Generator | None = None):
    """(x blurred, chip matrices shifted): one random view of a batch of crops for :func:`identity_of_crops`, a
    Gaussian blur of σ ~ U(0.5, 1.5) crop pixels and a shift of the chip by U(−2, 2) chip pixels, both shared by
    the batch.  Averaging an identity score over such views is an expectation over transformations (Athalye et al.
    2018, eq. 1): a pixel pattern that only the sharp, exactly placed chip reads cannot raise it."""
    import torchvision.transforms.functional as TF

    sigma = float(torch.empty(()).uniform_(0.5, 1.5, generator=generator))
    shift = torch.empty(2).uniform_(-2.0, 2.0, generator=generator).to(chip_M)
    x = TF.gaussian_blur(x, 2 * math.ceil(2 * sigma) + 1, sigma)
    return x, torch.cat([chip_M[:, :, :2], chip_M[:, :, 2:] + shift[:, None]], dim=2)


class FaceEmbedder:
    """(photo, detected face) -> unit identity vector, for any :class:`~dfs.faces.identity.IdentityEncoder`.

    dlib's ResNet gets the chip it was trained on (``dlib.get_face_chip(photo, dlib5, 150, 0.25)``, cut by
    :meth:`dfs.faces.dlib_chips.dlib_chip`); other encoders (ArcFace) get a crop aligned to the ArcFace
    template at their input size."""

    def __init__(self, encoder=None):
        self.encoder = encoder if encoder is not None else DlibResNetEncoder()
        self.is_dlib = isinstance(self.encoder, DlibResNetEncoder)
        self._dlib = DlibEmbedder(self.encoder) if self.is_dlib else None
        self.name = type(self.encoder).__name__

    def crop(self, image: np.ndarray, face) -> np.ndarray:
        if self.is_dlib:
            return self._dlib.chip(np.ascontiguousarray(image), face)
        size = self.encoder.input_size
        return warp_image(image, alignment_matrix(face.landmarks5, "arcface", size), size)

    def __call__(self, items: Sequence[tuple[np.ndarray, object]], batch: int = 32) -> np.ndarray:
        """(N, D) unit vectors for a list of (photo, face)."""
        crops = [self.crop(im, f) for im, f in items]
        out = []
        with torch.no_grad():
            for i in range(0, len(crops), batch):
                x = torch.from_numpy(np.stack(crops[i:i + batch])).permute(0, 3, 1, 2)
                out.append(self.encoder.embed(x).cpu().numpy().astype(np.float64))
        return np.concatenate(out) if out else np.zeros((0, getattr(self.encoder, "dim", 128)))

    def embed_paths(self, paths, analyzer=None, progress: bool = False) -> tuple[dict, list]:
        """Detect the largest face of each photo file and embed it: ({path: (D,) unit vector}, [paths where no face
        was found or the file is unreadable])."""
        from tqdm.auto import tqdm

        from dfs.faces.detect import FaceAnalyzer, FaceNotFoundError
        from dfs.faces.images import BadImageError, load_image
        analyzer = analyzer or FaceAnalyzer()
        items, found, missing = [], [], []
        for p in tqdm(list(paths), desc="detect + embed", disable=not progress):
            try:
                image = load_image(p)
                items.append((image, analyzer.largest(image, name=str(p))))
                found.append(p)
            except (FaceNotFoundError, BadImageError):
                missing.append(p)
        return dict(zip(found, self(items))), missing
