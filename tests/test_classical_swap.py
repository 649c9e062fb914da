"""dfs.swap.classical and dfs.swap.pipeline: the piecewise-affine warp against a global affine warp, Delaunay's
triangle count, colour statistics, Poisson blending's invariances, a face swapped onto itself, the identity of
swaps on real pairs, the pipeline's errors, batches, paste-back geometry and PNG metadata."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dfs.swap import classical as C
from shared_data import shared_lfw_photos  # noqa: E402

cv2 = pytest.importorskip("cv2")


def _photo(person: str, i: int = 1) -> Path:
    return shared_lfw_photos() / person / f"{person}_{i:04d}.jpg"


@pytest.fixture(scope="module")
def pipe():
    pytest.importorskip("dlib")
    pytest.importorskip("face_recognition_models")
    from dfs.swap.pipeline import SwapPipeline
    return SwapPipeline(C.ClassicalSwap())


def _smooth_image(h=120, w=140, seed=0):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 10, w // 10, 3)).astype(np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


# ---------------------------------------------------------------------------------------------------------------
# the warp


def test_triangle_affines_map_target_vertices_onto_source_vertices():
    rng = np.random.default_rng(0)
    src, dst = rng.uniform(0, 100, (20, 2)), rng.uniform(0, 100, (20, 2))
    tri = C.delaunay_triangles(src)
    A = C.triangle_affines(src, dst, tri)
    for k, t in enumerate(tri):
        mapped = dst[t] @ A[k][:, :2].T + A[k][:, 2]
        assert np.allclose(mapped, src[t], atol=1e-9)


def test_delaunay_triangle_count_is_eulers():
    """A triangulation of n points in general position with h of them on the convex hull has 2n - 2 - h
    triangles."""
    from scipy.spatial import ConvexHull
    p = np.random.default_rng(1).uniform(0, 1, (60, 2))
    assert len(C.delaunay_triangles(p)) == 2 * 60 - 2 - len(ConvexHull(p).vertices)


def test_piecewise_warp_of_a_global_affine_is_that_affine():
    """When the target points are one affine image of the source points, every triangle gets that affine map:
    the piecewise warp equals cv2.warpAffine inside the points' hull."""
    img = _smooth_image()
    h, w = img.shape[:2]
    rng = np.random.default_rng(2)
    src = np.concatenate([rng.uniform(15, 105, (30, 2)), C.border_points(120) * [w / 120, h / 120]])
    A = np.array([[0.9, 0.15, 6.0], [-0.1, 1.05, -4.0]])              # source -> target
    dst = src @ A[:, :2].T + A[:, 2]
    warped, covered = C.piecewise_affine_warp(img, src, dst)
    expected = cv2.warpAffine(img, A, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    inner = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(inner, np.round(C.hull(dst[:30])).astype(np.int32), 1)
    inner = cv2.erode(inner, np.ones((3, 3), np.uint8)).astype(bool)
    assert covered[inner].all()
    diff = np.abs(warped.astype(int) - expected.astype(int))[inner]
    assert diff.max() <= 2 and diff.mean() < 0.3                     # OpenCV's fixed-point bilinear weights


def test_piecewise_warp_moves_a_dot_from_source_to_target_landmark():
    img = np.zeros((100, 100, 3), np.uint8)
    src = np.array([[30.0, 30], [70, 30], [50, 70], [50, 45]]).tolist() + C.border_points(100).tolist()
    dst = np.array([[25.0, 35], [72, 28], [55, 75], [58, 50]]).tolist() + C.border_points(100).tolist()
    src, dst = np.array(src), np.array(dst)
    cv2.circle(img, (50, 45), 2, (255, 255, 255), -1)                  # a dot on source point 3
    warped, _ = C.piecewise_affine_warp(img, src, dst)
    ys, xs = np.nonzero(warped[..., 0] > 128)
    assert np.hypot(xs.mean() - 58, ys.mean() - 50) < 1.0            # ... lands on target point 3


def test_warp_rejects_mismatched_points():
    with pytest.raises(ValueError, match="one N"):
        C.piecewise_affine_warp(np.zeros((10, 10, 3), np.uint8), np.zeros((5, 2)), np.zeros((6, 2)))


# ---------------------------------------------------------------------------------------------------------------
# colour and blending


def test_colour_transfer_matches_the_reference_statistics_in_lab():
    a, b = _smooth_image(seed=3), (_smooth_image(seed=4) * 0.5 + 60).astype(np.uint8)
    mask = np.zeros(a.shape[:2])
    mask[20:100, 30:110] = 1
    out = C.colour_transfer(a, b, mask)
    lab = [cv2.cvtColor(x.astype(np.float32) / 255, cv2.COLOR_RGB2LAB)[mask > 0.5] for x in (out, b)]
    assert np.allclose(lab[0].mean(0), lab[1].mean(0), atol=1.0)
    assert np.allclose(lab[0].std(0), lab[1].std(0), rtol=0.05, atol=0.5)


def test_poisson_blend_keeps_place_and_ignores_a_constant_offset():
    """Seamless cloning keeps the source's gradients with the target on the boundary: source = target gives the
    target back, and a source brighter by a constant has the same gradients, so also gives the target back."""
    t = _smooth_image(seed=5)
    for w, h in [(40, 50), (41, 50), (40, 51), (41, 51)]:             # both parities of the box's width / height
        box = np.zeros(t.shape[:2])
        box[30:30 + h, 50:50 + w] = 1
        assert np.abs(C.poisson_blend(t, t, box).astype(int) - t).max() <= 1, (w, h)
    mask = np.zeros(t.shape[:2])
    cv2.circle(mask, (70, 60), 35, 1, -1)
    assert np.abs(C.poisson_blend(t, t, mask).astype(int) - t).max() <= 1
    brighter = np.clip(t.astype(int) + 40, 0, 255).astype(np.uint8)
    inside = mask > 0.5
    unclipped = inside & (t.max(axis=2) < 215)
    out = C.poisson_blend(brighter, t, mask)
    assert np.abs(out.astype(int) - t)[unclipped].mean() < 2.0


# ---------------------------------------------------------------------------------------------------------------
# the swap through the pipeline


def test_swapping_a_face_onto_itself_is_nearly_the_identity(pipe):
    from dfs.metrics import psnr
    target = pipe.align(_photo("Ariel_Sharon"), "target")
    result = pipe.swap(target, target, seed=0)
    assert result.image.shape == target.image.shape and result.image.dtype == np.uint8
    assert result.crop.shape == (256, 256, 3) and result.crop.dtype == np.uint8
    assert psnr(result.crop, target.crop, mask=target.mask) > 40.0
    assert psnr(result.image, target.image) > 40.0


def test_classical_swap_keeps_the_outside_and_moves_identity_towards_the_source(pipe):
    """Measured on 4 held-out people x 3 targets: on average the result is closer (dlib cosine) to the source than
    to the target, and closer to the source than the unchanged target is."""
    from dfs.faces.align import paste_back
    from dfs.metrics import SwapJudge, Triple
    people = ["Tom_Hanks", "Ariel_Sharon", "Britney_Spears", "Lance_Armstrong"]
    faces = {p: pipe.align(_photo(p), "photo") for p in people}
    judge = SwapJudge(analyzer=pipe.analyzer)
    to_src, to_tgt, gain = [], [], []
    for a in people:
        for b in people:
            if a == b:
                continue
            s, t = faces[a], faces[b]
            r = pipe.swap(s, t, seed=0)
            outside = paste_back(np.zeros_like(t.image), np.full_like(t.crop, 255), t.matrix, t.mask) == 0
            assert (r.image[outside] == t.image[outside]).all()
            sc = judge.triple(Triple(s.image, t.image, r.image, s.face, t.face, a, s.name, t.name))
            base = judge.triple(Triple(s.image, t.image, t.image, s.face, t.face, a, s.name, t.name))
            to_src.append(sc.id_cos_source)
            to_tgt.append(sc.id_cos_target)
            gain.append(sc.id_cos_source - base.id_cos_source)
            assert sc.pose_error is not None and sc.pose_error < 10.0
    assert np.mean(to_src) > np.mean(to_tgt), (np.mean(to_src), np.mean(to_tgt))
    assert np.mean(gain) > 0 and min(gain) > 0, gain


# ---------------------------------------------------------------------------------------------------------------
# the pipeline: errors, batches, paste-back, metadata


class _Recorder:
    """A method that returns the target's own crop and records each call's batch."""

    name = "recorder"
    crop_size = 128
    batch_size = 2

    def __init__(self):
        self.calls = []

    def swap(self, sources, targets, context):
        self.calls.append((len(targets), list(context.seeds)))
        return [t.crop for t in targets]


def test_no_face_errors_name_the_role_and_the_file(pipe, tmp_path):
    from PIL import Image

    from dfs.faces.detect import FaceNotFoundError
    blank = tmp_path / "blank_wall.png"
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(blank)
    with pytest.raises(FaceNotFoundError, match=r"source photo.*blank_wall\.png"):
        pipe.swap(blank, _photo("Tom_Hanks"))
    with pytest.raises(FaceNotFoundError, match=r"target photo.*blank_wall\.png"):
        pipe.swap(_photo("Tom_Hanks"), blank)


def test_batches_seeds_skips_and_paste_back_geometry(pipe, tmp_path):
    """A folder of targets in batches of 2 (one file without a face, skipped); a method that returns the target's
    crop gives back the photo up to resampling inside the mask (the warp and its inverse round-trip)."""
    import shutil

    from PIL import Image

    from dfs.metrics import psnr
    from dfs.swap.pipeline import SwapPipeline
    folder = tmp_path / "targets"
    folder.mkdir()
    for i, p in enumerate(["Ariel_Sharon", "Britney_Spears", "Lance_Armstrong"]):
        shutil.copy(_photo(p), folder / f"{i}.jpg")
    Image.fromarray(np.full((100, 100, 3), 90, np.uint8)).save(folder / "3_noface.png")
    method = _Recorder()
    p = SwapPipeline(method, analyzer=pipe.analyzer)
    with pytest.warns(UserWarning, match="3_noface"):
        results = p.swap_many(_photo("Tom_Hanks"), folder, seed=10, errors="skip")
    assert len(results) == 3 and [n for n, _ in p.skipped] == [str(folder / "3_noface.png")]
    assert method.calls == [(2, [10, 11]), (1, [12])]
    for r in results:
        assert r.crop.shape == (128, 128, 3)
        assert psnr(r.image, r.target.image) > 30.0
    with pytest.raises(Exception, match="3_noface"):
        p.swap_many(_photo("Tom_Hanks"), folder)


def test_method_output_is_checked(pipe):
    from dfs.swap.pipeline import SwapPipeline

    class Wrong:
        name = "wrong"

        def swap(self, sources, targets, context):
            return [np.zeros((10, 10, 3), np.uint8) for _ in targets]
    t = pipe.align(_photo("Ariel_Sharon"))
    with pytest.raises(ValueError, match=r"crop of shape \(10, 10, 3\); expected \(256, 256, 3\)"):
        SwapPipeline(Wrong(), analyzer=pipe.analyzer).swap(t, t)
    with pytest.raises(ValueError, match="string `name`"):
        SwapPipeline(object())


def test_png_metadata_says_synthetic(pipe, tmp_path):
    from dfs.swap.pipeline import read_png_metadata
    t = pipe.align(_photo("Ariel_Sharon"), "target")
    s = pipe.align(_photo("Tom_Hanks"), "source")
    r = pipe.swap(s, t, seed=7)
    path = r.save(tmp_path / "out.png")
    meta = read_png_metadata(path)
    assert meta["dfs:synthetic"] == "face swap" and meta["dfs:method"] == "classical"
    assert meta["dfs:seed"] == "7" and meta["dfs:checkpoint"] == "none"
    assert "Tom_Hanks_0001.jpg" in meta["dfs:source"] and "synthetic" in meta["Description"].lower()
    from dfs.faces.images import load_image
    assert (load_image(path) == r.image).all()
    with pytest.raises(ValueError, match="PNG"):
        r.save(tmp_path / "out.jpg")


def test_a_skipped_target_does_not_shift_the_seeds_of_later_ones(pipe, tmp_path):
    import shutil

    from PIL import Image

    from dfs.swap.pipeline import SwapPipeline
    folder = tmp_path / "targets"
    folder.mkdir()
    shutil.copy(_photo("Ariel_Sharon"), folder / "0.jpg")
    Image.fromarray(np.full((100, 100, 3), 90, np.uint8)).save(folder / "1_noface.png")
    shutil.copy(_photo("Lance_Armstrong"), folder / "2.jpg")
    method = _Recorder()
    with pytest.warns(UserWarning, match="1_noface"):
        results = SwapPipeline(method, analyzer=pipe.analyzer).swap_many(_photo("Tom_Hanks"), folder, seed=10,
                                                                         errors="skip")
    assert [r.seed for r in results] == [10, 12] and method.calls == [(2, [10, 12])]


@pytest.mark.parametrize("bad, msg", [(np.full((256, 256, 3), 1.5, np.float32), r"float values in \[1.5, 1.5\]"),
                                      (np.full((256, 256, 3), -0.1, np.float64), "bug in the method"),
                                      (np.full((256, 256, 3), 300, np.int32), "int32 crop")])
def test_a_method_output_outside_its_range_is_refused_not_stretched(pipe, bad, msg):
    from dfs.swap.pipeline import SwapPipeline

    class OutOfRange:
        name = "out-of-range"

        def swap(self, sources, targets, context):
            return [bad for _ in targets]
    t = pipe.align(_photo("Ariel_Sharon"))
    with pytest.raises(ValueError, match=msg):
        SwapPipeline(OutOfRange(), analyzer=pipe.analyzer).swap(t, t)

    class InRange(OutOfRange):
        def swap(self, sources, targets, context):
            return [np.full((256, 256, 3), 0.5, np.float32) for _ in targets]
    r = SwapPipeline(InRange(), analyzer=pipe.analyzer).swap(t, t)
    assert (r.crop == 128).all()


def test_a_photo_with_several_faces_uses_the_largest_and_says_so(pipe):
    from pathlib import Path

    import insightface

    from dfs.faces.detect import FaceNotFoundError
    group = Path(insightface.__file__).parent / "data" / "images" / "t1.jpg"
    faces = pipe.analyzer.detect(group)
    assert len(faces) >= 2
    with pytest.warns(UserWarning, match=rf"{len(faces)} faces in the target photo .*t1\.jpg: using face 0.*--target-face"):
        t = pipe.align(group, "target")
    np.testing.assert_allclose(t.face.box, faces[0].box)
    with pytest.warns(UserWarning, match="using face 1"):
        t1 = pipe.align(group, "target", index=1)
    np.testing.assert_allclose(t1.face.box, faces[1].box)
    with pytest.raises(FaceNotFoundError, match=rf"face {len(faces)} was asked for"):
        pipe.align(group, "target", index=len(faces))
