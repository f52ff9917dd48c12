"""Fitting an image: (x, y) in [0, 1]^2 -> colour (the seed article's experiment).

Coordinates: x runs along the width, y down the rows; pixel (row i, column j) has its
centre at ((j + 0.5) / W, (i + 0.5) / H). Training samples continuous positions and
bilinearly interpolated targets, as instant-ngp's image mode does.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..config import IMAGE_PRESETS, HashGridConfig, ImageFitConfig
from ..errors import UserError
from ..eval.image import psnr
from ..fields.image import ImageField
from ..formats.camera import Camera
from ..nn.optim import TcnnAdam, param_groups
from .base import Progress, Task


class ImageTask(Task):
    """Owns the target image [H, W, C] float32, the field and its optimiser."""

    mode = "image"
    kind = "an image-field"
    config_type = ImageFitConfig
    presets = IMAGE_PRESETS
    default_preset = "seed"
    default_steps = 1000
    checkpoint_format = "ngp-image-checkpoint"
    checkpoint_keys = ("image_path", "image_shape")
    passes = ("rgb",)

    def __init__(self, data: tuple[np.ndarray, str], cfg: ImageFitConfig, device: torch.device) -> None:
        super().__init__(cfg, device)
        image, self.image_path = data
        self.image = np.ascontiguousarray(image, dtype=np.float32)        # [H, W, C]
        self.height, self.width, self.n_channels = self.image.shape
        # [1, C, H, W] for grid_sample.
        self._target = torch.from_numpy(self.image).permute(2, 0, 1)[None].to(device)
        gen = torch.Generator().manual_seed(cfg.seed)
        self.model = ImageField(cfg, self.n_channels, generator=gen).to(device)
        self.optimizer = TcnnAdam(param_groups([self.model.encoding], [self.model.network]),
                                  cfg.optimizer)
        self.sampler = torch.Generator(device=device).manual_seed(cfg.seed + 1)

    # ------------------------------------------------------------------ data
    @classmethod
    def load_data(cls, path: str | Path, cfg: Any = None) -> tuple[np.ndarray, str]:
        """(image [H, W, C] float32 in [0, 1], its resolved path)."""
        from ..data.image import load_image  # noqa: PLC0415

        return load_image(path), str(Path(path).resolve())

    @classmethod
    def data_from_checkpoint(cls, ckpt: dict[str, Any], where: str | Path, for_training: bool
                             ) -> tuple[np.ndarray, str]:
        from ..data.image import load_image  # noqa: PLC0415

        return load_image(ckpt["image_path"]), ckpt["image_path"]

    @classmethod
    def check_data(cls, ckpt: dict[str, Any], data: tuple[np.ndarray, str], where: str | Path) -> None:
        if list(data[0].shape) != list(ckpt["image_shape"]):
            raise UserError(f"{where}: checkpoint was trained on a {ckpt['image_shape']} image, "
                            f"this one is {list(data[0].shape)}")

    # ------------------------------------------------------------------ training
    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """n random positions [n, 2] and their bilinearly interpolated colours [n, C]."""
        xy = torch.rand(n, 2, device=self.device, generator=self.sampler)
        grid = (xy * 2.0 - 1.0)[None, None]                                # [1, 1, n, 2]
        rgb = F.grid_sample(self._target, grid, mode="bilinear", padding_mode="border",
                            align_corners=False)                           # [1, C, 1, n]
        return xy, rgb[0, :, 0].T

    def train_step(self) -> Progress:
        return self.fit_batch(*self.sample(self.cfg.batch_size), self.cfg.loss)

    # ------------------------------------------------------------------ outputs
    @torch.no_grad()
    def render_image(self, height: int | None = None, width: int | None = None,
                     chunk: int = 1 << 16) -> np.ndarray:
        """The field at pixel centres: float32 [H, W, C] clamped to [0, 1]."""
        h, w = height or self.height, width or self.width
        ys = (torch.arange(h, device=self.device, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, device=self.device, dtype=torch.float32) + 0.5) / w
        xy = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).reshape(-1, 2)
        out = torch.cat([self.model(xy[i:i + chunk]) for i in range(0, xy.shape[0], chunk)])
        return out.clamp(0.0, 1.0).reshape(h, w, self.n_channels).cpu().numpy()

    def render(self, camera: Camera | None, passes: tuple[str, ...],
               resolution: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
        """The whole image (an image field has no camera: `camera` is ignored)."""
        if tuple(passes) != ("rgb",):
            raise UserError(f"preview.passes: an image field renders only ['rgb'], not {list(passes)}")
        w, h = resolution or (self.width, self.height)
        return {"rgb": self.render_image(height=h, width=w)}

    def psnr(self) -> float:
        return psnr(self.render_image(), self.image)

    def metrics(self, reconstruction: np.ndarray | None = None) -> dict[str, Any]:
        rec = self.render_image() if reconstruction is None else reconstruction
        enc = self.cfg.encoding
        return {
            "psnr": psnr(rec, self.image),
            "n_params": self.n_params,
            "n_params_encoding": sum(p.numel() for p in self.model.encoding.parameters()),
            "steps": self.steps_done,
            "seconds": round(self.seconds, 3),
            "backend": self.backend,
            "device": str(self.device),
            "encoding": enc.otype,
            "image": self.image_path,
            "width": self.width,
            "height": self.height,
            "channels": self.n_channels,
            "batch_size": self.cfg.batch_size,
            "hash_grid_levels": enc.n_levels if isinstance(enc, HashGridConfig) else None,
        }

    def extra_state(self) -> dict[str, Any]:
        return {"image_path": self.image_path, "image_shape": list(self.image.shape)}
