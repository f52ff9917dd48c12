"""Blender images: the size of an image file, and float images from numpy arrays."""
from __future__ import annotations

from pathlib import Path

import bpy
import numpy as np


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) in pixels of the image file at `path` as Blender reads it (loaded and
    removed again); ValueError when Blender cannot read it or it has no pixels. This is the
    `image_size` that `ngp_engine.formats.transforms.read_transforms` asks for."""
    try:
        img = bpy.data.images.load(str(path), check_existing=False)
    except RuntimeError:
        raise ValueError("Blender cannot read it as an image") from None
    try:
        w, h = (int(v) for v in img.size)
    finally:
        bpy.data.images.remove(img)
    if not (w and h):
        raise ValueError("the image has no pixels")
    return w, h


def image_from_array(name: str, pixels: np.ndarray, is_data: bool = False) -> bpy.types.Image:
    """A float Blender image from [H, W] or [H, W, C] values (row 0 at the top), replacing
    an image of that name. Blender stores rows bottom to top, RGBA."""
    arr = np.asarray(pixels, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[..., None]
    h, w, c = arr.shape
    rgba = np.ones((h, w, 4), np.float32)
    rgba[..., :3] = arr[..., :3] if c >= 3 else arr[..., :1]
    if c == 4:
        rgba[..., 3] = arr[..., 3]
    img = bpy.data.images.get(name)
    if img is not None and (tuple(img.size) != (w, h) or not img.is_float):
        bpy.data.images.remove(img)
        img = None
    if img is None:
        img = bpy.data.images.new(name, width=w, height=h, alpha=True, float_buffer=True)
    if is_data:
        img.colorspace_settings.is_data = True
    img.pixels.foreach_set(rgba[::-1].ravel())
    img.update()
    return img
