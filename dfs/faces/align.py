"""Alignment: landmarks -> a similarity transform -> an aligned crop, its inverse for pasting back, soft masks.

Conventions (used by every function here and by :mod:`dfs.faces.detect`):

* Points are (x, y) pixel coordinates with pixel *centres* at integers (OpenCV's convention).
* ``landmarks5`` are, in this order: the eye centre on the image's left, the other eye centre, the nose tip, the
  left mouth corner, the right mouth corner (insightface's 5 points).  ``five_from_68`` derives them from the
  iBUG 68-point layout (dlib's 68-point model, insightface's ``landmark_3d_68``).
* An alignment is a 2x3 matrix ``M`` mapping *image* coordinates to *crop* coordinates: ``crop_xy = M @ [x, y, 1]``.
  ``warp_image`` / ``warp_affine`` cut the crop with it; ``paste_back`` / ``warp_affine(..., invert_affine(M))``
  put a crop back.

Templates:

* ``"arcface"``: the five reference points of ArcFace's 112x112 crops (insightface's ``arcface_dst``), scaled to
  the crop size; ``M`` is the least-squares similarity from the landmarks to them (Umeyama 1991).
* ``"ffhq"``: the FFHQ recipe (Karras et al. 2019, the dataset's ``recreate_aligned_images``): an oriented square
  centred just below the eyes (``c = eye_avg + 0.1 * eye_to_mouth``), half-side
  ``max(2 |eye_to_eye|, 1.8 |eye_to_mouth|)``, mapped onto the whole crop.  A wider, hair-and-chin framing.

Masks: ``face_mask`` / ``convex_polygon_mask`` fill the convex hull of the jaw line and eyebrows (68-point
indices 0-26), optionally dilated by ``dilate`` pixels and feathered with a Gaussian edge of width ``feather``
(standard deviation, pixels): ``mask = Phi((d + dilate) / feather)`` with ``d`` the signed distance to the hull
(positive inside) and ``Phi`` the normal CDF -- exactly a Gaussian blur of a half-plane, so along an edge the
mask goes from 0.1 to 0.9 over ``2 * 1.2816 * feather`` pixels.  Batched and differentiable in torch.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

# ArcFace's 112x112 reference points (insightface python-package, utils/face_align.py, ``arcface_dst``)
ARCFACE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                        [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64)
TEMPLATES = ("arcface", "ffhq")

JAW = tuple(range(0, 17))
BROWS = tuple(range(17, 27))
# the iBUG 68-point layout's parts (dlib's predictor): the swap model's heatmap channels, the per-part errors
IBUG68_GROUPS = {"jaw": JAW, "brows": BROWS, "nose": tuple(range(27, 36)), "eyes": tuple(range(36, 48)),
                 "mouth": tuple(range(48, 68))}


def _ibug68_mirror() -> tuple[int, ...]:
    """The index each of the 68 iBUG points takes in a left-right mirrored face (jaw 0↔16, brows 17↔26, nose wings
    31↔35, eye corners 36↔45 and 39↔42, mouth corners 48↔54 and 60↔64, ...; the midline points map to themselves)."""
    pairs = [(i, 16 - i) for i in range(8)] + [(17 + i, 26 - i) for i in range(5)] + [(31, 35), (32, 34)]
    pairs += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]                     # eyes
    pairs += [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58), (60, 64), (61, 63), (65, 67)]  # mouth
    perm = list(range(68))
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return tuple(perm)


IBUG68_MIRROR = _ibug68_mirror()


def mirror_landmarks68(landmarks68, width: int):
    """The 68 landmarks of the image flipped left-right (``image[:, ::-1]``, ``width`` pixels wide): x → width − 1 − x
    (pixel centres at integers) and the points renumbered with ``IBUG68_MIRROR`` so each keeps its meaning (point
    36, the outer corner of the eye on the image's left, is again the one on the left)."""
    lm, was_np = _as_tensor(landmarks68)
    if lm.shape[-2:] != (68, 2):
        raise ValueError(f"landmarks68 must have shape (..., 68, 2), got {tuple(lm.shape)}")
    out = lm[..., list(IBUG68_MIRROR), :].clone()
    out[..., 0] = (width - 1) - out[..., 0]
    return _back(out, was_np)
LEFT_EYE_68 = tuple(range(36, 42))    # the eye on the image's left (the person's right eye)
RIGHT_EYE_68 = tuple(range(42, 48))
NOSE_TIP_68 = 30
MOUTH_LEFT_68, MOUTH_RIGHT_68 = 48, 54


def _as_tensor(x) -> tuple[torch.Tensor, bool]:
    """(float64 tensor, was_numpy)."""
    if isinstance(x, torch.Tensor):
        return x, False
    return torch.as_tensor(np.asarray(x, dtype=np.float64)), True


def _back(x: torch.Tensor, was_numpy: bool):
    return x.detach().cpu().numpy() if was_numpy else x


def five_from_68(landmarks68):
    """(..., 68, 2) iBUG landmarks -> (..., 5, 2): eye centres (mean of each eye's 6 points), nose tip (30),
    mouth corners (48, 54).  numpy in, numpy out; torch in, torch out."""
    lm, was_np = _as_tensor(landmarks68)
    if lm.shape[-2:] != (68, 2):
        raise ValueError(f"landmarks68 must have shape (..., 68, 2), got {tuple(lm.shape)}")
    out = torch.stack([lm[..., LEFT_EYE_68, :].mean(-2), lm[..., RIGHT_EYE_68, :].mean(-2), lm[..., NOSE_TIP_68, :],
                       lm[..., MOUTH_LEFT_68, :], lm[..., MOUTH_RIGHT_68, :]], dim=-2)
    return _back(out, was_np)


# ---------------------------------------------------------------------------------------------------------------
# similarity transforms


def umeyama(src, dst, estimate_scale: bool = True):
    """The least-squares similarity ``dst ~ c R src + t`` between point sets (..., N, 2) -> (..., 2, 3).

    Umeyama (1991), "Least-squares estimation of transformation parameters between two point patterns":
    with means mu_s, mu_d, variance sigma_s^2 = mean |s - mu_s|^2, covariance Sigma = mean (d - mu_d)(s - mu_s)^T
    = U D V^T (SVD), S = diag(1, sign(det U det V)):  R = U S V^T (eq. 40), c = tr(D S) / sigma_s^2 (eq. 42),
    t = mu_d - c R mu_s (eq. 41).  ``estimate_scale=False`` fixes c = 1.  Batched; differentiable in torch.
    """
    s, was_np = _as_tensor(src)
    d, _ = _as_tensor(dst)
    if s.shape[-1] != 2 or s.ndim < 2 or s.shape[-2] < 2:
        raise ValueError(f"src must have shape (..., N, 2) with N >= 2, got {tuple(s.shape)}")
    if d.shape[-2:] != s.shape[-2:]:
        raise ValueError(f"src and dst must hold the same number of 2-D points, got {tuple(s.shape)} and "
                         f"{tuple(d.shape)}")
    out_dtype = s.dtype if s.is_floating_point() else torch.float64
    s, d = torch.broadcast_tensors(s.to(torch.float64), d.to(torch.float64))
    mu_s, mu_d = s.mean(-2, keepdim=True), d.mean(-2, keepdim=True)
    sc, dc = s - mu_s, d - mu_d
    var_s = (sc ** 2).sum(-1).mean(-1)                                   # sigma_s^2
    if (var_s <= 1e-12).any():
        raise ValueError("src points all coincide: a similarity transform is undefined")
    cov = dc.transpose(-1, -2) @ sc / s.shape[-2]                        # Sigma (2x2)
    U, D, Vh = torch.linalg.svd(cov)
    sign = torch.sign(torch.linalg.det(U) * torch.linalg.det(Vh))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    S = torch.stack([torch.ones_like(sign), sign], -1)                   # diagonal of S
    R = U @ torch.diag_embed(S) @ Vh                                     # eq. 40
    c = (D * S).sum(-1) / var_s if estimate_scale else torch.ones_like(var_s)   # eq. 42
    t = mu_d.squeeze(-2) - c[..., None] * (R @ mu_s.squeeze(-2)[..., None])[..., 0]  # eq. 41
    M = torch.cat([c[..., None, None] * R, t[..., None]], dim=-1).to(out_dtype)
    return _back(M, was_np)


def apply_affine(M, points):
    """Map (..., N, 2) points with (..., 2, 3) matrices."""
    m, was_np = _as_tensor(M)
    p, _ = _as_tensor(points)
    p = p.to(m.dtype)
    out = p @ m[..., :, :2].transpose(-1, -2) + m[..., None, :, 2]
    return _back(out, was_np)


def invert_affine(M):
    """The inverse of (..., 2, 3) affine matrices (crop -> image for an alignment)."""
    m, was_np = _as_tensor(M)
    A_inv = torch.linalg.inv(m[..., :, :2])
    out = torch.cat([A_inv, -(A_inv @ m[..., :, 2:])], dim=-1)
    return _back(out, was_np)


def similarity_scale(M):
    """The scale factor of (..., 2, 3) similarity matrices (sqrt |det A|)."""
    m, was_np = _as_tensor(M)
    out = torch.linalg.det(m[..., :, :2]).abs().sqrt()
    return _back(out, was_np)


# ---------------------------------------------------------------------------------------------------------------
# templates


def arcface_template(size: int = 112) -> np.ndarray:
    """ArcFace's five reference points for a ``size`` x ``size`` crop (scaled from 112, pixel edges kept)."""
    return (ARCFACE_112 + 0.5) * (size / 112.0) - 0.5


def ffhq_quad(landmarks5):
    """The FFHQ crop square in the image, (..., 4, 2) corners: upper-left, lower-left, lower-right, upper-right.

    FFHQ's ``recreate_aligned_images`` (Karras et al. 2019): eye_avg, eye_to_eye, eye_to_mouth from the eye centres
    and mouth corners; x = eye_to_eye - rot90(eye_to_mouth), normalised, times max(2 |eye_to_eye|,
    1.8 |eye_to_mouth|); y = rot90(x); centre c = eye_avg + 0.1 eye_to_mouth; corners c -x -y, c -x +y, c +x +y,
    c +x -y.
    """
    lm, was_np = _as_tensor(landmarks5)
    if lm.shape[-2:] != (5, 2):
        raise ValueError(f"landmarks5 must have shape (..., 5, 2), got {tuple(lm.shape)}")
    eye_l, eye_r, mouth_l, mouth_r = lm[..., 0, :], lm[..., 1, :], lm[..., 3, :], lm[..., 4, :]
    eye_avg = (eye_l + eye_r) / 2
    eye_to_eye = eye_r - eye_l
    eye_to_mouth = (mouth_l + mouth_r) / 2 - eye_avg

    def rot90(v):  # (x, y) -> (-y, x): a quarter turn, clockwise on screen (y points down)
        return torch.stack([-v[..., 1], v[..., 0]], -1)

    x = eye_to_eye - rot90(eye_to_mouth)
    x = x / x.norm(dim=-1, keepdim=True)
    x = x * torch.maximum(eye_to_eye.norm(dim=-1) * 2.0, eye_to_mouth.norm(dim=-1) * 1.8)[..., None]
    y = rot90(x)
    c = eye_avg + 0.1 * eye_to_mouth
    quad = torch.stack([c - x - y, c - x + y, c + x + y, c + x - y], dim=-2)
    return _back(quad, was_np)


def alignment_matrix(landmarks5, template: str = "ffhq", size: int = 256):
    """The (..., 2, 3) image -> crop similarity for a ``size`` x ``size`` crop (see the module docstring).
    ``landmarks5`` may also be (..., 68, 2) iBUG landmarks (reduced with ``five_from_68``)."""
    lm, was_np = _as_tensor(landmarks5)
    if lm.shape[-2:] == (68, 2):
        lm = five_from_68(lm)
    if lm.shape[-2:] != (5, 2):
        raise ValueError(f"landmarks5 must have shape (..., 5, 2), got {tuple(lm.shape)}; five_from_68() derives "
                         "them from 68-point landmarks")
    if not isinstance(size, (int, np.integer)) or size < 8:
        raise ValueError(f"size must be an integer >= 8 (pixels), got {size!r}")
    if template == "arcface":
        dst = torch.as_tensor(arcface_template(size), dtype=lm.dtype)
        M = umeyama(lm, dst.expand_as(lm))
    elif template == "ffhq":
        e = size - 0.5  # the quad's corners go to the crop's outer pixel edges
        dst = torch.tensor([[-0.5, -0.5], [-0.5, e], [e, e], [e, -0.5]], dtype=lm.dtype)
        quad = ffhq_quad(lm)
        M = umeyama(quad, dst.expand_as(quad))
    else:
        raise ValueError(f"unknown template {template!r}; choose one of {TEMPLATES}")
    return _back(M, was_np)


# ---------------------------------------------------------------------------------------------------------------
# warping (numpy / OpenCV, one image) and its inverse


def warp_image(image: np.ndarray, M, size: int | tuple[int, int], border: str = "reflect",
               antialias: bool = True) -> np.ndarray:
    """Cut the crop: ``out[v, u] = image[M^-1 (u, v)]`` (bilinear), ``size`` = S or (height, width).

    ``border``: "reflect" (mirror the image beyond its edge, like FFHQ's padding), "replicate" or "constant"
    (black).  ``antialias``: when M shrinks by more than 2x, the image is first reduced with area averaging so the
    crop does not alias.
    """
    import cv2

    h, w = (size, size) if np.isscalar(size) else size
    M = np.asarray(M, dtype=np.float64)
    modes = {"reflect": cv2.BORDER_REFLECT_101, "replicate": cv2.BORDER_REPLICATE, "constant": cv2.BORDER_CONSTANT}
    if border not in modes:
        raise ValueError(f"border must be one of {tuple(modes)}, got {border!r}")
    scale = float(similarity_scale(M))
    if antialias and scale < 0.5:
        r = 2.0 * scale  # shrink the image by r with INTER_AREA, then warp with a scale of about 0.5
        small = cv2.resize(image, (max(1, round(image.shape[1] * r)), max(1, round(image.shape[0] * r))),
                           interpolation=cv2.INTER_AREA)
        rx, ry = small.shape[1] / image.shape[1], small.shape[0] / image.shape[0]
        # cv2.resize maps small pixel x_s to image pixel (x_s + 0.5) / r - 0.5
        to_image = np.array([[1 / rx, 0, 0.5 / rx - 0.5], [0, 1 / ry, 0.5 / ry - 0.5], [0, 0, 1]])
        M = M @ to_image
        image = small
    return cv2.warpAffine(image, M, (w, h), flags=cv2.INTER_LINEAR, borderMode=modes[border])


def paste_back(target: np.ndarray, crop: np.ndarray, M, mask: np.ndarray | None = None) -> np.ndarray:
    """Put an aligned ``crop`` (cut from ``target`` with ``M``) back into ``target``, blended with ``mask``.

    ``mask`` is the crop's (S, S) weight in [0, 1] (e.g. ``face_mask`` in crop coordinates; default: the whole
    crop).  Returns ``mask' * crop' + (1 - mask') * target`` where ' denotes the inverse warp; the result has
    ``target``'s dtype.
    """
    import cv2

    H, W = target.shape[:2]
    M = np.asarray(M, dtype=np.float64)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP  # M maps image -> crop: sample the crop at M(x)
    back = cv2.warpAffine(crop.astype(np.float32), M, (W, H), flags=flags, borderMode=cv2.BORDER_REPLICATE)
    if mask is None:
        mask = np.ones(crop.shape[:2], np.float32)
    if mask.shape != crop.shape[:2]:
        raise ValueError(f"mask must have the crop's shape {crop.shape[:2]}, got {mask.shape}")
    m = cv2.warpAffine(mask.astype(np.float32), M, (W, H), flags=flags, borderMode=cv2.BORDER_CONSTANT,
                       borderValue=0)
    if back.ndim == 3:
        m = m[..., None]
    out = m * back + (1.0 - m) * target.astype(np.float32)
    if np.issubdtype(target.dtype, np.integer):
        info = np.iinfo(target.dtype)
        out = np.clip(np.round(out), info.min, info.max)
    return out.astype(target.dtype)


# ---------------------------------------------------------------------------------------------------------------
# warping (torch, batched, differentiable)


def _pixel_to_normalised(h: int, w: int, dtype, device) -> torch.Tensor:
    """3x3 map from pixel coordinates (centres at integers) to grid_sample's [-1, 1] (align_corners=False)."""
    return torch.tensor([[2.0 / w, 0.0, 1.0 / w - 1.0], [0.0, 2.0 / h, 1.0 / h - 1.0], [0.0, 0.0, 1.0]],
                        dtype=dtype, device=device)


def warp_affine(images: torch.Tensor, M: torch.Tensor, size: int | tuple[int, int],
                padding_mode: str = "reflection") -> torch.Tensor:
    """Batched ``warp_image``: (B, C, H, W) float images, (B, 2, 3) image -> output matrices -> (B, C, h, w).

    Bilinear ``grid_sample``; differentiable in both the images and M.  To paste crops back, pass
    ``invert_affine(M)`` and the full image size.  ``padding_mode``: "reflection", "border" or "zeros".
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W), got {tuple(images.shape)}")
    h, w = (size, size) if isinstance(size, int) else size
    B, _, H, W = images.shape
    M = torch.as_tensor(M, dtype=torch.float64, device=images.device)
    if M.shape == (2, 3):
        M = M.expand(B, 2, 3)
    if M.shape != (B, 2, 3):
        raise ValueError(f"M must be (B, 2, 3) with B = {B}, got {tuple(M.shape)}")
    M3 = torch.cat([M, M.new_tensor([0.0, 0.0, 1.0]).expand(B, 1, 3)], dim=1)
    src_n = _pixel_to_normalised(H, W, M.dtype, M.device)
    dst_n = _pixel_to_normalised(h, w, M.dtype, M.device)
    theta = src_n @ torch.linalg.inv(M3) @ torch.linalg.inv(dst_n)   # output [-1,1] -> input [-1,1]
    grid = F.affine_grid(theta[:, :2].to(images.dtype), [B, images.shape[1], h, w], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)


# ---------------------------------------------------------------------------------------------------------------
# masks


def hull(points) -> np.ndarray:
    """The convex hull of (N, 2) points as (K, 2) vertices in order (OpenCV)."""
    import cv2
    p = np.asarray(points, dtype=np.float32).reshape(-1, 2)
    return cv2.convexHull(p, clockwise=False).reshape(-1, 2).astype(np.float64)


def face_outline(landmarks68) -> np.ndarray:
    """(..., 68, 2) -> (..., 27, 2): the jaw line (0-16) and the eyebrows (17-26), the points the mask hulls."""
    lm = np.asarray(landmarks68, dtype=np.float64)
    if lm.shape[-2:] != (68, 2):
        raise ValueError(f"landmarks68 must have shape (..., 68, 2), got {lm.shape}")
    return lm[..., JAW + BROWS, :]


def convex_polygon_mask(polygons: torch.Tensor, size: int | tuple[int, int], feather: float = 0.0,
                        dilate: float = 0.0) -> torch.Tensor:
    """Soft masks of convex polygons: (B, K, 2) vertices in order -> (B, h, w) in [0, 1].

    ``d(q) = min_k n_k . (q - p_k)`` (inward edge normals n_k) is the signed distance to the polygon inside it
    (and a lower bound on minus the distance outside); mask = Phi((d + dilate) / feather), or the indicator of
    d + dilate >= 0 when feather = 0.  Differentiable in the vertices.  Zero-length edges (repeated vertices, used
    to pad polygons to one K) are ignored.
    """
    if feather < 0 or dilate < 0:
        raise ValueError(f"feather and dilate are distances in pixels >= 0, got {feather}, {dilate}")
    P = torch.as_tensor(polygons)
    if P.ndim != 3 or P.shape[-1] != 2 or P.shape[1] < 3:
        raise ValueError(f"polygons must be (B, K, 2) with K >= 3, got {tuple(P.shape)}")
    P = P.to(torch.float32) if not P.is_floating_point() else P
    h, w = (size, size) if isinstance(size, int) else size
    e = torch.roll(P, -1, dims=1) - P                                     # edges p_k -> p_k+1, (B, K, 2)
    length = e.norm(dim=-1, keepdim=True)
    n = torch.stack([-e[..., 1], e[..., 0]], -1) / length.clamp_min(1e-9)
    inward = torch.sign(((P.mean(1, keepdim=True) - P) * n).sum(-1, keepdim=True) + 1e-12)  # centroid is inside
    n = n * inward
    c = (n * P).sum(-1)                                                   # d_k(q) = n_k . q - c_k
    c = torch.where(length[..., 0] > 1e-9, c, torch.full_like(c, float("-inf")))   # ignore zero-length edges
    nx, ny = n[..., 0, None, None], n[..., 1, None, None]                 # (B, K, 1, 1)
    xs = torch.arange(w, dtype=P.dtype, device=P.device)
    rows, step = [], max(1, 2 ** 22 // (P.shape[0] * P.shape[1] * w))  # at most ~4M distances at a time
    for y0 in range(0, h, step):
        ys = torch.arange(y0, min(y0 + step, h), dtype=P.dtype, device=P.device)
        dk = nx * xs[None, None, None, :] + ny * ys[None, None, :, None] - c[..., None, None]
        rows.append(dk.amin(dim=1))
    d = torch.cat(rows, dim=1)
    d = d + dilate
    if feather == 0:
        return (d >= 0).to(P.dtype)
    return 0.5 * (1.0 + torch.erf(d / (feather * math.sqrt(2.0))))


def face_mask(landmarks68, size: int | tuple[int, int], feather: float = 0.0, dilate: float = 0.0):
    """Soft face masks from 68-point landmarks: the convex hull of jaw + eyebrows, dilated by ``dilate`` pixels,
    feathered with a Gaussian edge of standard deviation ``feather`` pixels.

    (68, 2) numpy -> (h, w) float32 numpy;  (B, 68, 2) numpy or torch -> (B, h, w) (torch stays torch).
    ``size``: S or (height, width) of the image the landmarks live in (a crop, or the full photo).
    """
    is_torch = isinstance(landmarks68, torch.Tensor)
    lm = landmarks68.detach().cpu().numpy() if is_torch else np.asarray(landmarks68, dtype=np.float64)
    single = lm.ndim == 2
    outline = face_outline(lm.reshape(-1, 68, 2))
    hulls = [hull(o) for o in outline]
    K = max(len(hv) for hv in hulls)
    padded = np.stack([np.concatenate([hv, np.repeat(hv[-1:], K - len(hv), 0)]) for hv in hulls])
    poly = torch.as_tensor(padded, dtype=torch.float32)
    if is_torch:
        poly = poly.to(landmarks68.device)
    mask = convex_polygon_mask(poly, size, feather=feather, dilate=dilate)
    if is_torch:
        return mask[0] if single else mask
    mask = mask.numpy()
    return mask[0] if single else mask
