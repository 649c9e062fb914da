"""ArcFaceEncoder (onnx2torch conversion of insightface's recognition ONNX) on a small stand-in ONNX graph vs
onnxruntime with insightface's preprocessing, and the message when the real model is missing."""
from __future__ import annotations

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx2torch")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from dfs.faces.identity import ArcFaceEncoder, insightface_model_path  # noqa: E402


def _tiny_recognition_onnx(path, size=32, dim=16, node_prefix=""):
    """input (N,3,size,size) -> Conv 3x3/2 -> PRelu -> Flatten -> Gemm -> (N,dim): the shape of an ArcFace graph."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 0.2, (4, 3, 3, 3)).astype(np.float32), "w")
    slope = numpy_helper.from_array(np.full((4, 1, 1), 0.25, np.float32), "slope")
    n = 4 * ((size - 3) // 2 + 1) ** 2
    fc = numpy_helper.from_array(rng.normal(0, 0.05, (dim, n)).astype(np.float32), "fc")
    nodes = [helper.make_node("Conv", ["input.1", "w"], ["c"], strides=[2, 2], name=f"{node_prefix}Conv_0"),
             helper.make_node("PRelu", ["c", "slope"], ["r"], name="PRelu_1"),
             helper.make_node("Flatten", ["r"], ["f"], axis=1, name="Flatten_2"),
             helper.make_node("Gemm", ["f", "fc"], ["683"], transB=1, name="Gemm_3")]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("input.1", TensorProto.FLOAT,
                                                                           ["None", 3, size, size])],
                              [helper.make_tensor_value_info("683", TensorProto.FLOAT, [1, dim])], [w, slope, fc])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_arcface_encoder_matches_onnxruntime_with_insightface_preprocessing(tmp_path):
    path = tmp_path / "tiny.onnx"
    _tiny_recognition_onnx(path)
    enc = ArcFaceEncoder(path)
    assert (enc.input_size, enc.dim) == (32, 16)
    chips = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (3, 3, 32, 32), dtype=np.uint8))
    # insightface's get_feat: blobFromImages(img, 1/127.5, mean 127.5, swapRB) -> RGB (x - 127.5) / 127.5
    blob = (chips.numpy().astype(np.float32) - 127.5) / 127.5
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input.1": blob})[0]
    with torch.no_grad():
        ours = enc.features(chips).numpy()
        unit = enc.embed(chips.float() / 255).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(unit, ref / np.linalg.norm(ref, axis=1, keepdims=True), rtol=1e-4, atol=1e-5)
    x = (chips.float() / 255).requires_grad_(True)
    enc.embed(x)[:, 0].sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_missing_arcface_model_names_file_and_where_insightface_puts_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"w600k_r50\.onnx is missing.*FaceAnalysis\(name='buffalo_l'\)"):
        insightface_model_path(root=tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ArcFaceEncoder(tmp_path / "nope.onnx")
