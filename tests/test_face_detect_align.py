"""dfs.faces.images / detect / align: robust loading, dlib detection vs dlib itself, alignment maths vs
scikit-image and closed forms, masks, warps and their inverse."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from dfs.faces import align
from dfs.faces.images import BadImageError, load_image, to_rgb_uint8

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

cv2 = pytest.importorskip("cv2")


def _t1_path() -> Path:
    insightface = pytest.importorskip("insightface")
    p = Path(insightface.__file__).parent / "data" / "images" / "t1.jpg"
    if not p.is_file():
        pytest.skip("insightface's t1.jpg is not installed")
    return p


# ---------------------------------------------------------------------------------------------------------------
# image loading


def _pattern(h=24, w=40) -> np.ndarray:
    """An asymmetric colour pattern: red band on the left, blue at the top, a green gradient."""
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 4, 0] = 220
    a[: h // 4, :, 2] = 200
    a[..., 1] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
    return a


def test_exif_orientation_is_applied(tmp_path):
    a = _pattern()
    exif = Image.Exif()
    exif[0x0112] = 6  # EXIF Orientation 6: the stored image must be rotated 90 degrees clockwise for display
    p = tmp_path / "rotated.jpg"
    Image.fromarray(a).save(p, quality=98, exif=exif)
    out = load_image(p)
    expected = np.rot90(a, k=-1)  # clockwise
    assert out.shape == expected.shape == (40, 24, 3)
    assert np.abs(out.astype(int) - expected).mean() < 4


def test_gray_palette_rgba_cmyk_and_16bit(tmp_path):
    g = np.arange(0, 250, 10, dtype=np.uint8).reshape(5, 5)
    Image.fromarray(g, mode="L").save(tmp_path / "gray.png")
    out = load_image(tmp_path / "gray.png")
    assert out.shape == (5, 5, 3) and out.dtype == np.uint8
    assert (out == g[..., None]).all()

    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., :3] = [200, 40, 10]
    rgba[..., 3] = [[0, 128, 255], [255, 255, 0]]
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    out = load_image(tmp_path / "rgba.png").astype(int)
    assert (out[0, 0] == 255).all() and (out[1, 2] == 255).all()      # transparent -> white
    assert out[0, 2].tolist() == [200, 40, 10]                           # opaque -> the colour
    a = 128 / 255
    assert np.allclose(out[0, 1], np.array([200, 40, 10]) * a + 255 * (1 - a), atol=1)

    pal = Image.fromarray(_pattern()).convert("P")
    pal.save(tmp_path / "palette.png")
    assert np.array_equal(load_image(tmp_path / "palette.png"), np.asarray(pal.convert("RGB")))

    v16 = np.array([[0, 65535, 257 * 100, 40000]], dtype=np.uint16)
    Image.fromarray(v16).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I;16")
    out = load_image(tmp_path / "deep.png")[..., 0]
    assert out.tolist() == [[0, 255, 100, round(40000 / 257)]]            # scaled, not clipped at 255

    Image.new("CMYK", (4, 4), (0, 0, 0, 0)).save(tmp_path / "cmyk.jpg")
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    assert load_image(tmp_path / "cmyk.jpg").min() >= 250                # no ink = white


def test_arrays_are_converted():
    assert to_rgb_uint8(np.full((2, 2), 0.5)).tolist() == [[[128] * 3] * 2] * 2
    assert to_rgb_uint8(np.full((2, 2, 1), 65535, np.uint16)).max() == 255
    with pytest.raises(ValueError, match="shape"):
        to_rgb_uint8(np.zeros((2, 2, 5), np.uint8))
    with pytest.raises(ValueError, match="NaN"):
        to_rgb_uint8(np.full((2, 2), np.nan))


def test_bad_files_raise_with_the_file_name(tmp_path):
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"this is not a JPEG at all" * 10)
    with pytest.raises(BadImageError, match=r"junk\.jpg: not an image"):
        load_image(junk)
    good = tmp_path / "good.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(good)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(BadImageError, match=r"cut\.jpg: .*(corrupt|truncated)"):
        load_image(cut)
    assert issubclass(BadImageError, ValueError)
    with pytest.raises(FileNotFoundError, match="nothere.png"):
        load_image(tmp_path / "nothere.png")


# ---------------------------------------------------------------------------------------------------------------
# detection: dlib backend against dlib itself


@pytest.fixture(scope="module")
def t1():
    dlib = pytest.importorskip("dlib")
    pytest.importorskip("face_recognition_models")
    from dfs.faces.detect import FaceAnalyzer
    image = load_image(_t1_path())
    analyzer = FaceAnalyzer(max_side=2048)  # no downscaling: compare with dlib on the same pixels
    return dlib, image, analyzer, analyzer.detect(image)


def test_dlib_backend_matches_dlib(t1):
    dlib, image, _, faces = t1
    from dfs.faces.detect import _dlib_model
    from dfs.faces.identity import dlib_model_path

    assert len(faces) == 6  # dependencies.md: dlib's HOG finds the six people of t1.jpg
    areas = [f.area for f in faces]
    assert areas == sorted(areas, reverse=True)
    det = dlib.get_frontal_face_detector()
    rects = det(image, 1)
    assert sorted(tuple(f.box.astype(int)) for f in faces) == sorted(
        (r.left(), r.top(), r.right(), r.bottom()) for r in rects)
    sp68 = dlib.shape_predictor(str(dlib_model_path("shape_predictor_68_face_landmarks.dat")))
    sp5 = dlib.shape_predictor(str(dlib_model_path("shape_predictor_5_face_landmarks.dat")))
    for f in faces:
        r = dlib.rectangle(*f.box.astype(int))
        assert np.array_equal(f.landmarks68, [[p.x, p.y] for p in sp68(image, r).parts()])
        assert np.array_equal(f.dlib5, [[p.x, p.y] for p in sp5(image, r).parts()])
        lm5 = f.landmarks5
        assert np.allclose(lm5[0], f.landmarks68[36:42].mean(0)) and np.allclose(lm5[2], f.landmarks68[30])
        assert lm5[0, 0] < lm5[2, 0] < lm5[1, 0] and lm5[3, 0] < lm5[4, 0]   # left/right order, nose between
        assert lm5[2, 1] < lm5[3, 1]                                           # mouth below the nose
        x0, y0, x1, y1 = f.box
        assert ((lm5[:, 0] > x0 - 5) & (lm5[:, 0] < x1 + 5) & (lm5[:, 1] > y0 - 5) & (lm5[:, 1] < y1 + 5)).all()
    assert _dlib_model("sp68") is _dlib_model("sp68")  # loaded once


def test_largest_and_index(t1):
    from dfs.faces.detect import FaceNotFoundError
    _, image, analyzer, faces = t1
    crop = image[150:480, 0:600]  # three of the six faces: cheaper to re-detect
    small = analyzer.detect(crop)
    assert len(small) == 3
    assert np.array_equal(analyzer.largest(crop).box, small[0].box)
    assert np.array_equal(analyzer.largest(crop, index=2).box, small[2].box)
    with pytest.raises(FaceNotFoundError, match=r"index 3 .* 3 face\(s\) .*crop\.png"):
        analyzer.largest(crop, index=3, name="crop.png")


def test_downscaled_detection_maps_back(t1):
    from dfs.faces.detect import FaceAnalyzer
    _, image, _, _ = t1
    crop = image[150:480, 0:600]
    ref = FaceAnalyzer(max_side=2048).detect(crop)
    k = 3
    big = cv2.resize(crop, None, fx=k, fy=k, interpolation=cv2.INTER_CUBIC)   # 1800 x 990
    down = FaceAnalyzer(max_side=600).detect(big)                              # detected at 600 x 330
    assert len(down) == len(ref) == 3
    for a, b in zip(ref, down):
        assert np.abs(a.box - ((b.box + 0.5) / k - 0.5)).max() <= 3
        assert np.abs(a.landmarks68 - ((b.landmarks68 + 0.5) / k - 0.5)).max() <= 3   # in big-image pixels / k


def test_cnn_detector_matches_dlib(t1):
    dlib, image, _, faces = t1
    from dfs.faces.detect import FaceAnalyzer
    from dfs.faces.identity import dlib_model_path
    crop = np.ascontiguousarray(image[230:450, 1060:1280])   # one face, about 110 px
    found = FaceAnalyzer(detector="cnn", upsample=0).detect(crop)
    ref = dlib.cnn_face_detection_model_v1(str(dlib_model_path("mmod_human_face_detector.dat")))(crop, 0)
    assert len(found) == len(ref) == 1
    r = ref[0].rect
    assert found[0].box.tolist() == [r.left(), r.top(), r.right(), r.bottom()]
    assert found[0].score == pytest.approx(ref[0].confidence)
    inside = [f.box for f in faces if 1060 < (f.box[0] + f.box[2]) / 2 < 1280 and 230 < (f.box[1] + f.box[3]) / 2 < 450]
    assert len(inside) == 1
    hog = inside[0] - [1060, 230, 1060, 230]   # the same person as HOG found it in the whole photo
    inter = np.prod(np.clip(np.minimum(hog[2:], found[0].box[2:]) - np.maximum(hog[:2], found[0].box[:2]), 0, None))
    union = np.prod(hog[2:] - hog[:2]) + np.prod(found[0].box[2:] - found[0].box[:2]) - inter
    assert inter / union > 0.5


def test_no_face_names_the_file(tmp_path):
    pytest.importorskip("dlib")
    from dfs.faces.detect import FaceAnalyzer, FaceNotFoundError
    p = tmp_path / "wall.png"
    y, x = np.mgrid[0:120, 0:160]
    Image.fromarray(np.stack([x, y, x + y], -1).astype(np.uint8)).save(p)
    analyzer = FaceAnalyzer()
    assert analyzer.detect(p) == []
    with pytest.raises(FaceNotFoundError, match=r"no face found in .*wall\.png \(160x120\)"):
        analyzer.largest(p)
    with pytest.raises(FaceNotFoundError, match=r"the image \(160x120 array\)"):
        analyzer.largest(load_image(p))


def test_bad_analyzer_arguments():
    from dfs.faces.detect import FaceAnalyzer
    with pytest.raises(ValueError, match="backend"):
        FaceAnalyzer("mtcnn")
    with pytest.raises(ValueError, match="detector"):
        FaceAnalyzer(detector="haar")
    with pytest.raises(ValueError, match="upsample"):
        FaceAnalyzer(upsample=-1)


# ---------------------------------------------------------------------------------------------------------------
# insightface backend: the missing-model message, and the adapter on a stand-in model


def test_insightface_missing_models_message(tmp_path):
    from dfs.faces.detect import FaceAnalyzer, ModelWeightsMissing
    with pytest.raises(ModelWeightsMissing) as e:
        FaceAnalyzer("insightface", root=tmp_path)
    msg = str(e.value)
    folder = str(tmp_path / "models" / "buffalo_l")
    assert isinstance(e.value, FileNotFoundError)
    assert "det_10g.onnx" in msg and "2d106det.onnx" in msg and folder in msg
    assert "download" in msg and "backend='dlib'" in msg
    (tmp_path / "models" / "buffalo_l").mkdir(parents=True)
    (tmp_path / "models" / "buffalo_l" / "det_10g.onnx").write_bytes(b"")
    with pytest.raises(ModelWeightsMissing, match=r"missing 2d106det\.onnx, 1k3d68\.onnx .*incomplete"):
        FaceAnalyzer("insightface", root=tmp_path, download=True)   # never reaches the network


def test_insightface_adapter(monkeypatch):
    common = pytest.importorskip("insightface.app.common")
    from dfs.faces.detect import FaceAnalyzer
    seen = {}

    class StandIn:  # what FaceAnalysis.get returns: boxes, 5 points, 68 3-D points, in the image it was given
        def get(self, img):
            seen["img"] = img
            lm68 = np.zeros((68, 3))
            lm68[:, 0] = np.linspace(100, 200, 68)
            lm68[:, 1] = 150
            small = common.Face(bbox=np.array([10, 10, 30, 30.]), det_score=0.6,
                                kps=np.array([[15, 15], [25, 15], [20, 20], [16, 26], [24, 26.]]),
                                landmark_3d_68=None, landmark_2d_106=None)
            large = common.Face(bbox=np.array([90, 100, 210, 220.]), det_score=0.9, kps=None,
                                landmark_3d_68=lm68, landmark_2d_106=np.ones((106, 2)))
            return [small, large]

    monkeypatch.setattr(FaceAnalyzer, "_insightface", lambda self: StandIn())
    rgb = np.zeros((400, 600, 3), np.uint8)
    rgb[..., 0] = 255  # red
    faces = FaceAnalyzer("insightface", max_side=300).detect(rgb)
    assert seen["img"].shape == (200, 300, 3) and (seen["img"][..., 2] == 255).all()   # BGR, shrunk by 2
    assert [f.score for f in faces] == pytest.approx([0.9, 0.6])                      # largest first
    big = faces[0]
    assert np.allclose(big.box, (np.array([90, 100, 210, 220]) + 0.5) * 2 - 0.5)
    assert big.landmarks68.shape == (68, 2) and big.landmarks106.shape == (106, 2)
    assert np.allclose(big.landmarks5, align.five_from_68(big.landmarks68))           # derived when kps absent
    assert faces[1].landmarks68 is None and faces[1].landmarks5.shape == (5, 2)


# ---------------------------------------------------------------------------------------------------------------
# similarity transforms


def _similarity(scale, angle_deg, tx, ty) -> np.ndarray:
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    return np.array([[scale * c, -scale * s, tx], [scale * s, scale * c, ty]])


def test_umeyama_recovers_a_known_similarity_exactly():
    rng = np.random.default_rng(0)
    for _ in range(5):
        M = _similarity(rng.uniform(0.2, 5), rng.uniform(-180, 180), *rng.uniform(-300, 300, 2))
        src = rng.uniform(0, 500, (rng.integers(2, 70), 2))
        est = align.umeyama(src, align.apply_affine(M, src))
        assert np.allclose(est, M, atol=1e-9)
        assert align.similarity_scale(est) == pytest.approx(math.sqrt(abs(np.linalg.det(M[:, :2]))))
        assert np.allclose(align.apply_affine(align.invert_affine(est), align.apply_affine(est, src)), src)


def _sk_estimate(cls, src, dst) -> np.ndarray:
    if hasattr(cls, "from_estimate"):  # scikit-image >= 0.26
        return cls.from_estimate(src, dst).params[:2]
    t = cls()
    assert t.estimate(src, dst)
    return t.params[:2]


def test_umeyama_matches_scikit_image():
    transform = pytest.importorskip("skimage.transform")
    rng = np.random.default_rng(1)
    batch_src, batch_dst = [], []
    for k in range(6):
        src = rng.normal(size=(5, 2)) * 40 + 100
        dst = rng.normal(size=(5, 2)) * 40 + 60  # unrelated points: a real least-squares problem
        if k == 0:
            dst = src * [-1, 1]                  # a mirror image: the best rotation needs the det correction
        ref = _sk_estimate(transform.SimilarityTransform, src, dst)
        assert np.allclose(align.umeyama(src, dst), ref, atol=1e-8)
        euclid = _sk_estimate(transform.EuclideanTransform, src, dst)
        assert np.allclose(align.umeyama(src, dst, estimate_scale=False), euclid, atol=1e-8)
        batch_src.append(src)
        batch_dst.append(dst)
    batched = align.umeyama(torch.tensor(np.stack(batch_src)), torch.tensor(np.stack(batch_dst)))
    assert batched.shape == (6, 2, 3)
    assert np.allclose(batched.numpy(), np.stack([align.umeyama(s, d) for s, d in zip(batch_src, batch_dst)]))
    with pytest.raises(ValueError, match="coincide"):
        align.umeyama(np.ones((5, 2)), rng.normal(size=(5, 2)))


def test_templates():
    # ArcFace's own points are already aligned at 112: the identity; at 224 they scale by 2 about pixel edges
    assert np.allclose(align.alignment_matrix(align.ARCFACE_112, "arcface", 112), np.eye(2, 3), atol=1e-9)
    M = align.alignment_matrix(align.ARCFACE_112, "arcface", 224)
    assert np.allclose(M, [[2, 0, 0.5], [0, 2, 0.5]], atol=1e-9)
    # FFHQ: the quad is a square of half-side max(2|eye-eye|, 1.8|eye-mouth|) centred at eye_avg + 0.1 eye_mouth
    lm5 = np.array([[40, 50], [80, 50], [60, 70], [45, 95], [75, 95.]])
    q = align.ffhq_quad(lm5)
    sides = np.linalg.norm(np.roll(q, -1, 0) - q, axis=1)
    half = max(2 * 40, 1.8 * 45)
    assert np.allclose(sides, 2 * half)
    assert np.allclose(q.mean(0), [60, 50 + 0.1 * 45])
    assert np.allclose(q[0], [60 - half, 54.5 - half])                      # upper-left first
    # equivariance: rotating and scaling the face rotates and scales the quad with it
    R = _similarity(1.7, 33, 12, -5)
    assert np.allclose(align.ffhq_quad(align.apply_affine(R, lm5)), align.apply_affine(R, q))
    # in the crop, the quad fills the frame and the symmetric face sits in the middle, eyes level
    M = align.alignment_matrix(align.apply_affine(R, lm5), "ffhq", 256)
    crop_lm = align.apply_affine(M, align.apply_affine(R, lm5))
    assert crop_lm[0, 1] == pytest.approx(crop_lm[1, 1]) and crop_lm[2, 0] == pytest.approx(127.5)
    assert np.allclose(align.apply_affine(M, align.apply_affine(R, q)), [[-0.5, -0.5], [-0.5, 255.5],
                                                                          [255.5, 255.5], [255.5, -0.5]])
    with pytest.raises(ValueError, match="template"):
        align.alignment_matrix(lm5, "vggface", 112)
    with pytest.raises(ValueError, match=r"\(\.\.\., 5, 2\)"):
        align.alignment_matrix(np.zeros((21, 2)), "ffhq", 112)
    lm68 = _synthetic_68()
    lm68[36:42], lm68[42:48], lm68[30], lm68[48], lm68[54] = [80, 90], [120, 90], [100, 110], [85, 130], [115, 130]
    assert np.allclose(align.alignment_matrix(lm68, "arcface", 112),
                       align.alignment_matrix(align.five_from_68(lm68), "arcface", 112))


# ---------------------------------------------------------------------------------------------------------------
# warps and pasting back


def test_warp_round_trip_and_paste_back():
    image = load_image(_t1_path())[150:480, 0:600]
    # a known similarity that enlarges a 120-px face region to 256 px, turned by 20 degrees
    centre = np.array([120.0, 190.0])
    M = _similarity(256 / 120, 20, 0, 0)
    M[:, 2] = 127.5 - M[:, :2] @ centre
    crop = align.warp_image(image, M, 256)
    back = align.paste_back(np.zeros_like(image), crop, M)
    ys, xs = np.mgrid[0:image.shape[0], 0:image.shape[1]]
    inside = np.hypot(xs - centre[0], ys - centre[1]) < 50          # well inside the crop's footprint
    err = np.abs(back.astype(float) - image)[inside]
    assert err.mean() < 3 and np.percentile(err, 99) < 25           # bilinear up then down: close, not exact
    outside = np.hypot(xs - centre[0], ys - centre[1]) > 130        # beyond the crop: target untouched
    assert (back[outside] == 0).all()
    # a mask keeps the target where it is 0
    mask = np.zeros((256, 256), np.float32)
    mask[64:192, 64:192] = 1
    target = np.full_like(image, 7)
    out = align.paste_back(target, crop, M, mask)
    pts = align.apply_affine(M, np.stack([xs, ys], -1).reshape(-1, 2).astype(float)).reshape(*xs.shape, 2)
    far = (np.abs(pts - 127.5).max(-1) > 70)                         # outside the mask's square (+ 1 px margin)
    assert (out[far] == 7).all()
    deep = (np.abs(pts - 127.5).max(-1) < 60)
    assert np.abs(out[deep].astype(float) - image[deep]).mean() < 3


def test_torch_warp_matches_opencv_and_inverts():
    image = load_image(_t1_path())[150:480, 0:600]
    M = _similarity(1.3, -15, -20, 30)
    ref = align.warp_image(image, M, (200, 240), border="reflect", antialias=False).astype(np.float32) / 255
    x = torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float() / 255
    out = align.warp_affine(x, torch.tensor(M)[None], (200, 240))[0].permute(1, 2, 0).numpy()
    ys, xs = np.mgrid[0:200, 0:240]
    src = align.apply_affine(align.invert_affine(M), np.stack([xs, ys], -1).reshape(-1, 2).astype(float))
    src = src.reshape(200, 240, 2)
    core = ((src > 2) & (src < np.array(image.shape[1::-1]) - 3)).all(-1)   # samples inside the image
    assert core.mean() > 0.5
    diff = np.abs(out[core] - ref[core])
    assert diff.max() < 0.03 and diff.mean() < 2e-3     # OpenCV rounds sub-pixel positions to 1/32 px
    # two transforms in a batch, each its own
    M2 = torch.tensor(np.stack([M, _similarity(0.8, 40, 50, -10)]))
    both = align.warp_affine(x.expand(2, -1, -1, -1), M2, 64)
    assert torch.allclose(both[1], align.warp_affine(x, M2[1:], 64)[0])
    # crop and paste back with the inverse: the image returns inside the footprint; gradients reach the image
    x.requires_grad_(True)
    crop = align.warp_affine(x, torch.tensor(_similarity(2.0, 10, -100, -200))[None], 256)
    back = align.warp_affine(crop, align.invert_affine(torch.tensor(_similarity(2.0, 10, -100, -200)))[None],
                             tuple(image.shape[:2]))
    footprint = align.warp_affine(torch.ones(1, 1, 256, 256, dtype=torch.float32),
                                  align.invert_affine(torch.tensor(_similarity(2.0, 10, -100, -200)))[None],
                                  tuple(image.shape[:2]), padding_mode="zeros")[0, 0] > 0.999
    assert footprint.sum() > 1000
    assert (back - x).abs()[0, :, footprint].mean() < 0.02
    back.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------------------------
# masks


def _synthetic_68(cx=100.0, cy=110.0, r=60.0, brow_y=60.0) -> np.ndarray:
    """68 points whose jaw is a lower half-circle and whose brows are a horizontal line at ``brow_y``."""
    lm = np.full((68, 2), [cx, cy])
    t = np.linspace(0, math.pi, 17)
    lm[0:17] = np.stack([cx - r * np.cos(t), cy + r * np.sin(t)], -1)
    lm[17:27] = np.stack([np.linspace(cx - r, cx + r, 10), np.full(10, brow_y)], -1)
    return lm


def _edge_fit(profile: np.ndarray) -> tuple[float, float]:
    """(position, width) of a Gaussian-blurred step sampled at integer positions: a blurred step is
    Phi((y - position) / width), so probit(profile) is a straight line in y (fit where 0.01 < profile < 0.99)."""
    from scipy.stats import norm
    y = np.arange(len(profile))
    sel = (profile > 0.01) & (profile < 0.99)
    assert sel.sum() >= 3
    slope, intercept = np.polyfit(y[sel], norm.ppf(profile[sel].astype(np.float64)), 1)
    return -intercept / slope, 1.0 / slope


def test_mask_values_and_feather_width():
    lm = _synthetic_68()
    hard = align.face_mask(lm, 200)
    assert hard.shape == (200, 200) and hard.dtype == np.float32 and set(np.unique(hard)) <= {0.0, 1.0}
    hull = align.hull(align.face_outline(lm))
    ref = np.zeros((200, 200), np.uint8)
    cv2.fillConvexPoly(ref, np.round(hull * 16).astype(np.int32), 1, shift=4)
    assert (hard != ref).sum() < 0.5 * cv2.arcLength(hull.astype(np.float32), True)  # boundary pixels only
    # the fraction of each pixel the hull covers: fill at 8x resolution (pixel centres at (x + 0.5) * 8 - 0.5)
    hi = np.zeros((1600, 1600), np.uint8)
    cv2.fillConvexPoly(hi, np.round(((hull + 0.5) * 8 - 0.5) * 16).astype(np.int32), 1, shift=4)
    coverage = cv2.resize(hi.astype(np.float32), (200, 200), interpolation=cv2.INTER_AREA)
    for sigma in (2.0, 4.0):
        soft = align.face_mask(lm, 200, feather=sigma)
        assert soft.min() >= 0 and soft.max() <= 1
        assert soft[80, 100] > 0.999                    # >= 20 px inside every edge
        assert soft[int(60 + 4 * sigma), 100] > 0.999   # 4 sigma inside the brow line: Phi(4) = 0.99997
        assert soft[5, 5] < 1e-3 and soft[195, 100] < 1e-3 and soft[int(60 - 4 * sigma), 100] < 1e-3
        position, width = _edge_fit(soft[:100, 100])    # down a vertical line through the brow edge at y = 60
        assert position == pytest.approx(60, abs=0.02) and width == pytest.approx(sigma, rel=0.01)
        blurred = cv2.GaussianBlur(coverage, (0, 0), sigma)   # OpenCV's blur of the hull's pixel coverage
        assert np.abs(blurred[40:90, 70:130] - soft[40:90, 70:130]).max() < 0.02   # along the brow edge
    dilated = align.face_mask(lm, 200, feather=2.0, dilate=6.0)
    assert _edge_fit(dilated[:100, 100])[0] == pytest.approx(54, abs=0.02)   # the edge moved out by 6 px
    assert dilated.sum() > align.face_mask(lm, 200, feather=2.0).sum()
    with pytest.raises(ValueError, match="feather"):
        align.face_mask(lm, 200, feather=-1)


def test_mask_batched_and_differentiable():
    lms = np.stack([_synthetic_68(), _synthetic_68(90, 100, 40, 70)])
    batch = align.face_mask(torch.tensor(lms), (160, 180), feather=3.0)
    assert batch.shape == (2, 160, 180) and isinstance(batch, torch.Tensor)
    for i in range(2):
        assert np.allclose(batch[i].numpy(), align.face_mask(lms[i], (160, 180), feather=3.0), atol=1e-6)
    poly = torch.tensor(align.hull(align.face_outline(lms[0])), dtype=torch.float32)[None].requires_grad_(True)
    m = align.convex_polygon_mask(poly, 200, feather=2.0)
    m.sum().backward()
    assert poly.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------------------------
# mirroring 68-point landmarks (training-time flips)


def test_mirror_permutation_is_an_involution_that_fixes_the_midline():
    perm = np.array(align.IBUG68_MIRROR)
    assert sorted(perm) == list(range(68)) and np.array_equal(perm[perm], np.arange(68))
    assert {i for i in range(68) if perm[i] == i} == {8, 27, 28, 29, 30, 33, 51, 57, 62, 66}


def test_mirrored_landmarks_match_dlib_on_the_mirrored_photo():
    """dlib's 68 points on a flipped photo are our mirrored points of the photo (up to the detector's own jitter)."""
    from dfs.faces.detect import FaceAnalyzer

    from tests.shared_data import shared_lfw_photos

    analyzer = FaceAnalyzer(max_side=2048)
    photos = sorted(shared_lfw_photos().glob("*/*.jpg"))[:40:8]
    for p in photos:
        image = load_image(p)
        lm = analyzer.largest(image).landmarks68
        flipped = analyzer.largest(np.ascontiguousarray(image[:, ::-1])).landmarks68
        mirrored = align.mirror_landmarks68(lm, image.shape[1])
        iod = np.linalg.norm(lm[36:42].mean(0) - lm[42:48].mean(0))
        err = np.linalg.norm(mirrored - flipped, axis=1).mean() / iod
        wrong = np.linalg.norm(np.asarray(lm, float) * [-1, 1] + [image.shape[1] - 1, 0] - flipped, axis=1).mean() / iod
        assert err < 0.05, f"{p.name}: mean error {err:.3f} IOD"
        assert wrong > 3 * err   # without renumbering the points would be far off
