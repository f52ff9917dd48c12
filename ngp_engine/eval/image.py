"""Image-quality metrics and the compositing they are measured on.

SSIM is the usual 11x11 Gaussian window with sigma 1.5 (scikit-image, population
statistics); scikit-image is imported when SSIM is first asked for.
"""
from __future__ import annotations

import math

import numpy as np


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two images in [0, 1] (any equal shapes)."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0.0 else -10.0 * math.log10(mse)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two [H, W, 3] images in [0, 1]."""
    from skimage.metrics import structural_similarity  # noqa: PLC0415

    return float(structural_similarity(a, b, data_range=1.0, channel_axis=-1, gaussian_weights=True,
                                       sigma=1.5, use_sample_covariance=False))


def composite(image_u8: np.ndarray, background: tuple[float, float, float]) -> np.ndarray:
    """[H, W, C] uint8 -> [H, W, 3] float32 in [0, 1] on `background` (RGB passes through)."""
    img = image_u8.astype(np.float32) / 255.0
    if img.shape[-1] == 3:
        return img
    a = img[..., 3:]
    return img[..., :3] * a + np.asarray(background, np.float32) * (1.0 - a)
