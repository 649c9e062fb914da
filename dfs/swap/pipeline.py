"""The one face-swap pipeline every method goes through.

    pipe = SwapPipeline(ClassicalSwap())
    result = pipe.swap("source.jpg", "target.jpg", seed=0)
    result.save("out.png")                           # PNG with text chunks saying it is a synthetic face swap

The steps, the same for every method (classical, diffusion, FaceShifter):

1. **detect** the largest face in the source and in the target photo (:class:`dfs.faces.detect.FaceAnalyzer`);
   a photo without a face raises ``FaceNotFoundError`` naming the role and the file;
2. **align** each face (:mod:`dfs.faces.align`): the similarity ``M`` (photo -> crop) to the method's template and
   crop size, the aligned crop, the 68 landmarks in crop coordinates, and the target's soft face mask (hull of jaw
   and brows, feathered);
3. **swap**: ``method.swap(sources, targets, context)`` returns one swapped crop per pair, aligned like the
   target's crop;
4. **blend and paste back**: ``out = m' * crop' + (1 - m') * target`` where ' is the inverse warp ``M^-1`` into the
   full-resolution target photo (``dfs.faces.align.paste_back``): outside the mask the photo is untouched.

A method is any object with a ``name`` and ``swap(sources, targets, context) -> list of (S, S, 3) crops``
(:class:`SwapMethod`); optional attributes ``crop_size`` (default 256), ``template`` ("ffhq"), ``checkpoint``
(recorded in the PNG) and ``batch_size`` (pairs per call, default 8).
"""
from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from dfs.faces.align import alignment_matrix, apply_affine, face_mask, paste_back, warp_image
from dfs.faces.detect import Face, FaceAnalyzer, FaceNotFoundError
from dfs.faces.images import load_image, to_rgb_uint8


class SwapNote(UserWarning):
    """What the pipeline chose for the user and says so: which face of a crowded photo, which targets it skipped
    (``dfs swap`` prints these as one-line notes)."""


@dataclass
class AlignedFace:
    """A detected face and its aligned crop.  ``matrix`` maps photo pixels to crop pixels."""

    image: np.ndarray          # (H, W, 3) uint8 RGB: the full photo
    face: Face                 # the detection, in photo coordinates
    crop: np.ndarray           # (S, S, 3) uint8: the aligned crop
    matrix: np.ndarray         # (2, 3) photo -> crop similarity
    landmarks68: np.ndarray    # (68, 2) in crop coordinates
    mask: np.ndarray           # (S, S) float32 in [0, 1]: the soft face mask in crop coordinates
    name: str                  # the file (or a description), for messages and metadata

    @property
    def size(self) -> int:
        return self.crop.shape[0]


@dataclass
class SwapContext:
    """What a method may need besides the faces: one seed per pair (``rng(i)`` / ``generator(i)`` derive the
    random streams from it), the torch device, and method options (steps, guidance, ...)."""

    seeds: list[int]
    device: str | None = None
    options: dict = field(default_factory=dict)

    def rng(self, i: int) -> np.random.Generator:
        return np.random.default_rng(self.seeds[i])

    def generator(self, i: int, device=None):
        import torch
        return torch.Generator(device=device or self.device or "cpu").manual_seed(self.seeds[i])


@runtime_checkable
class SwapMethod(Protocol):
    """A face-swap method: ``swap`` returns, for each (source, target) pair, the target's crop with the source's
    identity, (S, S, 3) uint8 (or float in [0, 1]) aligned like ``target.crop``."""

    name: str

    def swap(self, sources: Sequence[AlignedFace], targets: Sequence[AlignedFace],
             context: SwapContext) -> list[np.ndarray]:
        ...


class SourcePasted:
    """The naive reference: the source's aligned crop pasted through the target's mask (no warp to the target's
    landmarks, no colour or Poisson blending).  Its identity is the source's; its pose and expression too."""

    name = "source pasted"

    def swap(self, sources, targets, context):
        return [s.crop for s in sources]


class TargetResampled:
    """The resolution floor: the target's *own* aligned crop pasted back through its mask, nothing swapped.  What a
    perfect reconstruction at the method's crop size would score: resampling the face to S pixels and back alone
    moves dlib's landmarks and blurs its identity (at 32 px: 1.7° of pose error, measured in the README), so a
    method's pose and expression errors are read against this row, not against zero."""

    name = "target resampled"

    def swap(self, sources, targets, context):
        return [t.crop for t in targets]


@dataclass
class SwapResult:
    image: np.ndarray           # (H, W, 3) uint8: the target photo with the swapped face
    crop: np.ndarray            # (S, S, 3) uint8: what the method returned
    source: AlignedFace
    target: AlignedFace
    seed: int
    seconds: float              # method + blend + paste back, per pair (detection and alignment excluded)
    metadata: dict

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``image`` as a PNG carrying ``metadata`` in text chunks (see ``save_png``)."""
        return save_png(path, self.image, self.metadata)


# ---------------------------------------------------------------------------------------------------------------
# PNG metadata


def swap_metadata(method, seed: int, source: str = "", target: str = "") -> dict[str, str]:
    """The text chunks every output PNG carries: that it is synthetic, made with dfs, how (method, checkpoint,
    seed) and from which photos."""
    import dfs

    name = getattr(method, "name", type(method).__name__)
    checkpoint = str(getattr(method, "checkpoint", None) or "none")
    return {
        "Software": f"dfs {dfs.__version__}",
        "Description": (f"Synthetic image: a face swap made with dfs (method {name}, checkpoint {checkpoint}, "
                        f"seed {seed}). The face was generated; it is not a photograph of the person shown."),
        "dfs:synthetic": "face swap",
        "dfs:method": name,
        "dfs:checkpoint": checkpoint,
        "dfs:seed": str(seed),
        "dfs:source": str(source),
        "dfs:target": str(target),
    }


def save_png(path: str | os.PathLike, image: np.ndarray, metadata: dict[str, str]) -> Path:
    """Save an (H, W, 3) uint8 image as PNG with ``metadata`` as iTXt text chunks (UTF-8)."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"{path}: swap results are written as PNG (the metadata lives in PNG text chunks); "
                         "use a .png file name")
    info = PngInfo()
    for k, v in metadata.items():
        info.add_itxt(str(k), str(v))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_rgb_uint8(image)).save(path, pnginfo=info)
    return path


def read_png_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The text chunks of a PNG (what ``save_png`` wrote)."""
    from PIL import Image
    with Image.open(path) as im:
        im.load()
        return {k: str(v) for k, v in getattr(im, "text", {}).items()}


# ---------------------------------------------------------------------------------------------------------------
# the pipeline


def _as_uint8_crop(crop, size: int, method_name: str) -> np.ndarray:
    """A method's crop as (S, S, 3) uint8: uint8 as it is, floats only in [0, 1] (x 255).  Anything else is
    refused: stretching an out-of-range output to fit would hide a method's bug."""
    a = np.asarray(crop)
    if a.shape != (size, size, 3):
        raise ValueError(f"method {method_name!r} returned a crop of shape {a.shape}; expected ({size}, {size}, 3), "
                         "aligned like the target's crop")
    if a.dtype == np.uint8:
        return a
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"method {method_name!r} returned a {a.dtype} crop; a method returns uint8 (0..255) or "
                         "floats in [0, 1]")
    if not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
        raise ValueError(f"method {method_name!r} returned float values in [{np.nanmin(a):.3g}, {np.nanmax(a):.3g}]"
                         " (or NaN); a method returns floats in [0, 1] (or uint8), so this is a bug in the method")
    return np.round(a * 255.0).astype(np.uint8)


class SwapPipeline:
    """detect -> align -> ``method.swap`` -> blend through the feathered mask -> paste back (module docstring).

    ``mask_feather`` / ``mask_dilate``: the face mask's Gaussian edge and dilation as fractions of the crop size.
    ``crop_size`` / ``template`` default to the method's own attributes (else 256 and "ffhq").
    """

    def __init__(self, method: SwapMethod, analyzer: FaceAnalyzer | None = None, crop_size: int | None = None,
                 template: str | None = None, mask_feather: float = 0.02, mask_dilate: float = 0.0,
                 batch_size: int | None = None, face_index: int | None = None):
        if not callable(getattr(method, "swap", None)) or not isinstance(getattr(method, "name", None), str):
            raise ValueError(f"method must have a string `name` and a `swap(sources, targets, context)` method; "
                             f"got {type(method).__name__}")
        self.method = method
        self.analyzer = analyzer or FaceAnalyzer()
        self.crop_size = int(crop_size or getattr(method, "crop_size", 256))
        self.template = template or getattr(method, "template", "ffhq")
        self.batch_size = int(batch_size or getattr(method, "batch_size", 8))
        if self.crop_size < 32:
            raise ValueError(f"crop_size must be at least 32 pixels, got {self.crop_size}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive number of pairs, got {self.batch_size}")
        if not (0 <= mask_feather < 0.5 and 0 <= mask_dilate < 0.5):
            raise ValueError(f"mask_feather and mask_dilate are fractions of the crop size in [0, 0.5), got "
                             f"{mask_feather}, {mask_dilate}")
        self.mask_feather, self.mask_dilate, self.face_index = mask_feather, mask_dilate, face_index

    # -- steps 1 and 2 ----------------------------------------------------------------------------------------

    def align(self, photo, role: str = "photo", name: str | None = None, face: Face | None = None,
              index: int | None = None) -> AlignedFace:
        """Detect (unless ``face`` is given) and align one photo (a path or an (H, W, 3) array).  A photo with
        several faces uses the ``index``-th largest (default: the pipeline's ``face_index``, else the largest) and
        says so with a warning naming the file, the count and how to choose another."""
        if isinstance(photo, (str, os.PathLike)):
            name = name or str(photo)
            image = load_image(photo)
        else:
            image = to_rgb_uint8(photo, name=name or f"the {role} image")
        name = name or f"the {role} image"
        if face is None:
            index = self.face_index if index is None else index
            try:
                faces = self.analyzer.detect(image, name)
                face = self.analyzer.largest(image, index=index, name=name) if not faces else None
            except FaceNotFoundError as e:
                raise FaceNotFoundError(f"no usable face in the {role} photo: {e}") from None
            i = 0 if index is None else index
            if not 0 <= i < len(faces):
                raise FaceNotFoundError(f"no usable face in the {role} photo: face {i} was asked for but "
                                        f"{len(faces)} face(s) were found in {name}; use 0..{len(faces) - 1}")
            face = faces[i]
            if len(faces) > 1:
                warnings.warn(f"{len(faces)} faces in the {role} photo {name}: using face {i} (faces are numbered by "
                              f"size, 0 = largest); pass --{role}-face K to use another", SwapNote, stacklevel=2)
        if face.landmarks68 is None:
            raise ValueError(f"the face mask needs 68-point landmarks, which the {self.analyzer.backend} analyzer "
                             "did not return; use FaceAnalyzer(backend='dlib')")
        S = self.crop_size
        M = alignment_matrix(face.landmarks5, self.template, S)
        lm = apply_affine(M, face.landmarks68)
        mask = face_mask(lm, S, feather=self.mask_feather * S, dilate=self.mask_dilate * S).astype(np.float32)
        return AlignedFace(image, face, warp_image(image, M, S), M, lm, mask, name)

    # -- steps 3 and 4 ----------------------------------------------------------------------------------------

    def blend(self, crop: np.ndarray, target: AlignedFace) -> np.ndarray:
        """Put a swapped crop into the full-resolution target photo through the target's soft mask."""
        return paste_back(target.image, crop, target.matrix, target.mask)

    def run(self, sources: Sequence[AlignedFace], targets: Sequence[AlignedFace], seed: int = 0,
            options: dict | None = None, device=None, seeds: Sequence[int] | None = None) -> list[SwapResult]:
        """Swap aligned pairs, ``batch_size`` pairs per ``method.swap`` call; pair i uses seed ``seed + i`` (or
        ``seeds[i]``), so a pair's result depends on its own seed, not on its batch."""
        if len(sources) != len(targets):
            raise ValueError(f"need one source per target, got {len(sources)} sources and {len(targets)} targets")
        seeds = [seed + i for i in range(len(targets))] if seeds is None else [int(x) for x in seeds]
        if len(seeds) != len(targets):
            raise ValueError(f"need one seed per target, got {len(seeds)} seeds and {len(targets)} targets")
        out: list[SwapResult] = []
        for start in range(0, len(targets), self.batch_size):
            src, tgt = sources[start:start + self.batch_size], targets[start:start + self.batch_size]
            batch_seeds = seeds[start:start + self.batch_size]
            t0 = time.perf_counter()
            crops = self.method.swap(src, tgt, SwapContext(batch_seeds, device, dict(options or {})))
            if len(crops) != len(tgt):
                raise ValueError(f"method {self.method.name!r} returned {len(crops)} crops for {len(tgt)} pairs")
            crops = [_as_uint8_crop(c, self.crop_size, self.method.name) for c in crops]
            images = [self.blend(c, t) for c, t in zip(crops, tgt)]
            per_pair = (time.perf_counter() - t0) / len(tgt)
            for s, t, c, im, sd in zip(src, tgt, crops, images, batch_seeds):
                out.append(SwapResult(im, c, s, t, sd, per_pair, swap_metadata(self.method, sd, s.name, t.name)))
        return out

    # -- conveniences -----------------------------------------------------------------------------------------

    def swap(self, source, target, seed: int = 0, source_face: int | None = None, target_face: int | None = None,
             **options) -> SwapResult:
        """One swap: ``source`` and ``target`` are paths or (H, W, 3) arrays (or ``AlignedFace``); ``source_face`` /
        ``target_face`` pick a face by size rank in a photo with several (default the largest)."""
        s = source if isinstance(source, AlignedFace) else self.align(source, "source", index=source_face)
        t = target if isinstance(target, AlignedFace) else self.align(target, "target", index=target_face)
        return self.run([s], [t], seed, options)[0]

    def swap_many(self, source, targets: Sequence, seed: int = 0, errors: str = "raise",
                  source_face: int | None = None, **options) -> list[SwapResult]:
        """One source onto many targets (paths, arrays, or a folder of photos), in batches.

        ``errors="skip"`` leaves out targets without a face (or unreadable), with a warning each; they are listed
        in ``self.skipped`` as (name, reason)."""
        from dfs.faces.images import BadImageError, is_image_file

        if errors not in ("raise", "skip"):
            raise ValueError(f"errors must be 'raise' or 'skip', got {errors!r}")
        if isinstance(targets, (str, os.PathLike)) and Path(targets).is_dir():
            folder = Path(targets)
            targets = sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p))
            if not targets:
                raise ValueError(f"{folder}: no image files (.jpg, .png, ...) to use as targets")
        s = source if isinstance(source, AlignedFace) else self.align(source, "source", index=source_face)
        aligned, kept, self.skipped = [], [], []
        for i, t in enumerate(targets):
            try:
                aligned.append(t if isinstance(t, AlignedFace) else
                               self.align(t, "target", name=None if isinstance(t, (str, os.PathLike))
                                          else f"target {i}"))
                kept.append(i)
            except (FaceNotFoundError, BadImageError, FileNotFoundError) as e:
                if errors == "raise":
                    raise
                self.skipped.append((str(t) if isinstance(t, (str, os.PathLike)) else f"target {i}", str(e)))
                warnings.warn(f"skipped a target: {e}", SwapNote, stacklevel=2)
        # the i-th target keeps seed + i whatever was skipped before it
        return self.run([s] * len(aligned), aligned, seed, options, seeds=[seed + i for i in kept])
