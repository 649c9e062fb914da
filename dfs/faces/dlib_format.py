"""A reader for dlib's serialisation format, enough to load a dlib DNN (``dlib_face_recognition_resnet_model_v1.dat``).

Written from dlib's documentation of the format (``dlib/serialize.h``, ``dlib/float_details.h``, the ``serialize``
friends of ``dlib/dnn/core.h``, ``layers.h``, ``input.h``, ``loss.h``, ``tensor.h``); no dlib code is used.

Primitive encodings
    integer   one control byte (bit 7: negative; bits 0-3: number of bytes that follow; bits 4-6 are always 0),
              then |value| little endian in that many bytes.
    float     two integers, mantissa (int64) then exponent (int16): value = mantissa · 2**exponent; the exponents
              32000 / 32001 / 32002 stand for +inf / -inf / NaN.
    string    its length as an integer, then the bytes.  bool: the ASCII byte '1' or '0'.
    tensor    integer version; version 2: num_samples, k, nr, nc, then the values as little-endian float32;
              version 1: the same header, then every value as a dlib float.
    alias     (an ``alias_tensor``, a view into a layer's parameter tensor) version 1, num_samples, k, nr, nc.

Network structure
    A network ``loss<L1<L2<...<Ln<input>>>>>`` is written outside-in: the loss wrapper (version 1) writes its loss
    details then the sub-network.  Every ``add_layer`` writes its version (2), then its whole sub-network, then its
    own layer details and a trailer (three bools and the empty x_grad / cached_output / params_grad tensors).  The
    innermost ``add_layer`` (the one holding the input layer, version 2 or 3) writes the input layer, its details and
    a trailer (three bools, x_grad, cached_output, grad_final, and in version 3 the sample expansion factor).
    ``tag``/``skip`` wrappers write only their version (1) and their sub-network, so they do not say which they
    are: a reader must take that from the network's definition (here: ``dfs.faces.identity``).
    So the file is: all the wrapper versions (outermost first), the input layer, then every layer's details from
    the input side outwards -- which is the forward order that :func:`read_dlib_net` returns.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# float_details' special exponents
_IS_INF, _IS_NINF, _IS_NAN = 32000, 32001, 32002


class DlibFormatError(ValueError):
    """A file that is not (or no longer) what dlib wrote: the message names the file, the byte, what was expected."""


@dataclass
class DlibLayer:
    """One layer in forward order. ``kind``: con, affine, relu, add_prev, max_pool, avg_pool, fc, tag_or_skip, ...

    ``params`` holds the hyperparameters (ints/floats/strings), ``tensors`` the weights as float32 NumPy arrays
    (conv ``weight`` (out, in, kh, kw) + ``bias``; affine ``gamma``/``beta`` (k,); fc ``weight`` (in, out) as dlib
    stores it, + ``bias`` when present).  ``offset`` is the byte where the layer's details begin.
    """

    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    offset: int = -1


@dataclass
class DlibNet:
    path: str
    loss: DlibLayer
    input: DlibLayer
    layers: list[DlibLayer]  # forward order: the layer on the input first, the one under the loss last

    def kinds(self) -> list[str]:
        return [layer.kind for layer in self.layers]


class Reader:
    """Reads dlib's primitive encodings from bytes, raising :class:`DlibFormatError` with the file and byte offset."""

    def __init__(self, data: bytes, path: str = "<bytes>"):
        self.data = data
        self.pos = 0
        self.path = str(path)

    def error(self, expected: str, at: int | None = None, found: str | None = None) -> DlibFormatError:
        at = self.pos if at is None else at
        msg = f"{self.path}: byte {at} of {len(self.data)}: expected {expected}"
        if found is not None:
            msg += f", found {found}"
        if at >= len(self.data) or found == "end of file":
            msg += " (the file is truncated: re-download or re-install it)"
        return DlibFormatError(msg)

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise self.error(f"{n} bytes of {what}", found=f"end of file after {len(self.data) - self.pos} bytes")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def peek_byte(self) -> int | None:
        return self.data[self.pos] if self.pos < len(self.data) else None

    def int(self, what: str = "an integer") -> int:
        start = self.pos
        if self.pos >= len(self.data):
            raise self.error(what, found="end of file")
        ctrl = self.data[self.pos]
        size, negative = ctrl & 0x0F, bool(ctrl & 0x80)
        if ctrl & 0x70 or size > 8:
            raise self.error(f"{what} (control byte with bits 4-6 clear and at most 8 bytes)", at=start,
                             found=f"control byte 0x{ctrl:02x}")
        self.pos += 1
        value = int.from_bytes(self.take(size, what), "little")
        return -value if negative else value

    def float(self, what: str = "a float") -> float:
        start = self.pos
        b = self.peek_byte()
        if b is not None and b & 0x70:
            raise self.error(f"{what} in dlib's binary float format", at=start,
                             found=f"byte 0x{b:02x} (dlib's pre-2013 ASCII float format is not supported)")
        mantissa = self.int(f"{what} (mantissa)")
        exponent = self.int(f"{what} (exponent)")
        if exponent == _IS_INF:
            return math.inf
        if exponent == _IS_NINF:
            return -math.inf
        if exponent == _IS_NAN:
            return math.nan
        return math.ldexp(float(mantissa), exponent)

    def string(self, what: str = "a string") -> str:
        start = self.pos
        n = self.int(f"{what} (length)")
        if n < 0 or n > len(self.data):
            raise self.error(f"{what} (a sensible length)", at=start, found=f"length {n}")
        return self.take(n, what).decode("latin-1")

    def bool(self, what: str = "a bool") -> bool:
        start = self.pos
        b = self.take(1, what)
        if b not in (b"0", b"1"):
            raise self.error(f"{what} (ASCII '0' or '1')", at=start, found=f"byte 0x{b[0]:02x}")
        return b == b"1"

    def expect_string(self, allowed: tuple[str, ...], what: str) -> str:
        start = self.pos
        s = self.string(what)
        if s not in allowed:
            raise self.error(f"{what} {' or '.join(repr(a) for a in allowed)}", at=start, found=repr(s))
        return s

    def shape4(self, what: str) -> tuple[int, int, int, int]:
        shape = tuple(self.int(f"{what} ({d})") for d in ("num_samples", "k", "nr", "nc"))
        if any(d < 0 for d in shape):
            raise self.error(f"{what} with non-negative dimensions", found=str(shape))
        return shape  # type: ignore[return-value]

    def tensor(self, what: str = "a tensor") -> np.ndarray:
        start = self.pos
        version = self.int(f"{what} (version)")
        if version not in (1, 2):
            raise self.error(f"{what} (tensor version 1 or 2)", at=start, found=f"version {version}")
        shape = self.shape4(what)
        n = int(np.prod(shape))
        if version == 2:
            raw = self.take(4 * n, f"{what}: {n} float32 values")
            return np.frombuffer(raw, dtype="<f4").reshape(shape).astype(np.float32)
        return np.array([self.float(what) for _ in range(n)], dtype=np.float32).reshape(shape)

    def alias(self, what: str = "an alias_tensor") -> tuple[int, int, int, int]:
        start = self.pos
        version = self.int(f"{what} (version)")
        if version != 1:
            raise self.error(f"{what} (alias_tensor version 1)", at=start, found=f"version {version}")
        return self.shape4(what)


# ---------------------------------------------------------------------------------------------------------------
# layer details: one reader per dlib version string


def _split(r: Reader, params: np.ndarray, shapes: list[tuple[int, ...]], what: str) -> list[np.ndarray]:
    """Cut a layer's flat parameter tensor into the aliases' shapes (dlib stores them back to back)."""
    flat = params.reshape(-1)
    sizes = [int(np.prod(s)) for s in shapes]
    if sum(sizes) != flat.size:
        raise r.error(f"{what}: parameter tensor of {sum(sizes)} values for shapes {shapes}",
                      found=f"{flat.size} values")
    out, i = [], 0
    for s, n in zip(shapes, sizes):
        out.append(flat[i:i + n].reshape(s))
        i += n
    return out


def _con(r: Reader, layer: DlibLayer) -> None:
    params = r.tensor("con_ parameters")
    p = layer.params
    p["num_filters"], p["nr"], p["nc"] = r.int("con_ num_filters"), r.int("con_ nr"), r.int("con_ nc")
    p["stride_y"], p["stride_x"] = r.int("con_ stride_y"), r.int("con_ stride_x")
    p["padding_y"], p["padding_x"] = r.int("con_ padding_y"), r.int("con_ padding_x")
    filters, biases = r.alias("con_ filters"), r.alias("con_ biases")
    for name in ("learning_rate_multiplier", "weight_decay_multiplier", "bias_learning_rate_multiplier",
                 "bias_weight_decay_multiplier"):
        p[name] = r.float(f"con_ {name}")
    weight, bias = _split(r, params, [filters, biases], "con_")
    layer.tensors["weight"] = weight                      # (num_filters, k, nr, nc): PyTorch's OIHW
    layer.tensors["bias"] = bias.reshape(-1)


def _affine(r: Reader, layer: DlibLayer) -> None:
    params = r.tensor("affine_ parameters")
    gamma_shape, beta_shape = r.alias("affine_ gamma"), r.alias("affine_ beta")
    # newer dlib writes the mode (an integer); older files go straight to add_layer's bool trailer ('0'/'1')
    if r.peek_byte() not in (ord("0"), ord("1")):
        layer.params["mode"] = r.int("affine_ mode")
    gamma, beta = _split(r, params, [gamma_shape, beta_shape], "affine_")
    layer.params["conv_mode"] = gamma_shape[2] == gamma_shape[3] == 1
    layer.tensors["gamma"], layer.tensors["beta"] = gamma.reshape(-1), beta.reshape(-1)


def _bn(r: Reader, layer: DlibLayer) -> None:
    """``bn_con2``/``bn_fc2``: kept as what dlib runs at inference, an affine layer:
    gamma' = gamma / sqrt(running_var + eps), beta' = beta - gamma' * running_mean (Ioffe & Szegedy 2015, Alg. 2)."""
    params = r.tensor("bn_ parameters")
    gamma_shape, beta_shape = r.alias("bn_ gamma"), r.alias("bn_ beta")
    r.tensor("bn_ means"), r.tensor("bn_ invstds")
    running_mean, running_var = r.tensor("bn_ running_means"), r.tensor("bn_ running_variances")
    r.int("bn_ num_updates"), r.int("bn_ running_stats_window_size")
    for name in ("learning_rate_multiplier", "weight_decay_multiplier", "bias_learning_rate_multiplier",
                 "bias_weight_decay_multiplier"):
        r.float(f"bn_ {name}")
    eps = r.float("bn_ eps")
    gamma, beta = _split(r, params, [gamma_shape, beta_shape], "bn_")
    scale = gamma.reshape(-1) / np.sqrt(running_var.reshape(-1) + eps)
    layer.kind = "affine"
    layer.params.update(conv_mode=layer.params["version"] == "bn_con2", from_bn=True, eps=eps)
    layer.tensors["gamma"] = scale.astype(np.float32)
    layer.tensors["beta"] = (beta.reshape(-1) - scale * running_mean.reshape(-1)).astype(np.float32)


def _pool(r: Reader, layer: DlibLayer) -> None:
    p = layer.params
    p["nr"], p["nc"] = r.int("pool nr"), r.int("pool nc")       # 0 x 0 means "the whole input" (avg_pool_everything)
    p["stride_y"], p["stride_x"] = r.int("pool stride_y"), r.int("pool stride_x")
    p["padding_y"], p["padding_x"] = r.int("pool padding_y"), r.int("pool padding_x")


def _fc(r: Reader, layer: DlibLayer) -> None:
    p = layer.params
    p["num_outputs"], p["num_inputs"] = r.int("fc_ num_outputs"), r.int("fc_ num_inputs")
    params = r.tensor("fc_ parameters")
    weights, biases = r.alias("fc_ weights"), r.alias("fc_ biases")
    p["bias_mode"] = r.int("fc_ bias_mode")
    for name in ("learning_rate_multiplier", "weight_decay_multiplier", "bias_learning_rate_multiplier",
                 "bias_weight_decay_multiplier"):
        p[name] = r.float(f"fc_ {name}")
    has_bias = int(np.prod(biases)) > 0
    parts = _split(r, params, [weights, biases] if has_bias else [weights], "fc_")
    layer.tensors["weight"] = parts[0].reshape(p["num_inputs"], p["num_outputs"])  # y = x @ W, as dlib computes
    if has_bias:
        layer.tensors["bias"] = parts[1].reshape(-1)


_LAYERS = {
    "con_4": ("con", _con),
    "affine_": ("affine", _affine),
    "bn_con2": ("bn", _bn),
    "bn_fc2": ("bn", _bn),
    "relu_": ("relu", None),
    "add_prev_": ("add_prev", None),
    "max_pool_2": ("max_pool", _pool),
    "avg_pool_2": ("avg_pool", _pool),
    "fc_2": ("fc", _fc),
}


def _layer_details(r: Reader) -> DlibLayer:
    start = r.pos
    version = r.expect_string(tuple(_LAYERS), "a layer's version string")
    kind, read = _LAYERS[version]
    layer = DlibLayer(kind, {"version": version}, offset=start)
    if read is not None:
        read(r, layer)
    return layer


def _input_layer(r: Reader) -> DlibLayer:
    start = r.pos
    name = r.expect_string(("input_rgb_image_sized", "input_rgb_image"), "the input layer")
    layer = DlibLayer("input", {"version": name}, offset=start)
    layer.params["avg_rgb"] = tuple(r.float(f"{name} average {c}") for c in ("red", "green", "blue"))
    if name == "input_rgb_image_sized":
        layer.params["nr"], layer.params["nc"] = r.int(f"{name} NR"), r.int(f"{name} NC")
    return layer


def _loss_layer(r: Reader) -> DlibLayer:
    start = r.pos
    name = r.expect_string(("loss_metric_", "loss_metric_2"), "the loss layer")
    layer = DlibLayer("loss_metric", {"version": name}, offset=start)
    if name == "loss_metric_2":
        layer.params["margin"] = r.float("loss_metric margin")
        layer.params["dist_thresh"] = r.float("loss_metric dist_thresh")
    return layer


def _looks_like_input(r: Reader) -> bool:
    """After a wrapper version: is the next thing the input layer's name (so that version was the innermost)?"""
    save = r.pos
    try:
        return r.string().startswith("input")
    except DlibFormatError:
        return False
    finally:
        r.pos = save


def read_dlib_net(path: str | os.PathLike) -> DlibNet:
    """Parse a dlib DNN file written by ``dlib::serialize(net, file)`` (a ``loss_metric`` network).

    Returns the loss layer, the input layer and every layer's details in forward order (tag/skip wrappers appear as
    ``kind="tag_or_skip"``: the file does not say which).  A truncated or corrupt file raises
    :class:`DlibFormatError` naming the file, the byte and what was expected there.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dlib model file {path} does not exist")
    r = Reader(path.read_bytes(), str(path))

    start = r.pos
    version = r.int("the loss wrapper's version")
    if version != 1:
        raise r.error("add_loss_layer version 1 (is this a dlib DNN file?)", at=start, found=f"version {version}")
    loss = _loss_layer(r)

    # wrapper versions, outermost first, down to the add_layer that holds the input layer
    wrappers: list[tuple[int, int]] = []  # (version, byte offset)
    while True:
        start = r.pos
        version = r.int("a layer wrapper's version")
        if _looks_like_input(r):
            if version not in (2, 3):
                raise r.error("the input add_layer's version 2 or 3", at=start, found=f"version {version}")
            input_version = version
            break
        if version not in (1, 2):
            raise r.error("add_layer version 2 or tag/skip version 1", at=start, found=f"version {version}")
        wrappers.append((version, start))
        if len(wrappers) > 100_000:
            raise r.error("the input layer within 100000 nested layers")

    inp = _input_layer(r)
    layers = [_layer_details(r)]
    for name in ("this_layer_setup_called", "gradient_input_is_stale", "get_output_and_gradient_input_disabled"):
        r.bool(f"the input add_layer's {name}")
    for name in ("x_grad", "cached_output", "grad_final"):
        r.tensor(f"the input add_layer's {name}")
    if input_version == 3:
        r.int("the input add_layer's sample_expansion_factor")

    for version, start in reversed(wrappers):
        if version == 1:
            layers.append(DlibLayer("tag_or_skip", offset=start))
            continue
        layers.append(_layer_details(r))
        for name in ("this_layer_setup_called", "gradient_input_is_stale",
                     "get_output_and_gradient_input_disabled"):
            r.bool(f"add_layer's {name}")
        for name in ("x_grad", "cached_output", "params_grad"):
            r.tensor(f"add_layer's {name}")

    if r.pos != len(r.data):
        raise r.error("the end of the network", found=f"{len(r.data) - r.pos} more bytes")
    return DlibNet(str(path), loss, inp, layers)
