"""Per-image appearance: a learned colour correction for each training photo.

Why: photos of one object differ in exposure and white balance (auto exposure, auto white
balance, clouds passing). A field that must reproduce every photo exactly bakes those
differences into view-dependent colour and floaters. instant-ngp learns a per-image exposure
(and optional latent dims) for this; we learn a per-image affine colour map applied to the
composited pixel colour, which covers exposure (a scale), white balance (a diagonal) and the
cross-talk of camera colour pipelines (the off-diagonal terms):

    rgb_photo_i = A_i @ rgb_field + b_i,    A_i [3, 3] = I + dA_i,  b_i [3]

The field then holds one *neutral* appearance (A = I, b = 0), which is what previews, meshes
and the evaluation of held-out photos use. The map is applied after compositing, so it also
acts on the background colour of that photo (the sky of an outdoor capture changes with
exposure too).

Gauge: a global colour change could move freely between the field and every A_i. The
corrections are therefore used centred: dA_i - mean_j dA_j and b_i - mean_j b_j, so the
average photo *is* the neutral look exactly, and a small L2 penalty keeps each one modest.
"""
from __future__ import annotations

import torch
from torch import nn


class ImageAppearance(nn.Module):
    """One affine colour correction per training image, identity at start.

    Parameters: `delta` [N, 3, 3] and `bias` [N, 3], float32; photo i uses
    A_i = I + delta_i - mean(delta) and b_i = bias_i - mean(bias) (see the gauge above)."""

    def __init__(self, n_images: int, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.delta = nn.Parameter(torch.zeros(n_images, 3, 3, device=device))
        self.bias = nn.Parameter(torch.zeros(n_images, 3, device=device))

    @property
    def n_images(self) -> int:
        return int(self.delta.shape[0])

    def forward(self, rgb: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """rgb [n, 3] neutral colours, image [n] int64 training-image indices -> [n, 3] the
        colours as photo `image` shows them (not clamped: the loss sees the raw map)."""
        delta, bias = self.centred()
        return rgb + torch.einsum("nij,nj->ni", delta[image], rgb) + bias[image]

    def centred(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(A_i - I [N, 3, 3], b_i [N, 3]) of every photo: the parameters minus their mean."""
        return self.delta - self.delta.mean(0), self.bias - self.bias.mean(0)

    def penalty(self) -> torch.Tensor:
        """Mean squared deviation from identity over all parameters (a scalar)."""
        return (self.delta.square().sum() + self.bias.square().sum()) / (12.0 * max(self.n_images, 1))

    @torch.no_grad()
    def summary(self) -> dict[str, float]:
        """How far the photos' corrections spread: the largest gain change (|diag(A) - 1|)
        and the largest offset over all images."""
        if not self.n_images:
            return {"max_gain_change": 0.0, "max_offset": 0.0}
        delta, bias = self.centred()
        gains = torch.diagonal(delta, dim1=1, dim2=2)            # [N, 3]
        return {"max_gain_change": float(gains.abs().max()), "max_offset": float(bias.abs().max())}
