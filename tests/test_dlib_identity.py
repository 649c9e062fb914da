"""dlib's face-recognition ResNet in PyTorch (dfs.faces.identity) against dlib itself, and the .dat reader.

The reference is ``dlib.face_recognition_model_v1.compute_face_descriptor`` run in the test on the same 150x150
chips (dlib's HOG detector + 5 landmarks + get_face_chip): one photo of each of the shared LFW subset's 50
identities and the six people of insightface's ``t1.jpg``.  Faces: ``DFS_DATA`` (CI: ../shared/data/faces), else
<repo>/../shared/data/faces; skipped when absent.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from dfs.faces.dlib_format import DlibFormatError, Reader, read_dlib_net
from dfs.paths import repo_root

dlib = pytest.importorskip("dlib")
pytest.importorskip("face_recognition_models")

from dfs.faces.dlib_chips import face_chips  # noqa: E402
from dfs.faces.images import load_image  # noqa: E402
from dfs.faces.identity import DlibResNetEncoder, dlib_model_path, load_dlib_resnet  # noqa: E402


def shared_faces_dir() -> Path | None:
    env = os.environ.get("DFS_DATA")
    candidates = [Path(env), repo_root() / env] if env else [repo_root().parent / "shared" / "data" / "faces"]
    for c in candidates:
        if (c / "lfw_home" / "lfw_funneled").is_dir():
            return c.resolve()
    return None


def t1_path() -> Path | None:
    try:
        import insightface
    except ImportError:
        return None
    p = Path(insightface.__file__).parent / "data" / "images" / "t1.jpg"
    return p if p.is_file() else None


@pytest.fixture(scope="session")
def cache(tmp_path_factory):
    """A private weights cache for this session (the conversion runs once, later loads read the safetensors)."""
    d = tmp_path_factory.mktemp("dfs_cache")
    old = os.environ.get("DFS_CACHE")
    os.environ["DFS_CACHE"] = str(d)
    yield d
    if old is None:
        os.environ.pop("DFS_CACHE", None)
    else:
        os.environ["DFS_CACHE"] = old


@pytest.fixture(scope="session")
def encoder(cache):
    return DlibResNetEncoder()


@pytest.fixture(scope="session")
def faces():
    """(chips (N,150,150,3) uint8, dlib descriptors (N,128), names)."""
    root = shared_faces_dir()
    if root is None:
        pytest.skip("shared LFW faces not found: set DFS_DATA to the folder holding lfw_home/ (../shared/data/faces)")
    chips, names = [], []
    for person in sorted((root / "lfw_home" / "lfw_funneled").iterdir()):
        photo = sorted(person.glob("*.jpg"))[0]
        found = face_chips(load_image(photo))
        assert found, f"dlib found no face in {photo}"
        chips.append(found[0].chip)
        names.append(photo.name)
    t1 = t1_path()
    if t1 is not None:
        found = face_chips(load_image(t1))
        assert len(found) == 6, f"expected the six people of t1.jpg, dlib found {len(found)}"
        chips += [f.chip for f in found]
        names += [f"t1.jpg#{i}" for i in range(len(found))]
    rec = dlib.face_recognition_model_v1(str(dlib_model_path()))
    ref = np.array([np.array(rec.compute_face_descriptor(c)) for c in chips])
    return np.stack(chips), ref, names


# ---------------------------------------------------------------------------------------------------------------
# the reader


def test_primitive_encodings_follow_dlib_spec():
    # integers: control byte (bit 7 = sign, low 4 bits = byte count) + little-endian magnitude
    r = Reader(bytes([0x02, 0x2C, 0x01, 0x81, 0x05, 0x00, 0x01, 0x00]))
    assert [r.int(), r.int(), r.int(), r.int()] == [300, -5, 0, 0]
    # floats: mantissa then exponent, value = m * 2**e; exponent 32000 = +inf
    r = Reader(bytes([0x01, 0x03, 0x81, 0x02, 0x81, 0x07, 0x01, 0x00, 0x00, 0x02, 0x00, 0x7D]))
    assert [r.float(), r.float(), r.float()] == [0.75, -7.0, float("inf")]
    r = Reader(bytes([0x01, 0x02]) + b"ab" + b"10")
    assert (r.string(), r.bool(), r.bool()) == ("ab", True, False)
    with pytest.raises(DlibFormatError, match=r"byte 0 .*control byte 0x30"):
        Reader(b"0").int()


def test_model_file_holds_dlib_face_recognition_resnet():
    net = read_dlib_net(dlib_model_path())
    # loss_metric's defaults (margin 0.04, distance threshold 0.6) and input_rgb_image_sized<150>'s channel means
    assert net.loss.params["margin"] == pytest.approx(0.04) and net.loss.params["dist_thresh"] == pytest.approx(0.6)
    assert net.input.params["avg_rgb"] == pytest.approx((122.782, 117.001, 104.298), abs=1e-4)
    assert (net.input.params["nr"], net.input.params["nc"]) == (150, 150)
    kinds = net.kinds()
    assert kinds.count("con") == 29 and kinds.count("affine") == 29 and kinds.count("fc") == 1
    assert net.layers[-1].tensors["weight"].shape == (256, 128)
    n_params = sum(t.size for layer in net.layers for t in layer.tensors.values())
    assert n_params == sum(p.numel() for p in load_dlib_resnet(cache=False).parameters())


def _enc_int(v: int) -> bytes:  # dlib's integer encoding, written from its spec (serialize.h)
    mag = abs(v).to_bytes(max(1, (abs(v).bit_length() + 7) // 8), "little")
    return bytes([len(mag) | (0x80 if v < 0 else 0)]) + mag


def _enc_tensor(values, shape) -> bytes:  # tensor version 2: header + little-endian float32
    return _enc_int(2) + b"".join(map(_enc_int, shape)) + np.asarray(values, "<f4").tobytes()


def test_batch_norm_layer_is_read_as_its_inference_affine():
    """bn_con2 (gamma, beta, running mean/var, eps) -> gamma' = gamma/sqrt(var+eps), beta' = beta - gamma'·mean."""
    from dfs.faces.dlib_format import _layer_details
    alias = _enc_int(1) + b"".join(map(_enc_int, (1, 2, 1, 1)))
    zero = _enc_int(1) + _enc_int(0)  # the float 0 (mantissa 0, exponent 0)
    eps = _enc_int(1) + _enc_int(-2)  # 1 * 2**-2 = 0.25
    data = (_enc_int(7) + b"bn_con2" + _enc_tensor([2.0, -1.0, 0.5, 3.0], (1, 4, 1, 1)) + alias + alias
            + _enc_tensor([], (0, 0, 0, 0)) * 2 + _enc_tensor([1.0, 2.0], (1, 2, 1, 1))
            + _enc_tensor([3.75, 0.0], (1, 2, 1, 1)) + _enc_int(100) + _enc_int(1000) + zero * 4 + eps)
    r = Reader(data)
    layer = _layer_details(r)
    assert r.pos == len(data) and layer.kind == "affine" and layer.params["conv_mode"]
    np.testing.assert_allclose(layer.tensors["gamma"], [2.0 / 2.0, -1.0 / 0.5])       # sqrt(4), sqrt(0.25)
    np.testing.assert_allclose(layer.tensors["beta"], [0.5 - 1.0 * 1.0, 3.0 + 2.0 * 2.0])


@pytest.mark.parametrize("keep", [20, 300, 1_000_000, -3])
def test_truncated_file_is_rejected_with_position(tmp_path, keep):
    data = dlib_model_path().read_bytes()
    bad = tmp_path / "truncated.dat"
    bad.write_bytes(data[:keep])
    with pytest.raises(DlibFormatError) as e:
        read_dlib_net(bad)
    msg = str(e.value)
    assert str(bad) in msg and "byte" in msg and "expected" in msg and "truncated" in msg


def test_corrupt_file_is_rejected_with_what_was_expected(tmp_path):
    data = bytearray(dlib_model_path().read_bytes())
    at = data.index(b"con_4")
    data[at:at + 5] = b"con_9"
    bad = tmp_path / "corrupt.dat"
    bad.write_bytes(bytes(data))
    with pytest.raises(DlibFormatError, match=rf"byte {at - 2}\b.*'con_9'"):
        read_dlib_net(bad)
    bad.write_bytes(b"\xff\xd8\xff\xe0 not a dlib file")
    with pytest.raises(DlibFormatError, match="control byte 0xff"):
        read_dlib_net(bad)


# ---------------------------------------------------------------------------------------------------------------
# the network against dlib


def test_torch_descriptor_matches_dlib(encoder, faces):
    chips, ref, names = faces
    assert len(chips) >= 50
    with torch.no_grad():
        ours = encoder.descriptor(torch.from_numpy(chips).permute(0, 3, 1, 2)).double().numpy()
    cos = (ours * ref).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(ref, axis=1)
    diff = np.abs(ours - ref).max()
    print(f"\n{len(chips)} faces: cosine to dlib min {cos.min():.12f} mean {cos.mean():.12f} "
          f"(1 - min = {1 - cos.min():.2g}); "
          f"max |descriptor - dlib| {diff:.3g} (dlib's norms {np.linalg.norm(ref, axis=1).mean():.3f} on average)")
    worst = names[int(cos.argmin())]
    assert cos.min() >= 0.999, f"cosine {cos.min()} on {worst}"
    assert diff < 1e-3, f"raw descriptors differ by {diff}"


def test_embed_is_the_normalised_descriptor_and_resizes(encoder, faces):
    chips = torch.from_numpy(faces[0][:4]).permute(0, 3, 1, 2)
    with torch.no_grad():
        d = encoder.descriptor(chips)
        e = encoder.embed(chips.float() / 255)
        e_big = encoder.embed(torch.nn.functional.interpolate(chips.float() / 255, scale_factor=2, mode="nearest"))
    torch.testing.assert_close(e.norm(dim=1), torch.ones(4))
    torch.testing.assert_close(e, d / d.norm(dim=1, keepdim=True), atol=1e-6, rtol=1e-5)
    assert (e_big * e).sum(1).min() > 0.999   # a 300x300 copy is resized back to (nearly) the same chip


def test_gradients_flow_to_the_input(encoder, faces):
    x = (torch.from_numpy(faces[0][:2]).permute(0, 3, 1, 2).float() / 255).requires_grad_(True)
    e = encoder.embed(x)
    (e[0] * e[1]).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in encoder.parameters())  # the encoder itself stays frozen


def test_bad_inputs_say_what_to_do(encoder):
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        encoder.embed(torch.zeros(150, 150, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        encoder.embed(torch.full((1, 3, 150, 150), 128.0))


def test_converted_weights_are_cached_and_reused(cache, encoder):
    files = list(cache.glob("dlib_resnet_v1-*.safetensors"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    fresh = load_dlib_resnet(cache=False).state_dict()
    cached = load_dlib_resnet().state_dict()
    assert files[0].stat().st_mtime_ns == stamp
    for k, v in fresh.items():
        assert torch.equal(v, cached[k]), k
    # another .dat (here: a copy) is converted again only if its bytes differ
    other = cache / "copy.dat"
    shutil.copy(dlib_model_path(), other)
    load_dlib_resnet(other)
    assert len(list(cache.glob("dlib_resnet_v1-*.safetensors"))) == 1
