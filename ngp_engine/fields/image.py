"""Image field: (x, y) in [0, 1]^2 -> colour, and the trainer that fits it to a picture.

Coordinates: x runs along the width, y down the rows; pixel (row i, column j) has its
centre at ((j + 0.5) / W, (i + 0.5) / H). Training samples continuous positions and
bilinearly interpolated targets, as instant-ngp's image mode does.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import config as cfgmod
from .. import files
from ..config import HashGridConfig, ImageFitConfig
from ..encoding import make_encoding
from ..errors import UserError
from ..metrics import psnr
from ..network import MLP
from ..optim import TcnnAdam, param_groups

CHECKPOINT_FORMAT = "ngp-image-checkpoint"


class ImageField(nn.Module):
    """Encoding followed by an MLP: [N, 2] positions -> [N, C] colours."""

    def __init__(self, cfg: ImageFitConfig, n_channels: int, generator: torch.Generator | None = None):
        super().__init__()
        self.encoding = make_encoding(2, cfg.encoding, backend=cfg.backend, generator=generator)
        self.network = MLP(self.encoding.n_output_dims, n_channels, cfg.network, generator=generator)

    def forward(self, xy: torch.Tensor) -> torch.Tensor:
        return self.network(self.encoding(xy))

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


@dataclass
class Progress:
    """What a training callback is told after each step."""

    step: int
    loss: float
    seconds: float


class ImageFitter:
    """Owns the target image, the field and its optimiser; `step()` trains one batch."""

    def __init__(self, image: np.ndarray, cfg: ImageFitConfig, device: torch.device,
                 image_path: str = "") -> None:
        self.cfg = cfg
        self.device = device
        self.image_path = image_path
        self.image = np.ascontiguousarray(image, dtype=np.float32)        # [H, W, C]
        self.height, self.width, self.n_channels = self.image.shape
        # [1, C, H, W] for grid_sample.
        self._target = torch.from_numpy(self.image).permute(2, 0, 1)[None].to(device)
        gen = torch.Generator().manual_seed(cfg.seed)
        self.model = ImageField(cfg, self.n_channels, generator=gen).to(device)
        self.optimizer = TcnnAdam(param_groups([self.model.encoding], [self.model.network]),
                                  cfg.optimizer)
        self._sampler = torch.Generator(device=device).manual_seed(cfg.seed + 1)
        self.steps_done = 0
        self.seconds = 0.0

    @property
    def backend(self) -> str:
        enc = self.model.encoding
        return enc.backend_for(self.device) if hasattr(enc, "backend_for") else "torch"

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """n random positions [n, 2] and their bilinearly interpolated colours [n, C]."""
        xy = torch.rand(n, 2, device=self.device, generator=self._sampler)
        grid = (xy * 2.0 - 1.0)[None, None]                                # [1, 1, n, 2]
        rgb = F.grid_sample(self._target, grid, mode="bilinear", padding_mode="border",
                            align_corners=False)                           # [1, C, 1, n]
        return xy, rgb[0, :, 0].T

    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.cfg.loss == "RelativeL2":
            return (((pred - target) ** 2) / (pred.detach() ** 2 + 1e-2)).mean()
        if self.cfg.loss == "Huber":
            return F.huber_loss(pred, target, delta=0.1)
        return ((pred - target) ** 2).mean()

    def step(self) -> float:
        """One optimisation step on a fresh batch; returns the loss."""
        t0 = time.perf_counter()
        for group in self.optimizer.param_groups:
            group["lr"] = self.cfg.optimizer.learning_rate_at(self.steps_done)
        xy, target = self.sample(self.cfg.batch_size)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(self.model(xy), target)
        loss.backward()
        self.optimizer.step()
        self.steps_done += 1
        self.seconds += time.perf_counter() - t0
        return float(loss.detach())

    def train(self, steps: int | None = None, seconds: float | None = None,
              callback: Callable[[Progress], None] | None = None) -> None:
        """Train for `steps` more steps or `seconds` more seconds (whichever is given)."""
        if (steps is None) == (seconds is None):
            raise ValueError("give exactly one of steps and seconds")
        start_steps, start_seconds = self.steps_done, self.seconds
        while True:
            if steps is not None and self.steps_done - start_steps >= steps:
                break
            if seconds is not None and self.seconds - start_seconds >= seconds:
                break
            loss = self.step()
            if callback is not None:
                callback(Progress(self.steps_done, loss, self.seconds))

    @torch.no_grad()
    def render(self, height: int | None = None, width: int | None = None,
               chunk: int = 1 << 16) -> np.ndarray:
        """The field at pixel centres: float32 [H, W, C] clamped to [0, 1]."""
        h, w = height or self.height, width or self.width
        ys = (torch.arange(h, device=self.device, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, device=self.device, dtype=torch.float32) + 0.5) / w
        xy = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).reshape(-1, 2)
        out = torch.cat([self.model(xy[i:i + chunk]) for i in range(0, xy.shape[0], chunk)])
        return out.clamp(0.0, 1.0).reshape(h, w, self.n_channels).cpu().numpy()

    def psnr(self) -> float:
        return psnr(self.render(), self.image)

    def metrics(self, reconstruction: np.ndarray | None = None) -> dict[str, Any]:
        rec = self.render() if reconstruction is None else reconstruction
        enc = self.cfg.encoding
        return {
            "psnr": psnr(rec, self.image),
            "n_params": self.model.n_params,
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

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "config": cfgmod.to_dict(self.cfg),
            "image_path": self.image_path,
            "image_shape": list(self.image.shape),
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": files.to_cpu(self.optimizer.state_dict()),
            "sampler": self._sampler.get_state().cpu(),
            "steps": self.steps_done,
            "seconds": self.seconds,
        }

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: torch.device,
                        image: np.ndarray | None = None, backend: str | None = None) -> "ImageFitter":
        """Rebuild a fitter from `checkpoint.pt`; the image is re-read from its recorded path
        unless given. `backend` overrides the recorded one (checkpoints move across them)."""
        ckpt = load_checkpoint(path)
        cfg = files.config_from_checkpoint(ImageFitConfig, ckpt, path, backend)
        if image is None:
            from ..data.image import load_image  # noqa: PLC0415
            image = load_image(ckpt["image_path"])
        if list(image.shape) != list(ckpt["image_shape"]):
            raise UserError(f"{path}: checkpoint was trained on a {ckpt['image_shape']} image, "
                            f"this one is {list(image.shape)}")
        fitter = cls(image, cfg, device, image_path=ckpt["image_path"])
        files.restore_training(ckpt, path, fitter.model, fitter.optimizer, fitter._sampler)
        fitter.steps_done = int(ckpt["steps"])
        fitter.seconds = float(ckpt["seconds"])
        return fitter


REQUIRED_KEYS = ("config", "image_path", "image_shape", "model", "optimizer", "sampler", "steps",
                 "seconds")


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and check an image-field checkpoint (UserError naming the file otherwise)."""
    return files.load_checkpoint(path, CHECKPOINT_FORMAT, REQUIRED_KEYS, "an image-field")

