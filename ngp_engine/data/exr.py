"""OpenEXR images (linear, high dynamic range) for the image field: read RGB(A) or grey
channels as float32, write float32 RGB(A). One-line errors naming the file."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..files import atomic_write

COLOUR_SETS = (("R", "G", "B", "A"), ("R", "G", "B"), ("Y", "A"), ("Y",))


def read_exr(path: str | os.PathLike) -> np.ndarray:
    """float32 [H, W, C] linear values (C = 4 RGBA, 3 RGB, 2 grey + alpha, 1 grey) of the
    file's first part; layer-less R, G, B (or Y) channels are needed."""
    import OpenEXR  # noqa: PLC0415

    path = Path(path)
    try:
        with OpenEXR.File(str(path), separate_channels=True) as f:
            channels = {name: np.asarray(c.pixels) for name, c in f.channels().items()}
    except Exception as e:  # noqa: BLE001 - OpenEXR raises RuntimeError and others for bad files
        raise UserError(f"{path}: not an EXR OpenEXR can read ({type(e).__name__}: {e})") from None
    for names in COLOUR_SETS:
        if all(n in channels for n in names):
            image = np.stack([channels[n].astype(np.float32) for n in names], axis=-1)
            break
    else:
        found = ", ".join(sorted(channels)) or "none"
        raise UserError(f"{path}: no R, G, B (or Y) channels to fit (it has: {found})")
    if not np.isfinite(image).all():
        raise UserError(f"{path}: holds NaN or infinite values")
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise UserError(f"{path}: image is {image.shape[1]}x{image.shape[0]}; at least 2x2 pixels are needed")
    return image


def write_exr(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write float [H, W, C] (C = 1 grey, 2 grey + alpha, 3 RGB, 4 RGBA) as a ZIP-compressed
    float32 EXR, atomically."""
    import OpenEXR  # noqa: PLC0415

    path = Path(path)
    image = np.asarray(image, dtype=np.float32)
    names = {1: "Y", 2: "YA", 3: "RGB", 4: "RGBA"}[image.shape[-1]]
    channels = {n: np.ascontiguousarray(image[..., i]) for i, n in enumerate(names)}
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}

    def write(tmp: str) -> None:
        with OpenEXR.File(header, channels) as f:
            f.write(tmp)

    atomic_write(path, write)
    return path
