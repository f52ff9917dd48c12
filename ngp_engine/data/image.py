"""Reading and writing images for the image field (Pillow), with one-line errors."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import UserError
from ..files import atomic_write

MIN_SIZE = 2


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image as float32 [H, W, C] in [0, 1]; C is 1 (grey), 3 (RGB) or 4 (RGBA).

    8- and 16-bit PNGs, JPEG, palette and grey+alpha images are accepted; an OpenEXR file
    comes as its linear values (`is_hdr_file`), which may exceed 1. Raises
    `UserError` naming the file for anything that is not a readable image.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not an image")
    if is_hdr_file(path):                # linear values, not clamped to [0, 1]
        from .exr import read_exr  # noqa: PLC0415

        return read_exr(path)
    try:
        with Image.open(path) as img:
            img.load()
            arr = _to_float(img)
    except Image.DecompressionBombError as e:
        raise UserError(f"{path}: {e}") from None
    except UnidentifiedImageError:
        raise UserError(f"{path}: not an image Pillow can read") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read image ({e})") from None
    h, w = arr.shape[:2]
    if h < MIN_SIZE or w < MIN_SIZE:
        raise UserError(f"{path}: image is {w}x{h}; at least {MIN_SIZE}x{MIN_SIZE} pixels are needed")
    return arr


def is_hdr_file(path: str | os.PathLike) -> bool:
    """Whether the file holds linear high-dynamic-range values (OpenEXR)."""
    return Path(path).suffix.lower() == ".exr"


def _to_float(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(img).astype(np.float32)
        scale = 65535.0 if mode.startswith("I;16") or a.max() > 255 else 255.0
        return np.clip(a / scale, 0.0, 1.0)[..., None]
    if mode == "F":
        return np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)[..., None]
    if mode in ("L", "1"):
        return (np.asarray(img.convert("L"), dtype=np.float32) / 255.0)[..., None]
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        return np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


def to_display(linear: np.ndarray) -> np.ndarray:
    """Linear values (HDR) as a viewable image in [0, 1]: clipped, sRGB-like gamma 2.2."""
    return np.clip(linear, 0.0, 1.0) ** (1.0 / 2.2)


def to_uint8(img: np.ndarray) -> np.ndarray:
    """[H, W, C] float in [0, 1] -> uint8, grey kept as a 2-D array for Pillow."""
    out = (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return out[..., 0] if out.shape[-1] == 1 else out


def save_png(path: str | os.PathLike, img: np.ndarray) -> None:
    """Write [H, W, C] float in [0, 1] as an 8-bit PNG, atomically."""
    atomic_write(Path(path), lambda tmp: Image.fromarray(to_uint8(img)).save(tmp, format="PNG"))
