"""Test-split evaluation: PSNR and SSIM per image and their means.

RGBA ground truth is composited on white (the NeRF-synthetic convention, the `psnr` key) and
also on black (`psnr_black`); the prediction is rendered on the same background each time.
RGB ground truth has no background: both keys then compare the plain rendering.
SSIM is the usual 11x11 Gaussian window with sigma 1.5 (scikit-image, population statistics).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
from skimage.metrics import structural_similarity

from ..data.transforms import NerfDataset
from ..metrics import psnr
from .model import NerfModel


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two [H, W, 3] images in [0, 1]."""
    return float(structural_similarity(a, b, data_range=1.0, channel_axis=-1, gaussian_weights=True,
                                       sigma=1.5, use_sample_covariance=False))


def composite(image_u8: np.ndarray, background: tuple[float, float, float]) -> np.ndarray:
    """[H, W, C] uint8 -> [H, W, 3] float32 in [0, 1] on `background` (RGB passes through)."""
    img = image_u8.astype(np.float32) / 255.0
    if img.shape[-1] == 3:
        return img
    a = img[..., 3:]
    return img[..., :3] * a + np.asarray(background, np.float32) * (1.0 - a)


def evaluate(model: NerfModel, dataset: NerfDataset,
             on_image: Callable[[int, dict[str, np.ndarray]], Any] | None = None) -> dict[str, Any]:
    """Render every camera of `dataset` and compare. `on_image(i, renders)` sees each result
    (renders["white"], renders["black"]: [H, W, 3]) e.g. to save it or report progress."""
    cams = dataset.cameras
    rows = []
    for i in range(len(cams)):
        args = (cams.c2w[i], cams.fx[i], cams.fy[i], cams.cx[i], cams.cy[i], cams.width, cams.height)
        out = model.render_camera(*args, passes=("rgb", "opacity"), background=(0.0, 0.0, 0.0))
        # Rendering on black gives the premultiplied colour; any background follows exactly.
        on_black = out["rgb"]
        # RGB data has no background to swap: the field was trained to explain every pixel.
        on_white = (np.clip(on_black + (1.0 - out["opacity"])[..., None], 0.0, 1.0)
                    if dataset.has_alpha else on_black)
        gt_white, gt_black = composite(dataset.images[i], (1, 1, 1)), composite(dataset.images[i], (0, 0, 0))
        rows.append({
            "file": str(dataset.file_paths[i]),
            "psnr": psnr(on_white, gt_white),
            "ssim": ssim(on_white, gt_white),
            "psnr_black": psnr(on_black, gt_black),
            "ssim_black": ssim(on_black, gt_black),
        })
        if on_image is not None:
            on_image(i, {"white": on_white, "black": on_black})
    keys = ("psnr", "ssim", "psnr_black", "ssim_black")
    summary: dict[str, Any] = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    summary["n_images"] = len(rows)
    summary["per_image"] = rows
    return summary
