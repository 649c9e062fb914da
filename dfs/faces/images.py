"""Robust image loading: any photo file -> (H, W, 3) uint8 RGB, or a ``BadImageError`` that says what is wrong.

``load_image(path)`` applies the EXIF orientation (phone photos are often stored sideways with a rotation tag),
then converts whatever Pillow decoded:

    gray (L, 1), palette (P)      -> RGB (gray replicated; palette looked up)
    RGBA, LA, PA, P+transparency  -> composited on WHITE (a transparent background becomes white, never the
                                     arbitrary colour hidden under alpha = 0)
    16-bit (I;16*, I)             -> scaled to 0..255 (value / 257, i.e. 65535 -> 255; never clipped at 255)
    32-bit float (F)              -> scaled: [0, 1] -> 0..255, otherwise min..max -> 0..255
    CMYK, YCbCr                   -> RGB through Pillow
16-bit-per-channel RGB PNGs are decoded by Pillow to 8-bit (it keeps the high byte), which is a proper scaling.

``to_rgb_uint8(array)`` does the same for arrays already in memory (gray, RGBA, uint16, float in [0, 1]).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm")


class BadImageError(ValueError):
    """A file that is not a usable image (corrupt, truncated, not an image at all, unsupported)."""


def is_image_file(path: str | os.PathLike) -> bool:
    """True for file names with a common image suffix (case-insensitive); the content is not checked."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def _composite_on_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha.astype(np.float32)[..., None] / 255.0
    return np.round(rgb.astype(np.float32) * a + 255.0 * (1.0 - a)).astype(np.uint8)


def to_rgb_uint8(array: np.ndarray, name: str = "the image") -> np.ndarray:
    """An image array -> (H, W, 3) uint8 RGB.

    Accepts (H, W) or (H, W, 1) gray, (H, W, 3) RGB, (H, W, 4) RGBA (composited on white, alpha 255 = opaque);
    dtypes uint8, uint16 (0..65535, scaled by 1/257), other integers (0..255 if they fit, else 0..65535), bool, and
    floats in [0, 1] (scaled by 255; other float ranges are min..max normalised).
    """
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)) or 0 in a.shape:
        raise ValueError(f"{name}: expected an (H, W), (H, W, 3) or (H, W, 4) image array, got shape {a.shape}")
    if a.dtype == np.uint8:
        pass
    elif a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif a.dtype == np.uint16:
        a = np.round(a.astype(np.float32) / 257.0).astype(np.uint8)
    elif np.issubdtype(a.dtype, np.integer):
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi > 65535:
            raise ValueError(f"{name}: integer pixel values in [{lo}, {hi}] fit neither 8 nor 16 bits; "
                             "rescale it to 0..255 (uint8) first")
        a = a.astype(np.uint8) if hi <= 255 else np.round(a.astype(np.float32) / 257.0).astype(np.uint8)
    elif np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise ValueError(f"{name}: the float image contains NaN or infinity")
        lo, hi = float(a.min()), float(a.max())
        if lo >= 0.0 and hi <= 1.0:
            a = np.round(a * 255.0)
        else:
            a = np.round((a - lo) / max(hi - lo, 1e-12) * 255.0)
        a = a.astype(np.uint8)
    else:
        raise ValueError(f"{name}: unsupported pixel dtype {a.dtype}; use uint8, uint16 or float in [0, 1]")
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    elif a.shape[2] == 4:
        a = _composite_on_white(a[..., :3], a[..., 3])
    return np.ascontiguousarray(a)


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB, EXIF orientation applied (see the module docstring).

    Raises ``FileNotFoundError`` for a missing file and ``BadImageError`` (a ValueError) naming the file for one
    that cannot be decoded.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        with Image.open(path) as im:
            im.load()
            im = ImageOps.exif_transpose(im)  # a rotated/flipped copy when the EXIF Orientation tag says so
            mode = im.mode
            if mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            elif mode == "PA":
                im = im.convert("RGBA")
            elif mode in ("1", "CMYK", "YCbCr", "RGBX", "RGBa", "La"):
                im = im.convert("RGB" if mode != "La" else "LA")
            elif mode not in ("L", "LA", "RGB", "RGBA", "I", "F") and not mode.startswith("I;16"):
                im = im.convert("RGB")  # other modes Pillow can convert (HSV, ...); LAB etc. raise -> caught below
            a = np.asarray(im)
    except UnidentifiedImageError as e:
        raise BadImageError(f"{path}: not an image file Pillow can read ({path.stat().st_size} bytes); "
                            "check that it is a JPEG/PNG/... photo, or remove it from the data folder") from e
    except Image.DecompressionBombError as e:
        raise BadImageError(f"{path}: too many pixels to decode safely ({e}); downscale the file first") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise BadImageError(f"{path}: the image data is corrupt or truncated ({e}); re-download or re-export "
                            "the file, or remove it from the data folder") from e
    if mode in ("LA", "PA") or (a.ndim == 3 and a.shape[2] == 2):  # gray + alpha
        a = np.concatenate([np.repeat(a[..., :1], 3, axis=2), a[..., 1:2]], axis=2)
    if a.dtype.byteorder == ">":  # I;16B
        a = a.astype(a.dtype.newbyteorder("="))
    return to_rgb_uint8(a, name=str(path))
