"""The face-swap protocol: how a (source, target, result) triple is judged, one function per measurement.

    judge = SwapJudge(gallery=Gallery.from_faces(...))   # dlib ResNet encoder + dlib landmarks by default
    rows = [judge.triple(t) for t in triples]            # per triple: cosines, rank, pose / expression errors
    summary = summarise(rows)                            # means, top-1 / top-5, counts

What each number means (the result should carry the SOURCE's identity and the TARGET's pose and expression):

* **ID cosine to source** ``cos(e(result), e(source))`` with ``e`` a unit identity embedding
  (:mod:`dfs.faces.identity`; dlib's ResNet by default).  Also reported: the cosine to the target.
* **ID retrieval top-1 / top-5**: the result's nearest identities in a gallery of held-out people (each person
  represented by the normalised mean of their photos' embeddings, with the triple's own source and target photos
  left out); a hit when the source's identity ranks first / among the first five.
* **Pose error**: yaw, pitch and roll of result and target from 68 landmarks (``head_pose``: ``cv2.solvePnP`` of a
  3-D mean face), the per-triple error the Euclidean norm of the three wrapped angle differences, in degrees.
* **Expression error**: the normalised mean error (NME) of the inner 51 landmarks (brows, eyes, nose, mouth) of the
  result against the target's after removing translation, rotation and scale (a least-squares similarity,
  Umeyama 1991), in percent of the target's outer-eye-corner distance.  Out-of-plane pose differences are not
  removed by a 2-D similarity and leak into it.
* **Per-part landmark errors** (JSON only: ``landmark_error_jaw``, ``_brows``, ``_nose``, ``_eyes``, ``_mouth``):
  mean landmark distance of each part, unaligned, in the same units: where a pose error comes from.  dlib's 68
  points are fitted jointly, so even the jaw points move when only the inner face changes.
* **PSNR / SSIM** where a ground truth exists (e.g. swapping a face onto itself).
* **FID / KID** (Inception features, torchmetrics) only when its Inception weights load; otherwise, and always in
  addition, the **ID-feature FD**: the Fréchet distance between Gaussians fitted to identity-encoder features of
  the results and of real photos.  It is *not* FID (other features, tiny sample sizes) and is labelled so.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from dfs.faces.identity_chips import FaceEmbedder  # noqa: F401  (judging and swapping embed alike)
from dfs.stats import bootstrap_interval

# ---------------------------------------------------------------------------------------------------------------
# head pose from 68 landmarks

# A generic 3-D mean face at 14 of the iBUG 68 points: insightface's mean 68-point shape (python-package
# ``insightface/data/objects/meanshape_68.pkl``, the model ``insightface.model_zoo.landmark`` estimates head pose
# with), rounded to 4 decimals.  Converted to OpenCV's camera convention (x right, y down, z away from the camera;
# insightface's z points towards the viewer, so z here = -z there): a frontal face has rotation I, its nose tip
# is the point nearest to the camera.  Units: about 0.76 between the outer eye corners.  The points are the rigid
# part of a face plus the chin and mouth corners (the classic 6-point set of nose tip, chin, eye and mouth
# corners, extended by the jaw ends, nose bridge, nostrils and inner eye corners).
MEAN_FACE_68_INDEX = (0, 8, 16, 27, 30, 31, 33, 35, 36, 39, 42, 45, 48, 54)
MEAN_FACE_3D = np.array([
    [-0.6267, -0.2927, 0.3140],    # 0  jaw, at the right ear (image left)
    [0.0015, 0.5844, -0.3884],     # 8  chin
    [0.6275, -0.3077, 0.3020],     # 16 jaw, at the left ear (image right)
    [-0.0076, -0.3231, -0.4619],   # 27 nose bridge (between the eyes)
    [-0.0073, -0.1426, -0.5987],   # 30 nose tip
    [-0.1450, 0.0331, -0.4197],    # 31 nostril, image left
    [-0.0055, 0.0398, -0.5147],    # 33 nose base
    [0.1340, 0.0220, -0.4191],     # 35 nostril, image right
    [-0.3868, -0.3134, -0.2596],   # 36 outer corner of the eye on the image's left
    [-0.1552, -0.3152, -0.3143],   # 39 its inner corner
    [0.1390, -0.3098, -0.3183],    # 42 inner corner of the other eye
    [0.3767, -0.3135, -0.2632],    # 45 its outer corner
    [-0.2014, 0.2374, -0.3795],    # 48 mouth corner, image left
    [0.2182, 0.2390, -0.3757],     # 54 mouth corner, image right
])

INNER_68 = tuple(range(17, 68))   # brows, nose, eyes, mouth: the points an expression moves
OUTER_EYE_CORNERS = (36, 45)


def camera_matrix(image_size: tuple[int, int], focal: float | None = None) -> np.ndarray:
    """A pinhole camera for an (H, W) photo whose focal length is unknown: f = max(H, W) pixels (about a 53°
    field of view), principal point at the image centre, square pixels, no distortion."""
    H, W = image_size
    f = float(max(H, W)) if focal is None else float(focal)
    return np.array([[f, 0.0, (W - 1) / 2.0], [0.0, f, (H - 1) / 2.0], [0.0, 0.0, 1.0]])


def euler_to_rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """R = Rz(roll) Ry(yaw) Rx(pitch) from degrees, in the camera frame (x right, y down, z forward).

    For a face modelled like ``MEAN_FACE_3D`` (nose towards -z): positive yaw turns the nose towards the image's
    left (the person's own right), positive pitch tilts it down, positive roll turns the face clockwise on
    screen (y points down).  Zero for all three: a frontal face looking into the camera."""
    y, p, r = (math.radians(v) for v in (yaw, pitch, roll))
    Rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    Ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    Rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return Rz @ Ry @ Rx


def rotation_to_euler(R: np.ndarray) -> np.ndarray:
    """The inverse of ``euler_to_rotation``: (yaw, pitch, roll) in degrees, yaw in [-90, 90].

    With R = Rz(r) Ry(y) Rx(p): R[2,0] = -sin y, R[2,1] = cos y sin p, R[2,2] = cos y cos p,
    R[1,0] = sin r cos y, R[0,0] = cos r cos y."""
    R = np.asarray(R, dtype=np.float64)
    yaw = math.atan2(-R[2, 0], math.hypot(R[2, 1], R[2, 2]))
    pitch = math.atan2(R[2, 1], R[2, 2])
    roll = math.atan2(R[1, 0], R[0, 0])
    return np.degrees([yaw, pitch, roll])


def head_pose(landmarks68, image_size: tuple[int, int], focal: float | None = None) -> np.ndarray:
    """(yaw, pitch, roll) in degrees of a face from its (68, 2) landmarks in an (H, W) image.

    Solves the perspective-n-point problem for ``MEAN_FACE_3D`` and the matching 14 landmarks with
    ``cv2.solvePnP`` (EPnP to start, then Levenberg-Marquardt on the reprojection error), camera from
    ``camera_matrix``, and decomposes the rotation as in ``euler_to_rotation``.  An in-plane rotation of the
    photo about its centre by +θ (clockwise on screen) adds θ to the roll and leaves yaw and pitch unchanged.
    """
    import cv2

    lm = np.asarray(landmarks68, dtype=np.float64)
    if lm.shape != (68, 2) or not np.isfinite(lm).all():
        raise ValueError(f"landmarks68 must be a finite (68, 2) array of x, y pixels, got shape {lm.shape}")
    if len(image_size) < 2 or min(image_size[:2]) < 1:
        raise ValueError(f"image_size must be (height, width) in pixels, got {image_size!r}")
    K = camera_matrix(tuple(image_size[:2]), focal)
    obj = MEAN_FACE_3D.reshape(-1, 1, 3)
    img = lm[list(MEAN_FACE_68_INDEX)].reshape(-1, 1, 2)
    ok, rvec, tvec = cv2.solvePnP(obj, img, K, None, flags=cv2.SOLVEPNP_EPNP)
    if ok:
        ok, rvec, tvec = cv2.solvePnP(obj, img, K, None, rvec, tvec, useExtrinsicGuess=True,
                                      flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok or tvec[2, 0] <= 0:  # EPnP failed or chose the mirror pose behind the camera: start frontal
        span = np.ptp(img[:, 0, 0]) / np.ptp(MEAN_FACE_3D[:, 0])      # pixels per model unit at the face
        z = K[0, 0] / max(span, 1e-6)
        u, v = img[:, 0].mean(0)
        t0 = np.array([[(u - K[0, 2]) * z / K[0, 0]], [(v - K[1, 2]) * z / K[1, 1]], [z]])
        ok, rvec, tvec = cv2.solvePnP(obj, img, K, None, np.zeros((3, 1)), t0, useExtrinsicGuess=True,
                                      flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        raise ValueError("cv2.solvePnP found no head pose for these landmarks (degenerate points?)")
    R, _ = cv2.Rodrigues(rvec)
    return rotation_to_euler(R)


def wrap_degrees(a):
    """Angles (or angle differences) wrapped to (-180, 180]."""
    a = np.asarray(a, dtype=np.float64)
    return 180.0 - np.mod(180.0 - a, 360.0)


def pose_error(pose_a, pose_b) -> float:
    """The Euclidean norm of the wrapped (yaw, pitch, roll) differences, in degrees."""
    return float(np.linalg.norm(wrap_degrees(np.asarray(pose_a, float) - np.asarray(pose_b, float))))


# ---------------------------------------------------------------------------------------------------------------
# expression


def expression_error(landmarks, reference, points: Sequence[int] = INNER_68) -> float:
    """NME (%) of ``landmarks`` against ``reference`` (both (68, 2)) after a least-squares similarity.

    The ``points`` of ``landmarks`` are mapped onto those of ``reference`` by the similarity minimising the squared
    distances (Umeyama 1991, eqs. 40-42: translation, rotation, scale); the error is the mean point distance
    divided by the reference's outer-eye-corner distance (points 36, 45), times 100.  Zero for any rotated,
    scaled or shifted copy of the reference.
    """
    from dfs.faces.align import apply_affine, umeyama

    a, b = np.asarray(landmarks, np.float64), np.asarray(reference, np.float64)
    if a.shape != (68, 2) or b.shape != (68, 2):
        raise ValueError(f"landmarks and reference must be (68, 2) arrays, got {a.shape} and {b.shape}")
    idx = list(points)
    M = umeyama(a[idx], b[idx])
    aligned = apply_affine(M, a[idx])
    iod = float(np.linalg.norm(b[OUTER_EYE_CORNERS[0]] - b[OUTER_EYE_CORNERS[1]]))
    if iod <= 1e-9:
        raise ValueError("the reference's outer eye corners (points 36 and 45) coincide: not a face")
    return float(np.linalg.norm(aligned - b[idx], axis=1).mean() / iod * 100.0)


def landmark_errors(landmarks, reference) -> dict[str, float]:
    """Mean point distance of each part of the face (``dfs.faces.align.IBUG68_GROUPS``: jaw, brows, nose, eyes,
    mouth) between ``landmarks`` and ``reference`` (both (68, 2), same image), in % of the reference's
    outer-eye-corner distance.  No alignment: unlike :func:`expression_error`, a shifted or turned face counts, so
    this says *where* a pose error comes from."""
    from dfs.faces.align import IBUG68_GROUPS

    a, b = np.asarray(landmarks, np.float64), np.asarray(reference, np.float64)
    if a.shape != (68, 2) or b.shape != (68, 2):
        raise ValueError(f"landmarks and reference must be (68, 2) arrays, got {a.shape} and {b.shape}")
    iod = float(np.linalg.norm(b[OUTER_EYE_CORNERS[0]] - b[OUTER_EYE_CORNERS[1]]))
    if iod <= 1e-9:
        raise ValueError("the reference's outer eye corners (points 36 and 45) coincide: not a face")
    d = np.linalg.norm(a - b, axis=1) / iod * 100.0
    return {g: float(d[list(idx)].mean()) for g, idx in IBUG68_GROUPS.items()}


# ---------------------------------------------------------------------------------------------------------------
# ground-truth comparisons


def _pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"images must have the same shape, got {a.shape} and {b.shape}")
    return a.astype(np.float64), b.astype(np.float64)


def psnr(image, reference, mask=None, data_range: float = 255.0) -> float:
    """Peak signal-to-noise ratio 10 log10(range^2 / MSE) in dB; ``inf`` for identical images.

    ``mask`` ((H, W) weights in [0, 1], e.g. the face mask) restricts the MSE to a region (a weighted mean)."""
    a, b = _pair(image, reference)
    se = (a - b) ** 2
    if se.ndim == 3:
        se = se.mean(axis=2)
    if mask is None:
        mse = se.mean()
    else:
        w = np.asarray(mask, np.float64)
        if w.shape != se.shape:
            raise ValueError(f"mask must have the image's (H, W) = {se.shape}, got {w.shape}")
        if w.sum() <= 0:
            raise ValueError("the mask is empty: there is nothing to compare")
        mse = (se * w).sum() / w.sum()
    return float("inf") if mse == 0 else float(10.0 * math.log10(data_range ** 2 / mse))


def ssim(image, reference, data_range: float = 255.0) -> float:
    """Structural similarity (Wang et al. 2004, eq. 13; scikit-image's 7x7 uniform windows, channels averaged)."""
    from skimage.metrics import structural_similarity

    a, b = _pair(image, reference)
    if min(a.shape[:2]) < 7:
        raise ValueError(f"SSIM needs images of at least 7x7 pixels, got {a.shape[:2]}")
    return float(structural_similarity(a, b, data_range=data_range, channel_axis=2 if a.ndim == 3 else None))


# ---------------------------------------------------------------------------------------------------------------
# identity


def cosine(a, b) -> np.ndarray:
    """Row-wise cosine similarity of (..., D) vectors."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    na, nb = np.linalg.norm(a, axis=-1), np.linalg.norm(b, axis=-1)
    if (na == 0).any() or (nb == 0).any():
        raise ValueError("cosine of a zero vector is undefined")
    return (a * b).sum(-1) / (na * nb)


@dataclass
class Gallery:
    """Identity embeddings of real photos of the people a result may be retrieved as (held-out identities)."""

    embeddings: np.ndarray           # (G, D) unit vectors
    identities: list[str]            # (G,) the person of each row
    keys: list[str]                  # (G,) the photo of each row (its path), so a triple can leave its own out

    def __post_init__(self):
        self.embeddings = np.asarray(self.embeddings, np.float64)
        if self.embeddings.ndim != 2 or not (len(self.embeddings) == len(self.identities) == len(self.keys)):
            raise ValueError("gallery embeddings must be (G, D) with one identity and one key per row")
        if len(set(self.identities)) < 2:
            raise ValueError(f"a retrieval gallery needs at least 2 identities, got {sorted(set(self.identities))}")

    @property
    def people(self) -> list[str]:
        return sorted(set(self.identities))

    def rank(self, query, identity: str, exclude: Sequence[str] = ()) -> int:
        """0-based rank of ``identity`` among the gallery's people ordered by the cosine of ``query`` to each
        person's normalised mean embedding (computed without the photos in ``exclude``); people left with no
        photo are not ranked, and ``identity`` must keep one."""
        keep = np.array([k not in set(exclude) for k in self.keys])
        ids = np.array(self.identities)
        people = sorted(set(ids[keep]))
        if identity not in people:
            raise ValueError(f"{identity!r} has no gallery photo left (excluding {list(exclude)}); the source's "
                             "identity needs at least one other photo in the gallery")
        centroids = np.stack([self.embeddings[keep & (ids == p)].mean(0) for p in people])
        sims = cosine(np.asarray(query, np.float64)[None, :], centroids)
        order = np.argsort(-sims, kind="stable")
        return int(np.nonzero(np.array(people)[order] == identity)[0][0])


# ---------------------------------------------------------------------------------------------------------------
# distribution distances


def gaussian_frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """The squared Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2):

        d^2 = |mu1 - mu2|^2 + Tr(sigma1 + sigma2 - 2 (sigma1^1/2 sigma2 sigma1^1/2)^1/2)

    (Dowson & Landau 1982; the formula of FID, Heusel et al. 2017).  Tr((sigma1 sigma2)^1/2) is computed as the
    sum of square roots of the eigenvalues of the symmetric PSD matrix sigma1^1/2 sigma2 sigma1^1/2, which has the
    same eigenvalues as sigma1 sigma2."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(f"need means (D,) and covariances (D, D) of one D, got {mu1.shape}, {s1.shape}, "
                         f"{mu2.shape}, {s2.shape}")
    w, V = np.linalg.eigh((s1 + s1.T) / 2)
    root1 = (V * np.sqrt(np.clip(w, 0, None))) @ V.T
    middle = root1 @ s2 @ root1
    ev = np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2.0 * np.sqrt(ev).sum())


def frechet_distance(x, y) -> float:
    """``gaussian_frechet_distance`` of Gaussians fitted to two samples (N, D) and (M, D) (unbiased covariances).
    With D larger than the samples the covariances are singular and the number is dominated by estimation
    noise: compare values only at one sample size."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or len(x) < 2 or len(y) < 2:
        raise ValueError(f"need two (N, D) samples of one D with N >= 2, got {x.shape} and {y.shape}")
    return gaussian_frechet_distance(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))


@functools.lru_cache(maxsize=1)
def inception_status() -> tuple[bool, str]:
    """(True, "") when torchmetrics' FID with its Inception weights can be built here; else (False, why).

    Building it loads (and on first use downloads) the Inception weights; offline without a copy it fails, which
    is the normal case on a machine without internet."""
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
    except Exception as e:  # noqa: BLE001 - ImportError or a broken optional dependency
        return False, f"torchmetrics' FID is not importable ({type(e).__name__}: {e})"
    try:
        FrechetInceptionDistance(feature=2048)
    except Exception as e:  # noqa: BLE001 - no weights, no internet, torch-fidelity missing
        return False, f"the Inception weights did not load ({type(e).__name__}: {str(e)[:200]})"
    return True, ""


def inception_fid_kid(real: Sequence[np.ndarray], fake: Sequence[np.ndarray]) -> dict | None:
    """FID and KID (torchmetrics, Inception-v3 pool features) between two lists of (H, W, 3) uint8 images, or
    ``None`` when ``inception_status()`` says the weights do not load.  Tiny samples make both very noisy."""
    ok, _ = inception_status()
    if not ok:
        return None
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    def batch(images):
        import torch.nn.functional as F
        x = [torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1)[None] for im in images]
        return torch.cat([F.interpolate(t.float(), size=(299, 299), mode="bilinear").round().to(torch.uint8)
                          for t in x])

    n = min(len(real), len(fake))
    fid = FrechetInceptionDistance(feature=2048)
    kid = KernelInceptionDistance(subset_size=max(2, min(50, n)))
    for m in (fid, kid):
        m.update(batch(real), real=True)
        m.update(batch(fake), real=False)
    kid_mean, kid_std = kid.compute()
    return {"fid": float(fid.compute()), "kid": float(kid_mean), "kid_std": float(kid_std)}


# ---------------------------------------------------------------------------------------------------------------
# faces -> identity vectors


# ---------------------------------------------------------------------------------------------------------------
# the protocol


@dataclass
class Triple:
    """One swap to judge: full photos, the faces detected in source and target, the full-size result."""

    source: np.ndarray
    target: np.ndarray
    result: np.ndarray
    source_face: object              # dfs.faces.detect.Face
    target_face: object
    source_identity: str
    source_key: str = ""             # the source photo's path (left out of the gallery for this triple)
    target_key: str = ""
    target_identity: str = ""


@dataclass
class TripleScores:
    id_cos_source: float
    id_cos_target: float
    rank: int | None                 # 0-based rank of the source's identity in the gallery (None: no gallery)
    pose_error: float | None         # None when no face was found in the result
    yaw_error: float | None
    pitch_error: float | None
    roll_error: float | None
    expression_error: float | None
    result_face_found: bool
    result_embedding: np.ndarray = field(repr=False, default=None)
    landmark_errors: dict | None = None   # per part of the face, % of the outer-eye-corner distance


class SwapJudge:
    """Scores triples with one identity encoder, one landmark detector and one gallery (see the module docstring).

    The result's face is detected again (its own landmarks give pose and expression); when none is found its
    identity is read at the target's face position and pose/expression are left out (counted in the summary).
    """

    def __init__(self, gallery: Gallery | None = None, encoder=None, analyzer=None):
        from dfs.faces.detect import FaceAnalyzer
        self.embedder = encoder if isinstance(encoder, FaceEmbedder) else FaceEmbedder(encoder)
        self.analyzer = analyzer if analyzer is not None else FaceAnalyzer()
        self.gallery = gallery
        self._cache: dict[str, np.ndarray] = {}

    def embed(self, image, face, key: str = "") -> np.ndarray:
        if key and key in self._cache:
            return self._cache[key]
        e = self.embedder([(image, face)])[0]
        if key:
            self._cache[key] = e
        return e

    def build_gallery(self, photos: Sequence[tuple[str, str, np.ndarray, object]]) -> Gallery:
        """Embed (key, identity, photo, face) items, remember their embeddings by key, and use them as the
        retrieval gallery."""
        emb = self.embedder([(image, face) for _, _, image, face in photos])
        self._cache.update({key: e for (key, *_), e in zip(photos, emb)})
        self.gallery = Gallery(emb, [ident for _, ident, _, _ in photos], [key for key, *_ in photos])
        return self.gallery

    def triple(self, t: Triple) -> TripleScores:
        from dfs.faces.detect import FaceNotFoundError

        if t.result.shape != t.target.shape:
            raise ValueError(f"the result must have the target photo's shape {t.target.shape}, got {t.result.shape}")
        e_src = self.embed(t.source, t.source_face, t.source_key)
        e_tgt = self.embed(t.target, t.target_face, t.target_key)
        try:
            face = self.analyzer.largest(t.result, name="the swap result")
        except FaceNotFoundError:
            face = None
        e_res = self.embed(t.result, face if face is not None else t.target_face)
        rank = None
        if self.gallery is not None:
            rank = self.gallery.rank(e_res, t.source_identity, exclude=[t.source_key, t.target_key])
        pose = dyaw = dpitch = droll = expr = parts = None
        if face is not None and face.landmarks68 is not None and t.target_face.landmarks68 is not None:
            p_res = head_pose(face.landmarks68, t.result.shape[:2])
            p_tgt = head_pose(t.target_face.landmarks68, t.target.shape[:2])
            d = np.abs(wrap_degrees(p_res - p_tgt))
            pose, (dyaw, dpitch, droll) = float(np.linalg.norm(d)), (float(v) for v in d)
            expr = expression_error(face.landmarks68, t.target_face.landmarks68)
            parts = landmark_errors(face.landmarks68, t.target_face.landmarks68)
        return TripleScores(float(cosine(e_res, e_src)), float(cosine(e_res, e_tgt)), rank, pose, dyaw, dpitch,
                            droll, expr, face is not None, e_res, parts)


def _mean_std(values) -> tuple[float | None, float | None]:
    v = [x for x in values if x is not None]
    return (float(np.mean(v)), float(np.std(v))) if v else (None, None)


def summarise(scores: Sequence[TripleScores], real_embeddings: np.ndarray | None = None) -> dict:
    """Means (and standard deviations) over triples; top-1 / top-5 retrieval rates; the ID-feature FD of the
    results' embeddings against ``real_embeddings`` (e.g. the gallery photos) when given."""
    if not scores:
        raise ValueError("no triples to summarise")
    out: dict = {"n": len(scores), "result_no_face": sum(not s.result_face_found for s in scores)}
    for k in ("id_cos_source", "id_cos_target", "pose_error", "yaw_error", "pitch_error", "roll_error",
              "expression_error"):
        out[k], out[k + "_std"] = _mean_std(getattr(s, k) for s in scores)
    from dfs.faces.align import IBUG68_GROUPS
    for g in IBUG68_GROUPS:                      # landmark_error_jaw, …: where the pose error comes from
        out[f"landmark_error_{g}"], _ = _mean_std(s.landmark_errors[g] if s.landmark_errors else None
                                                  for s in scores)
    ranks = [s.rank for s in scores if s.rank is not None]
    out["id_top1"] = float(np.mean([r < 1 for r in ranks])) if ranks else None
    out["id_top5"] = float(np.mean([r < 5 for r in ranks])) if ranks else None
    out["id_feature_fd"] = None
    if real_embeddings is not None and len(scores) >= 2:
        out["id_feature_fd"] = frechet_distance(np.stack([s.result_embedding for s in scores]), real_embeddings)
    return out


# ---------------------------------------------------------------------------------------------------------------
# uncertainty over pairs: percentile bootstrap intervals (dfs.stats.bootstrap_interval) and paired differences

# the per-pair value behind each summary metric (None: not defined for that pair, e.g. no face in the result)
PER_PAIR = {
    "id_top1": lambda s: None if s.rank is None else float(s.rank < 1),
    "id_top5": lambda s: None if s.rank is None else float(s.rank < 5),
    "id_cos_source": lambda s: s.id_cos_source,
    "id_cos_target": lambda s: s.id_cos_target,
    "pose_error": lambda s: s.pose_error,
    "expression_error": lambda s: s.expression_error,
    "face_found": lambda s: float(s.result_face_found),
}


def intervals(scores: Sequence[TripleScores], n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> dict:
    """{metric: [low, high]} bootstrap intervals (over pairs) of every metric of ``PER_PAIR`` that has values."""
    out = {}
    for k, f in PER_PAIR.items():
        v = [f(s) for s in scores]
        if any(x is not None for x in v):
            out[k] = list(bootstrap_interval(v, n_boot, level, seed))
    return out


def paired_differences(scores: Sequence[TripleScores], reference: Sequence[TripleScores], n_boot: int = 2000,
                       level: float = 0.95, seed: int = 0) -> dict:
    """{metric: {"mean", "low", "high", "n"}}: the mean over pairs of (row − reference) on the same pairs, with its
    percentile bootstrap interval; a pair counts where both values exist (e.g. a face was found in both results).
    An interval that excludes 0 says the difference is larger than the pair-to-pair noise of this sample."""
    if len(scores) != len(reference):
        raise ValueError(f"paired differences need the same pairs: {len(scores)} vs {len(reference)} scores")
    out = {}
    for k, f in PER_PAIR.items():
        d = [None if f(a) is None or f(b) is None else f(a) - f(b) for a, b in zip(scores, reference)]
        kept = [x for x in d if x is not None]
        if kept:
            lo, hi = bootstrap_interval(kept, n_boot, level, seed)
            out[k] = {"mean": float(np.mean(kept)), "low": lo, "high": hi, "n": len(kept)}
    return out
