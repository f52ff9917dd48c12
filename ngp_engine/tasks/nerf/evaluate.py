"""Test-split evaluation: PSNR and SSIM per image and their means.

RGBA ground truth is composited on white (the NeRF-synthetic convention, the `psnr` key) and
also on black (`psnr_black`); the prediction is rendered on the same background each time.
RGB ground truth has no background: both keys then compare the plain rendering.
A distorted test camera (OPENCV, OPENCV_FISHEYE) renders through its lens model, so its photo
is compared pixel for pixel as taken, never undistorted (no resampling blur in the metric).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
from ...data.transforms import NerfDataset
from ...eval.image import composite, psnr, ssim
from .model import NerfModel


def evaluate(model: NerfModel, dataset: NerfDataset,
             on_image: Callable[[int, dict[str, np.ndarray]], Any] | None = None) -> dict[str, Any]:
    """Render every camera of `dataset` and compare. `on_image(i, renders)` sees each result
    (renders["white"], renders["black"]: [H, W, 3]) e.g. to save it or report progress."""
    rows = []
    for i, camera in enumerate(dataset.cameras):
        out = model.render_camera(camera, passes=("rgb", "opacity"), background=(0.0, 0.0, 0.0))
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
