"""dlib's aligned face chip: the 150×150 crop its ResNet (and :class:`DlibResNetEncoder`) expects.

``dlib_chip(image, face)`` cuts ``dlib.get_face_chip(image, shape5, size, padding)`` for a
:class:`dfs.faces.detect.Face` found by ``FaceAnalyzer("dlib")`` (its ``dlib5`` points); ``face_chips(image)``
detects every face and cuts its chip, largest first. ``DlibEmbedder`` turns faces into dlib descriptors in batches
(what the preprocessing cache and the metrics use). dlib is imported only when called.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dfs.faces.detect import Face, FaceAnalyzer, _dlib_model


@dataclass
class DlibFace:
    box: tuple[int, int, int, int]   # left, top, right, bottom (pixels)
    landmarks: np.ndarray            # (5, 2) x, y: dlib's 5-point model (eye corners, nose)
    chip: np.ndarray                 # (size, size, 3) uint8 RGB, aligned like dlib.get_face_chip


def dlib_chip(image: np.ndarray, face: Face, size: int = 150, padding: float = 0.25) -> np.ndarray:
    """The (size, size, 3) uint8 chip of ``face``, cut by dlib from its 5-point landmarks (computed if absent)."""
    import dlib

    image = np.ascontiguousarray(image)
    rect = dlib.rectangle(*(int(round(v)) for v in face.box))
    if face.dlib5 is not None:
        shape = dlib.full_object_detection(rect, [dlib.point(int(round(x)), int(round(y))) for x, y in face.dlib5])
    else:
        shape = _dlib_model("sp5")(image, rect)
    return np.asarray(dlib.get_face_chip(image, shape, size=size, padding=padding))


def face_chips(image: np.ndarray, size: int = 150, padding: float = 0.25, upsample: int = 1) -> list[DlibFace]:
    """Every face dlib's HOG detector finds in ``image`` ((H, W, 3) uint8 RGB), largest box first."""
    if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8):
        desc = f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"image must be an (H, W, 3) uint8 RGB array, got {desc}; "
                         f"use dfs.faces.images.load_image(path)")
    faces = FaceAnalyzer("dlib", upsample=upsample, max_side=max(image.shape[:2])).detect(image)
    return [DlibFace(tuple(int(round(v)) for v in f.box), f.dlib5.astype(np.float32),
                     dlib_chip(image, f, size, padding)) for f in faces]


class DlibEmbedder:
    """dlib's ResNet descriptor, computed by :class:`dfs.faces.identity.DlibResNetEncoder` (PyTorch) on the chip
    ``dlib.get_face_chip(image, dlib5, 150, 0.25)`` -- what dlib's own ``compute_face_descriptor`` sees.
    Calling it returns the unit vector (``embed``); ``chip`` + ``embed_chips`` run in batches."""

    name = "dlib_resnet_v1"

    def __init__(self, encoder=None, batch_size: int = 32):
        from dfs.faces.identity import DlibResNetEncoder
        self.encoder = encoder if encoder is not None else DlibResNetEncoder()
        self.batch_size = batch_size

    def chip(self, image: np.ndarray, face: Face) -> np.ndarray:
        return dlib_chip(image, face, size=150, padding=0.25)

    def embed_chips(self, chips: np.ndarray) -> np.ndarray:
        """(N, 150, 150, 3) uint8 chips -> (N, 128) float32 unit vectors."""
        import torch
        with torch.no_grad():
            return self.encoder.embed(torch.from_numpy(np.ascontiguousarray(chips)).permute(0, 3, 1, 2)).cpu().numpy()

    def __call__(self, image: np.ndarray, face: Face) -> np.ndarray:
        return self.embed_chips(self.chip(image, face)[None])[0].astype(np.float32)
