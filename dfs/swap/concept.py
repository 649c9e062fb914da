"""A personal concept for the diffusion swap: one person's identity tokens (and, for a full fine-tune, the U-Net's
weight changes) learned from a few photos by ``dfs personalize`` (:mod:`dfs.personalize`), used by
``dfs swap --concept NAME``.

Two files per concept, ``concepts/<name>.safetensors`` and ``concepts/<name>.json`` (or wherever ``--out`` put them):

* the safetensors file: ``tokens`` (K, token_dim) float32, the identity tokens that replace τ(e) in the U-Net's
  cross-attention; ``embedding`` (128,) the normalised mean identity vector of the photos (for identity guidance);
  ``photos.crops`` (k, S, S, 3) uint8 and ``photos.landmarks68`` (k, 68, 2): the aligned photos, whose first one
  is the pixel reference (warped onto each target) when ``dfs swap`` gets no ``--source``; and for mode "full"
  ``unet_delta.<name>`` float16: θ_tuned − θ_base for every U-Net parameter (a difference, so fp16's 11-bit
  mantissa rounds the small change, not the weight: the error is ~2⁻¹¹ of the change);
* the JSON: what was trained (mode, steps, learning rate, prior weight λ, photos used and skipped, losses), the
  base checkpoint it was made for (path and :func:`weights_sha256`) and the safetensors file's sha256.

A concept only fits the weights it was trained on: :func:`check_base` refuses any other checkpoint.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

FORMAT = 1
SUFFIX = ".safetensors"


def concepts_dir() -> Path:
    """Where ``dfs personalize`` writes concepts by default and ``dfs swap --concept NAME`` looks: ``concepts/``
    below the repository root."""
    from dfs.paths import repo_root
    return repo_root() / "concepts"


def weights_sha256(model: torch.nn.Module) -> str:
    """The sha256 of a model's state (every parameter and buffer as float32 bytes, in key order): the identity of
    the base weights a concept was trained on, the same for a checkpoint folder and the model loaded from it."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(np.ascontiguousarray(v.detach().float().cpu().numpy()).tobytes())
    return h.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class Concept:
    """One person's learned identity (module docstring).  ``info`` is the JSON."""

    name: str
    mode: str                                   # "tokens" or "full"
    tokens: torch.Tensor                        # (K, token_dim)
    embedding: torch.Tensor                     # (id_dim,) unit vector: the photos' mean identity
    crops: np.ndarray                           # (k, S, S, 3) uint8 aligned photos
    landmarks68: np.ndarray                     # (k, 68, 2) in crop pixels
    unet_delta: dict = field(default_factory=dict)   # name -> fp16 tensor (mode "full")
    info: dict = field(default_factory=dict)

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"tokens": self.tokens.detach().float().cpu().contiguous(),
               "embedding": self.embedding.detach().float().cpu().contiguous(),
               "photos.crops": torch.from_numpy(np.ascontiguousarray(self.crops, np.uint8)),
               "photos.landmarks68": torch.from_numpy(np.ascontiguousarray(self.landmarks68, np.float32))}
        out.update({f"unet_delta.{k}": v.detach().to(torch.float16).cpu().contiguous()
                    for k, v in self.unet_delta.items()})
        return out

    def apply(self, model) -> None:
        """Add the U-Net's weight changes (mode "full") to ``model`` in place (a :class:`SwapDiffusion` holding the
        base weights, :func:`check_base`)."""
        if not self.unet_delta:
            return
        params = dict(model.unet.named_parameters())
        unknown = sorted(set(self.unet_delta) - set(params))
        if unknown:
            raise ValueError(f"concept {self.name!r}: weight changes for parameters this model does not have "
                             f"({unknown[:3]}); it was made for another model")
        with torch.no_grad():
            for k, d in self.unet_delta.items():
                params[k].add_(d.to(params[k]))


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_concept(concept: Concept, out: str | os.PathLike | None = None) -> Path:
    """Write ``<out>/<name>.safetensors`` and ``<name>.json`` (each atomically; the JSON last, holding the
    safetensors file's sha256, so a half-written pair is detected); returns the safetensors path."""
    from safetensors.torch import save_file

    folder = Path(out) if out is not None else concepts_dir()
    folder.mkdir(parents=True, exist_ok=True)
    weights, meta = folder / f"{concept.name}{SUFFIX}", folder / f"{concept.name}.json"
    _atomic_write(weights, lambda tmp: save_file(concept.tensors(), tmp, metadata={"dfs": "concept",
                                                                                   "format": str(FORMAT)}))
    info = {**concept.info, "format": FORMAT, "name": concept.name, "mode": concept.mode,
            "file": weights.name, "file_sha256": file_sha256(weights), "file_bytes": weights.stat().st_size}
    concept.info = info
    _atomic_write(meta, lambda tmp: Path(tmp).write_text(json.dumps(info, indent=1, default=str) + "\n"))
    return weights


def concept_path(name_or_file: str | os.PathLike) -> Path:
    """The safetensors file of a concept given by file (``.safetensors`` or its ``.json``) or by name (looked up
    in :func:`concepts_dir`)."""
    p = Path(name_or_file).expanduser()
    if p.suffix == ".json":
        p = p.with_suffix(SUFFIX)
    if p.suffix == SUFFIX and p.is_file():
        return p
    named = concepts_dir() / f"{name_or_file}{SUFFIX}"
    if named.is_file():
        return named
    raise FileNotFoundError(f"no concept {str(name_or_file)!r}: neither a file {p} nor {named} exists; make one "
                            f"with `dfs personalize --photos DIR --name {Path(str(name_or_file)).stem}`")


def load_concept(name_or_file: str | os.PathLike) -> Concept:
    """Read a concept (:func:`concept_path`); a missing or mismatched JSON is refused with what to do."""
    from safetensors.torch import load_file

    path = concept_path(name_or_file)
    meta = path.with_suffix(".json")
    if not meta.is_file():
        raise FileNotFoundError(f"{path} has no {meta.name} beside it (what it was trained for); make the concept "
                                "again with dfs personalize")
    info = json.loads(meta.read_text())
    if info.get("file_sha256") != file_sha256(path):
        raise ValueError(f"{path} does not match {meta.name} (its sha256 differs from the one recorded): the pair "
                         "was not written together; make the concept again with dfs personalize")
    t = load_file(str(path))
    delta = {k[len("unet_delta."):]: v for k, v in t.items() if k.startswith("unet_delta.")}
    return Concept(info["name"], info["mode"], t["tokens"], t["embedding"], t["photos.crops"].numpy(),
                   t["photos.landmarks68"].numpy(), delta, info)


def check_base(concept: Concept, model, checkpoint: str) -> None:
    """Refuse a concept made for other base weights than ``model``'s (loaded from ``checkpoint``)."""
    base = concept.info.get("base", {})
    want, have = base.get("weights_sha256"), weights_sha256(model)
    if want != have:
        raise ValueError(f"concept {concept.name!r} was made for the checkpoint {base.get('checkpoint')} (weights "
                         f"sha256 {str(want)[:12]}…), not for {checkpoint} ({have[:12]}…): swap with --checkpoint "
                         f"{base.get('checkpoint')}, or make the concept again for this checkpoint with "
                         f"`dfs personalize --checkpoint {checkpoint}`")
    if tuple(concept.tokens.shape) != tuple(model.null_tokens.shape):
        raise ValueError(f"concept {concept.name!r} has tokens of shape {tuple(concept.tokens.shape)}, the model "
                         f"reads {tuple(model.null_tokens.shape)}")


def reference_face(concept: Concept, index: int = 0):
    """The concept's ``index``-th photo as an :class:`~dfs.swap.pipeline.AlignedFace` (its aligned crop standing
    for the photo): the pixel reference ``dfs swap --concept`` warps onto the targets when no ``--source`` is
    given."""
    from dfs.faces.align import face_mask
    from dfs.swap.pipeline import AlignedFace

    if not 0 <= index < len(concept.crops):
        raise ValueError(f"concept {concept.name!r} holds {len(concept.crops)} photos, asked for photo {index}")
    crop, lm = np.asarray(concept.crops[index]), np.asarray(concept.landmarks68[index], np.float64)
    photos = concept.info.get("photos") or []
    name = photos[index].get("file", str(index)) if index < len(photos) else str(index)
    return AlignedFace(crop, None, crop, np.array([[1.0, 0, 0], [0, 1.0, 0]]), lm,
                       face_mask(lm, crop.shape[0]).astype(np.float32), f"concept {concept.name}, photo {name}")
