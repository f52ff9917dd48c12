"""Rendered passes: their names (defined once, by the service protocol) and how they are
written, each as float32 `<stem>_<pass>.npy` plus a viewable `<stem>_<pass>.png`.

    rgb      [H, W, 3] colour composited on the background
    depth    [H, W] z-depth (distance along the camera's viewing axis) in world units, 0
             where nothing was hit
    opacity  [H, W] accumulated opacity in [0, 1]
    normals  [H, W, 3] world-space unit normals, 0 where nothing was hit
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.image import save_png
from ..files import atomic_write
from ..service.protocol import PASSES

__all__ = ["PASSES", "check_passes", "save_passes"]


def check_passes(passes: tuple[str, ...]) -> None:
    unknown = [p for p in passes if p not in PASSES]
    if unknown:
        raise ValueError(f"unknown pass {unknown[0]!r} (known: {', '.join(PASSES)})")


def save_passes(passes: dict[str, np.ndarray], out_dir: Path, stem: str) -> list[Path]:
    """Each pass as float32 `<stem>_<pass>.npy` plus a viewable `<stem>_<pass>.png`:
    rgb as is, opacity as grey, depth normalised near-white to far-black over the covered
    pixels, normals as (n + 1) / 2."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, arr in passes.items():
        npy = out_dir / f"{stem}_{name}.npy"
        atomic_write(npy, lambda tmp, a=arr: np.save(tmp, a.astype(np.float32)))
        png = out_dir / f"{stem}_{name}.png"
        save_png(png, _viewable(name, arr))
        written += [npy, png]
    return written


def _viewable(name: str, arr: np.ndarray) -> np.ndarray:
    if name == "rgb":
        return arr
    if name == "opacity":
        return arr[..., None]
    if name == "normals":
        return np.where(np.any(arr != 0, axis=-1, keepdims=True), (arr + 1.0) * 0.5, 0.0)
    if name == "depth":
        covered = arr > 0
        if not covered.any():
            return np.zeros(arr.shape + (1,), np.float32)
        near, far = float(arr[covered].min()), float(arr[covered].max())
        img = np.where(covered, 1.0 - (arr - near) / max(far - near, 1e-9) * 0.8, 0.0)
        return img[..., None].astype(np.float32)
    raise ValueError(f"unknown pass {name!r}")
