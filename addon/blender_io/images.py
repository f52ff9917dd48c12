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


def save_image_copy(img: bpy.types.Image, path: Path) -> tuple[int, int, bool]:
    """Write `img`'s pixels as the engine's input: OpenEXR (linear floats) for a float image,
    8-bit PNG otherwise (its stored values, usually sRGB); RGBA only when some alpha is
    below 1. Returns (width, height, is_float). The image itself is not touched."""
    w, h = (int(v) for v in img.size)
    if not (w and h):
        raise ValueError(f"{img.name}: the image has no pixels (not loaded, or its file is missing)")
    px = np.empty(w * h * 4, np.float32)
    img.pixels.foreach_get(px)
    has_alpha = bool((px[3::4] < 1.0).any())
    is_float = bool(img.is_float)
    copy = bpy.data.images.new("NGP image input", width=w, height=h, alpha=has_alpha, float_buffer=is_float)
    try:
        if not is_float:      # first: changing the colour space afterwards would reset the pixels
            copy.colorspace_settings.name = img.colorspace_settings.name
        copy.pixels.foreach_set(px)
        copy.filepath_raw = str(path)
        copy.file_format = "OPEN_EXR" if is_float else "PNG"
        copy.save()
    finally:
        bpy.data.images.remove(copy)
    return w, h, is_float
