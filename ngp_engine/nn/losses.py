"""Training losses, one place for every task (element-wise, then the mean).

    L2           (p - t)^2
    Huber        0.5 (p - t)^2 / delta where |p - t| < delta, else |p - t| - 0.5 delta
                 (torch's huber_loss, delta 0.1: instant-ngp's NeRF loss)
    RelativeL2   (p - t)^2 / (p^2 + 0.01), p detached (instant-ngp's loss for HDR images)
    L1           |p - t|
    MAPE         |p - t| / (|t| + 0.01) (tiny-cuda-nn's; for an SDF it weights the surface most)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

HUBER_DELTA = 0.1
RELATIVE_L2_EPSILON = 1e-2
MAPE_EPSILON = 1e-2
LOSSES = ("L2", "Huber", "RelativeL2", "L1", "MAPE")


def loss(kind: str, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Scalar mean loss of predictions against targets of the same shape."""
    if kind == "L2":
        diff = pred - target
        return (diff * diff).mean()
    if kind == "Huber":
        return F.huber_loss(pred, target, delta=HUBER_DELTA)
    if kind == "RelativeL2":
        return ((pred - target) ** 2 / (pred.detach() ** 2 + RELATIVE_L2_EPSILON)).mean()
    if kind == "L1":
        return (pred - target).abs().mean()
    if kind == "MAPE":
        return ((pred - target).abs() / (target.abs() + MAPE_EPSILON)).mean()
    raise ValueError(f"unknown loss {kind!r} (known: {', '.join(LOSSES)})")
