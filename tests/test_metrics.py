"""dfs.metrics: each face-swap metric on a case whose answer is known -- poses of a projected 3-D face, in-plane
rotations (exact for landmarks, measured on a rotated photo), Procrustes vs scipy, PSNR/SSIM closed forms, the
Fréchet distance vs closed forms and scipy's sqrtm, identity cosines and retrieval on real LFW photos."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from dfs import metrics as M
from shared_data import shared_lfw_photos  # noqa: E402

cv2 = pytest.importorskip("cv2")


@pytest.fixture(scope="module")
def analyzer():
    pytest.importorskip("dlib")
    pytest.importorskip("face_recognition_models")
    from dfs.faces.detect import FaceAnalyzer
    return FaceAnalyzer()


def _projected_landmarks(yaw, pitch, roll, size=(480, 640), t=(0.05, -0.1, 2.5)):
    """68-point landmarks (only the model's 14 filled in) of the mean face seen at the given pose."""
    K = M.camera_matrix(size)
    rvec, _ = cv2.Rodrigues(M.euler_to_rotation(yaw, pitch, roll))
    pts, _ = cv2.projectPoints(M.MEAN_FACE_3D, rvec, np.array(t, float), K, None)
    lm = np.zeros((68, 2))
    lm[list(M.MEAN_FACE_68_INDEX)] = pts[:, 0]
    return lm


def _rotate_points(points, degrees, center):
    """Rotate (N, 2) pixel points by +degrees about center, clockwise on screen (y down)."""
    a = math.radians(degrees)
    R = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return (np.asarray(points) - center) @ R.T + center


# ---------------------------------------------------------------------------------------------------------------
# pose


def test_euler_round_trip_and_conventions():
    for angles in [(0, 0, 0), (30, -10, 5), (-70, 25, -160), (89, 0, 45)]:
        assert np.allclose(M.rotation_to_euler(M.euler_to_rotation(*angles)), angles, atol=1e-9)
    R = M.euler_to_rotation(20, 0, 0)
    nose = R @ np.array([0, 0, -1.0])        # the nose direction of a frontal face points at the camera (-z)
    assert nose[0] < 0                       # positive yaw: towards the image's left
    assert (M.euler_to_rotation(0, 20, 0) @ np.array([0, 0, -1.0]))[1] > 0   # positive pitch: down
    assert (M.euler_to_rotation(0, 0, 20) @ np.array([1.0, 0, 0]))[1] > 0    # positive roll: x turns to +y


@pytest.mark.parametrize("angles", [(0, 0, 0), (25, -10, 5), (-45, 20, -15), (10, 5, 170), (60, -30, 40)])
def test_head_pose_recovers_the_pose_of_a_projected_mean_face(angles):
    lm = _projected_landmarks(*angles)
    assert np.allclose(M.head_pose(lm, (480, 640)), angles, atol=1e-3)


def test_in_plane_rotation_adds_exactly_to_the_roll():
    """Rotating the landmarks about the principal point by theta is the camera rolling by theta: the best PnP fit
    rolls with it (whatever the model's misfit), so roll changes by theta and yaw, pitch do not."""
    rng = np.random.default_rng(0)
    lm = _projected_landmarks(15, -8, 3) + rng.normal(0, 2.0, (68, 2))    # a pose the model does not fit exactly
    center = np.array([(640 - 1) / 2, (480 - 1) / 2])
    base = M.head_pose(lm, (480, 640))
    for theta in (7.0, -20.0, 35.0):
        rotated = M.head_pose(_rotate_points(lm, theta, center), (480, 640))
        assert np.allclose(M.wrap_degrees(rotated - base), [0, 0, theta], atol=1e-3)


def test_rotated_photo_gives_its_rotation_as_roll(analyzer):
    """A real photo and a copy rotated by 12 degrees (cv2.getRotationMatrix2D: counter-clockwise on screen for
    positive angles), each with its own dlib landmarks: the roll differs by -12 degrees, within detector noise."""
    from dfs.faces.images import load_image
    photo = load_image(shared_lfw_photos() / "Tom_Hanks" / "Tom_Hanks_0001.jpg")
    H, W = photo.shape[:2]
    R = cv2.getRotationMatrix2D(((W - 1) / 2, (H - 1) / 2), 12.0, 1.0)
    rotated = cv2.warpAffine(photo, R, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    p0 = M.head_pose(analyzer.largest(photo).landmarks68, (H, W))
    p1 = M.head_pose(analyzer.largest(rotated).landmarks68, (H, W))
    d = M.wrap_degrees(p1 - p0)
    assert abs(d[2] - (-12.0)) < 2.0, d
    assert abs(d[0]) < 3.0 and abs(d[1]) < 3.0, d
    assert M.pose_error(p0, p0) == 0.0


def test_pose_error_wraps_angles():
    assert M.pose_error([0, 0, 179], [0, 0, -179]) == pytest.approx(2.0)
    assert M.pose_error([3, 4, 0], [0, 0, 0]) == pytest.approx(5.0)


def test_mean_face_matches_insightface_meanshape():
    insightface = pytest.importorskip("insightface")
    import pickle
    path = Path(insightface.__file__).parent / "data" / "objects" / "meanshape_68.pkl"
    if not path.is_file():
        pytest.skip("insightface's meanshape_68.pkl is not installed")
    with open(path, "rb") as f:
        mean = np.asarray(pickle.load(f), np.float64)[list(M.MEAN_FACE_68_INDEX)]
    assert np.allclose(M.MEAN_FACE_3D, mean * [1, 1, -1], atol=6e-5)


def test_head_pose_rejects_bad_landmarks():
    with pytest.raises(ValueError, match=r"\(68, 2\)"):
        M.head_pose(np.zeros((5, 2)), (100, 100))
    with pytest.raises(ValueError, match="height, width"):
        M.head_pose(np.zeros((68, 2)), (0, 100))


# ---------------------------------------------------------------------------------------------------------------
# expression


def _face_like_landmarks(seed=0):
    rng = np.random.default_rng(seed)
    lm = rng.uniform(40, 200, (68, 2))
    lm[36], lm[45] = [80, 100], [170, 100]
    return lm


def test_expression_error_is_zero_for_identical_and_similar_copies():
    lm = _face_like_landmarks()
    assert M.expression_error(lm, lm) == pytest.approx(0, abs=1e-9)
    copy = _rotate_points(lm, 23.0, np.array([10.0, -5])) * 1.7 + [30, -12]
    assert M.expression_error(copy, lm) == pytest.approx(0, abs=1e-9)


def test_expression_error_matches_scipy_procrustes():
    """scipy.spatial.procrustes standardises both shapes (unit Frobenius norm) and fits scale + rotation: the same
    least-squares similarity, so its residuals rescaled to the reference's units give the same NME."""
    from scipy.spatial import procrustes
    ref = _face_like_landmarks(1)
    moved = ref.copy()
    moved[48:68] += np.random.default_rng(2).normal(0, 4.0, (20, 2))     # the mouth moves
    moved = _rotate_points(moved, -9.0, np.zeros(2)) * 0.8
    inner = list(M.INNER_68)
    m1, m2, _ = procrustes(ref[inner], moved[inner])
    scale = np.linalg.norm(ref[inner] - ref[inner].mean(0))
    iod = np.linalg.norm(ref[36] - ref[45])
    expected = np.linalg.norm(m1 - m2, axis=1).mean() * scale / iod * 100
    assert M.expression_error(moved, ref) == pytest.approx(expected, rel=1e-6)
    assert expected > 1.0


def test_landmark_errors_locate_a_moved_part_without_alignment():
    ref = _face_like_landmarks(4)                                   # outer eye corners 90 px apart
    moved = ref.copy()
    moved[48:68] += [0.0, 9.0]                                      # the mouth 9 px down: 10 % of 90 px
    e = M.landmark_errors(moved, ref)
    assert list(e) == ["jaw", "brows", "nose", "eyes", "mouth"]
    assert e["mouth"] == pytest.approx(10.0) and max(e["jaw"], e["brows"], e["nose"], e["eyes"]) == 0
    shifted = M.landmark_errors(ref + [4.5, 0.0], ref)             # a whole-face shift counts everywhere (5 %)
    assert all(v == pytest.approx(5.0) for v in shifted.values())
    assert M.expression_error(ref + [4.5, 0.0], ref) == pytest.approx(0, abs=1e-9)   # where NME sees nothing
    with pytest.raises(ValueError, match=r"\(68, 2\)"):
        M.landmark_errors(ref[:60], ref)


def test_expression_error_grows_with_the_change():
    ref = _face_like_landmarks(3)
    errs = []
    for d in (1.0, 3.0, 9.0):
        moved = ref.copy()
        moved[62:68, 1] += d                                           # the lower inner lip drops by d px
        errs.append(M.expression_error(moved, ref))
    assert 0 < errs[0] < errs[1] < errs[2]


# ---------------------------------------------------------------------------------------------------------------
# PSNR / SSIM


def test_psnr_closed_forms():
    rng = np.random.default_rng(0)
    a = rng.integers(10, 240, (32, 48, 3)).astype(np.uint8)
    assert M.psnr(a, a) == math.inf
    b = a.astype(int) + 5
    assert M.psnr(b, a) == pytest.approx(20 * math.log10(255 / 5))
    mask = np.zeros((32, 48))
    mask[:, :24] = 1
    c = a.copy()
    c[:, 24:] = 0                                                     # different only outside the mask
    assert M.psnr(c, a, mask=mask) == math.inf
    with pytest.raises(ValueError, match="same shape"):
        M.psnr(a, a[:10])


def test_ssim_identical_and_constant_images():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (40, 40, 3)).astype(np.uint8)
    assert M.ssim(a, a) == pytest.approx(1.0)
    c1, c2 = 100.0, 140.0
    C1 = (0.01 * 255) ** 2                                            # Wang et al. 2004: C1 = (K1 L)^2, K1 = 0.01
    expected = (2 * c1 * c2 + C1) / (c1 ** 2 + c2 ** 2 + C1)          # zero variances: the contrast term is 1
    assert M.ssim(np.full((20, 20, 3), c1), np.full((20, 20, 3), c2)) == pytest.approx(expected, rel=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# Fréchet distance


def _sample_with_moments(mu, sigma, n, seed):
    """n samples whose sample mean and (unbiased) covariance are exactly mu and sigma."""
    z = np.random.default_rng(seed).normal(size=(n, len(mu)))
    z -= z.mean(0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T      # whitened: cov = I
    return z @ np.linalg.cholesky(sigma).T + mu


def test_frechet_distance_of_identical_sets_is_zero():
    x = np.random.default_rng(0).normal(size=(50, 8))
    assert M.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_closed_forms():
    # 1-D: (mu1 - mu2)^2 + (s1 - s2)^2
    assert M.gaussian_frechet_distance([1.0], [[4.0]], [-2.0], [[9.0]]) == pytest.approx(9 + 1)
    # commuting (diagonal) covariances: |dmu|^2 + sum (sqrt a - sqrt b)^2
    a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 1.0])
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert M.gaussian_frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected)
    # samples whose moments are exactly those Gaussians' give the same number
    x, y = _sample_with_moments(mu1, np.diag(a), 40, 1), _sample_with_moments(mu2, np.diag(b), 30, 2)
    assert M.frechet_distance(x, y) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_general_covariances_vs_scipy_sqrtm():
    from scipy.linalg import sqrtm
    rng = np.random.default_rng(3)
    A, B = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    s1, s2 = A @ A.T + 0.1 * np.eye(6), B @ B.T + 0.1 * np.eye(6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * np.real(sqrtm(s1 @ s2)))
    assert M.gaussian_frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)


def test_inception_fallback_is_reported():
    ok, reason = M.inception_status()
    assert ok or reason                                               # unavailable always says why
    if not ok:
        assert M.inception_fid_kid([np.zeros((8, 8, 3), np.uint8)] * 2, [np.zeros((8, 8, 3), np.uint8)] * 2) is None


# ---------------------------------------------------------------------------------------------------------------
# identity


def test_gallery_rank_known_answer():
    e = np.array([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0, 0.9, 0.1], [0, 0, 1.0]])
    g = M.Gallery(e / np.linalg.norm(e, axis=1, keepdims=True), ["a", "a", "b", "b", "c"], list("01234"))
    q = np.array([0.2, 1.0, 0.05])
    assert g.rank(q, "b") == 0 and g.rank(q, "a") == 1 and g.rank(q, "c") == 2
    q2 = np.array([0.0, 0.3, 1.0])                                    # nearest c, then b
    assert g.rank(q2, "b") == 1
    assert g.rank(q2, "b", exclude=["4"]) == 0                       # c's only photo left out: c is not ranked
    with pytest.raises(ValueError, match="no gallery photo left"):
        g.rank(q, "c", exclude=["4"])


def test_same_person_is_closer_than_different_people(analyzer):
    """dlib's ResNet on real photos: every same-person cosine exceeds every different-person cosine here."""
    from dfs.faces.images import load_image
    root = shared_lfw_photos()
    people = ["Tom_Hanks", "Ariel_Sharon", "Britney_Spears"]
    items, labels = [], []
    for p in people:
        for i in (1, 2):
            im = load_image(root / p / f"{p}_{i:04d}.jpg")
            items.append((im, analyzer.largest(im)))
            labels.append(p)
    e = M.FaceEmbedder()(items)
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    C = M.cosine(e[:, None, :], e[None, :, :])
    same = np.array(labels)[:, None] == np.array(labels)[None, :]
    off = ~np.eye(len(labels), dtype=bool)
    assert C[same & off].min() > C[~same].max(), (C[same & off].min(), C[~same].max())


def test_judge_target_unchanged_triple(analyzer):
    """Result = target: zero pose and expression error, cosine 1 to the target, the source's cosine below it."""
    from dfs.faces.images import load_image
    root = shared_lfw_photos()
    src, tgt = load_image(root / "Tom_Hanks" / "Tom_Hanks_0001.jpg"), load_image(root / "Ariel_Sharon" /
                                                                                  "Ariel_Sharon_0001.jpg")
    fs, ft = analyzer.largest(src), analyzer.largest(tgt)
    judge = M.SwapJudge(analyzer=analyzer)
    s = judge.triple(M.Triple(src, tgt, tgt.copy(), fs, ft, "Tom_Hanks", "s", "t"))
    assert s.pose_error == pytest.approx(0, abs=1e-6) and s.expression_error == pytest.approx(0, abs=1e-6)
    assert s.id_cos_target == pytest.approx(1.0, abs=1e-6)
    assert s.id_cos_source < s.id_cos_target
    summary = M.summarise([s, s])
    assert summary["n"] == 2 and summary["id_top1"] is None and summary["result_no_face"] == 0


def test_embed_paths_skips_photos_without_a_face(analyzer, tmp_path):
    from PIL import Image

    from dfs.faces.images import load_image
    blank = tmp_path / "wall.png"
    Image.fromarray(np.full((120, 120, 3), 200, np.uint8)).save(blank)
    photo = shared_lfw_photos() / "Tom_Hanks" / "Tom_Hanks_0002.jpg"
    embedder = M.FaceEmbedder()
    emb, missing = embedder.embed_paths([photo, blank], analyzer)
    assert list(emb) == [photo] and missing == [blank]
    im = load_image(photo)
    assert np.allclose(emb[photo], embedder([(im, analyzer.largest(im))])[0])


def test_face_embedder_gives_other_encoders_arcface_crops(analyzer):
    """A non-dlib encoder receives crops aligned to the ArcFace template at its input size."""
    import torch

    from dfs.faces.identity import IdentityEncoder
    from dfs.faces.images import load_image

    class Probe(IdentityEncoder):
        dim, input_size = 3, 112

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))
            self.seen = []

        def embed(self, images):
            self.seen.append(tuple(images.shape))
            return torch.nn.functional.normalize(images.float().mean((2, 3)) + 1.0, dim=-1)

    im = load_image(shared_lfw_photos() / "Tom_Hanks" / "Tom_Hanks_0001.jpg")
    face = analyzer.largest(im)
    probe = Probe()
    e = M.FaceEmbedder(probe)([(im, face)])
    assert probe.seen == [(1, 3, 112, 112)] and e.shape == (1, 3)    # not dlib's 150x150 chip


# ---------------------------------------------------------------------------------------------------------------
# bootstrap intervals and paired differences


def _score(cos, rank, pose, found=True):
    return M.TripleScores(cos, 0.8, rank, pose if found else None, None, None, None, None, found)


def test_intervals_and_paired_differences_over_pairs():
    a = [_score(0.9 + 0.01 * k, 0, 2.0 + 0.1 * k) for k in range(20)]
    b = [_score(0.85 + 0.01 * k, 3, 3.0 + 0.1 * k, found=k % 2 == 0) for k in range(20)]
    iv = M.intervals(a, seed=0)
    assert iv["id_top1"] == [1.0, 1.0] and iv["face_found"] == [1.0, 1.0]
    assert iv["id_cos_source"][0] < np.mean([s.id_cos_source for s in a]) < iv["id_cos_source"][1]
    d = M.paired_differences(a, b, seed=0)
    # every pair differs by exactly +0.05 in cosine and -1° in pose (where the other result has a face)
    assert d["id_cos_source"]["mean"] == pytest.approx(0.05) and d["id_cos_source"]["low"] == pytest.approx(0.05)
    assert d["pose_error"]["mean"] == pytest.approx(-1.0) and d["pose_error"]["n"] == 10
    assert d["id_top1"]["mean"] == 1.0 and d["face_found"]["mean"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="same pairs"):
        M.paired_differences(a, b[:3])
