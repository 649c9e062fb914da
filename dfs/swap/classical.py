"""The classical landmark face swap (the baseline every learned method is compared with).

On the aligned crops of :mod:`dfs.swap.pipeline`, for each (source, target) pair:

1. **Delaunay triangulation** of the source's 68 landmarks plus 8 points on the crop's border (so the triangles
   cover the whole crop), ``scipy.spatial.Delaunay``;
2. **piecewise-affine warp**: each source triangle is mapped onto the same triangle of the target's landmarks by the
   affine map its three vertices determine; every target pixel samples the source through the inverse map of the
   triangle it lies in (one ``cv2.remap``).  The source's features land on the target's landmarks, so the
   target's face shape, pose and expression are kept at the resolution of 68 points;
3. **colour transfer** (Reinhard et al. 2001, "Color transfer between images": l' = (l - <l>) sigma_t / sigma_s +
   <l_t> per channel of a decorrelated colour space): inside the target's face mask each channel of the warped
   source is shifted and scaled to the target's mean and standard deviation, here in OpenCV's CIELAB;
4. **Poisson blending** (Pérez et al. 2003, "Poisson image editing", seamless cloning: the f minimising
   the integral of |grad f - grad g|^2 over the region with f = target on its boundary, i.e. lap f = lap g inside):
   ``cv2.seamlessClone`` keeps the warped face's gradients (g) inside the hull of the target's jaw and brows and
   the target's values on its boundary, hiding the seam and residual colour differences.

The pipeline then blends the crop into the target photo through the feathered mask and pastes it back.
"""
from __future__ import annotations

import numpy as np

from dfs.faces.align import face_outline, hull

# ---------------------------------------------------------------------------------------------------------------
# triangulation and the piecewise-affine warp


def border_points(size: int) -> np.ndarray:
    """The crop's four corners and four edge midpoints (pixel centres), (8, 2)."""
    e, m = size - 1.0, (size - 1.0) / 2.0
    return np.array([[0, 0], [m, 0], [e, 0], [e, m], [e, e], [m, e], [0, e], [0, m]], dtype=np.float64)


def delaunay_triangles(points) -> np.ndarray:
    """(T, 3) vertex indices of the Delaunay triangulation of (N, 2) points (coincident points are left out)."""
    from scipy.spatial import Delaunay

    p = np.asarray(points, np.float64)
    if p.ndim != 2 or p.shape[1] != 2 or len(p) < 3:
        raise ValueError(f"points must be (N, 2) with N >= 3, got {p.shape}")
    return Delaunay(p).simplices.astype(np.int64)


def triangle_affines(src_points, dst_points, triangles) -> np.ndarray:
    """(T, 2, 3) affine maps taking each triangle of ``dst_points`` onto the same triangle of ``src_points``
    (the inverse maps a backward warp samples with): A [x_d, y_d, 1]^T = [x_s, y_s]^T at the three vertices."""
    src, dst = np.asarray(src_points, np.float64), np.asarray(dst_points, np.float64)
    tri = np.asarray(triangles)
    D = np.concatenate([dst[tri], np.ones(tri.shape + (1,))], axis=-1)   # (T, 3, 3): rows [x, y, 1]
    S = src[tri]                                                         # (T, 3, 2)
    # A^T solves D A^T = S per triangle; degenerate (zero-area) target triangles get a least-squares map
    At = np.stack([np.linalg.lstsq(d, s, rcond=None)[0] for d, s in zip(D, S)])
    return At.transpose(0, 2, 1)


def piecewise_affine_warp(image: np.ndarray, src_points, dst_points, triangles=None,
                          size: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Warp ``image`` so that ``src_points`` land on ``dst_points``, affinely within each triangle.

    ``triangles`` index both point sets (default: the Delaunay triangulation of ``src_points``).  Returns the
    warped image of ``size`` = (height, width) (default the input's) and the (h, w) bool map of pixels some
    triangle covers; pixels outside every target triangle sample through the least-squares affine fit of all
    points.  When ``dst_points`` are one affine map of ``src_points``, the result is that affine warp.
    """
    import cv2

    src, dst = np.asarray(src_points, np.float64), np.asarray(dst_points, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2:
        raise ValueError(f"src_points and dst_points must be (N, 2) of one N, got {src.shape} and {dst.shape}")
    tri = delaunay_triangles(src) if triangles is None else np.asarray(triangles, np.int64)
    h, w = image.shape[:2] if size is None else size
    A = triangle_affines(src, dst, tri)
    D = np.concatenate([dst, np.ones((len(dst), 1))], axis=1)
    fallback = np.linalg.lstsq(D, src, rcond=None)[0].T[None]            # (1, 2, 3): dst -> src, all points
    A = np.concatenate([fallback, A])                                    # label 0 = no triangle
    label = np.zeros((h, w), np.int32)
    for k, t in enumerate(tri, start=1):                                 # later triangles win shared edges
        cv2.fillConvexPoly(label, np.round(dst[t] * 16).astype(np.int32), k, lineType=cv2.LINE_8, shift=4)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    Al = A[label]                                                        # (h, w, 2, 3)
    map_x = (Al[..., 0, 0] * xs + Al[..., 0, 1] * ys + Al[..., 0, 2]).astype(np.float32)
    map_y = (Al[..., 1, 0] * xs + Al[..., 1, 1] * ys + Al[..., 1, 2]).astype(np.float32)
    warped = cv2.remap(image, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    return warped, label > 0


# ---------------------------------------------------------------------------------------------------------------
# colour and blending


def colour_transfer(image: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Match ``image``'s per-channel mean and standard deviation in CIELAB to ``reference``'s, both measured where
    ``mask`` > 0.5 (Reinhard et al. 2001): l' = (l - mean_image) * std_ref / std_image + mean_ref per channel.
    (H, W, 3) uint8 RGB in and out; the whole image is transformed."""
    import cv2

    m = np.asarray(mask) > 0.5
    if m.shape != image.shape[:2] or image.shape != reference.shape:
        raise ValueError(f"image, reference and mask must share (H, W): {image.shape}, {reference.shape}, {m.shape}")
    if m.sum() < 2:
        raise ValueError("the mask selects fewer than 2 pixels: no colour statistics to match")
    lab = cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    ref = cv2.cvtColor(reference.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    mu_i, sd_i = lab[m].mean(0), lab[m].std(0)
    mu_r, sd_r = ref[m].mean(0), ref[m].std(0)
    out = (lab - mu_i) * (sd_r / np.maximum(sd_i, 1e-6)) + mu_r
    rgb = cv2.cvtColor(out.astype(np.float32), cv2.COLOR_LAB2RGB)
    return np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)


def poisson_blend(source: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``cv2.seamlessClone`` (NORMAL_CLONE) of ``source`` into ``target`` at the same place, inside ``mask``.

    The mask is cut back 2 pixels from the image border (OpenCV needs a boundary around the region).  OpenCV puts
    the mask's bounding box (x0, y0, width, height) at (center.x - width // 2, center.y - height // 2) in the
    target, so ``center = (x0 + width // 2, y0 + height // 2)`` keeps every pixel where it is."""
    import cv2

    m = (np.asarray(mask) > 0.5).astype(np.uint8) * 255
    m[:2], m[-2:], m[:, :2], m[:, -2:] = 0, 0, 0, 0
    ys, xs = np.nonzero(m)
    if len(xs) == 0:
        return target.copy()
    x0, y0 = xs.min(), ys.min()
    width, height = xs.max() - x0 + 1, ys.max() - y0 + 1
    center = (int(x0 + width // 2), int(y0 + height // 2))
    return cv2.seamlessClone(np.ascontiguousarray(source), np.ascontiguousarray(target), m, center,
                             cv2.NORMAL_CLONE)


def hull_mask(landmarks68, size: int) -> np.ndarray:
    """(size, size) float32 {0, 1}: the filled convex hull of the jaw line and brows (the hard face region)."""
    import cv2

    m = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(m, np.round(hull(face_outline(landmarks68)) * 16).astype(np.int32), 1, cv2.LINE_8, shift=4)
    return m.astype(np.float32)


def warp_source_onto_target(source_crop: np.ndarray, source_landmarks68, target_crop: np.ndarray,
                            target_landmarks68, colour: bool = True) -> np.ndarray:
    """Steps 1-3 of the module docstring: the source crop warped piecewise-affinely so that its 68 landmarks (plus
    the crop's border points) land on the target's, then (``colour``) colour-matched to the target inside the hull
    of the target's jaw and brows.  (S, S, 3) uint8 crops of one size in, (S, S, 3) uint8 out.  The diffusion swap
    takes this image as its pixel reference of the source (``dfs.swap.diffusion``)."""
    if source_crop.shape != target_crop.shape:
        raise ValueError(f"source and target crops differ in size: {source_crop.shape} vs {target_crop.shape}")
    S = target_crop.shape[0]
    border = border_points(S)
    src = np.concatenate([np.asarray(source_landmarks68, np.float64), border])
    dst = np.concatenate([np.asarray(target_landmarks68, np.float64), border])
    warped, _ = piecewise_affine_warp(source_crop, src, dst)
    if colour:
        warped = colour_transfer(warped, target_crop, hull_mask(target_landmarks68, S))
    return warped


# ---------------------------------------------------------------------------------------------------------------
# the method


class ClassicalSwap:
    """Delaunay + piecewise-affine warp + colour transfer + Poisson blending (module docstring), as a
    :class:`dfs.swap.pipeline.SwapMethod`.  ``colour=False`` skips the colour transfer, ``blend="alpha"`` replaces
    Poisson blending by the plain mask (for ablations)."""

    name = "classical"
    crop_size = 256
    template = "ffhq"
    checkpoint = None
    batch_size = 16

    def __init__(self, colour: bool = True, blend: str = "poisson", crop_size: int = 256):
        if blend not in ("poisson", "alpha"):
            raise ValueError(f"blend must be 'poisson' or 'alpha', got {blend!r}")
        self.colour, self.blend, self.crop_size = bool(colour), blend, int(crop_size)

    def swap_one(self, source, target) -> np.ndarray:
        """One pair of :class:`~dfs.swap.pipeline.AlignedFace` -> the swapped (S, S, 3) uint8 crop."""
        S = target.crop.shape[0]
        warped = warp_source_onto_target(source.crop, source.landmarks68, target.crop, target.landmarks68,
                                         colour=self.colour)
        region = hull_mask(target.landmarks68, S)
        if self.blend == "poisson":
            return poisson_blend(warped, target.crop, region)
        r = region[..., None]
        return np.round(r * warped + (1 - r) * target.crop).astype(np.uint8)

    def swap(self, sources, targets, context) -> list[np.ndarray]:
        return [self.swap_one(s, t) for s, t in zip(sources, targets)]
