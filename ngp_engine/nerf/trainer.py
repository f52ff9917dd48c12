"""Training a NeRF on posed images (instant-ngp's recipe): random pixels of random training
images, random background colours for RGBA data, occupancy-grid updates every 16 steps, the
ray count adapted so that each step feeds about `target_batch_samples` samples to the network.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from .. import config as cfgmod
from .. import files
from ..config import NerfConfig
from ..data.transforms import NerfDataset, SceneTransform
from ..errors import UserError
from ..optim import TcnnAdam, param_groups
from ..render.rays import camera_rays
from .model import NerfModel

CHECKPOINT_FORMAT = "ngp-nerf-checkpoint"
HUBER_DELTA = 0.1
MIN_RAYS, MAX_RAYS = 64, 1 << 20


@dataclass
class NerfProgress:
    """What a training callback hears after each step."""

    step: int
    loss: float
    psnr: float                 # training PSNR of this batch (on its random backgrounds)
    samples_per_ray: float      # network samples per ray in this step
    rays: int                   # rays in this step
    rays_per_second: float      # over the whole run so far
    seconds: float


class NerfTrainer:
    """Owns the training images (uint8, on the device), the model and its optimiser."""

    def __init__(self, dataset: NerfDataset, cfg: NerfConfig, device: torch.device,
                 dataset_path: str = "") -> None:
        self.cfg = cfg
        self.device = device
        self.dataset_path = dataset_path
        self.model = NerfModel(cfg, dataset.transform, device)
        cams = dataset.cameras
        self.cameras = cams                                                   # world units
        self.width, self.height = cams.width, cams.height
        self.images = torch.from_numpy(dataset.images).to(device)          # [N, H, W, C] uint8
        self.has_alpha = dataset.has_alpha
        self.c2w = self.model.unit_c2w(cams.c2w)                              # [N, 4, 4]
        self.intrinsics = torch.from_numpy(
            np.stack([cams.fx, cams.fy, cams.cx, cams.cy], axis=1)).float().to(device)  # [N, 4]
        self.model.grid.mark_unseen(self.c2w, *self.intrinsics.T, self.width, self.height)
        self.optimizer = TcnnAdam(param_groups([self.model.field.encoding],
                                               [self.model.field.density_net, self.model.field.rgb_net]),
                                  cfg.optimizer)
        self._gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
        self.n_rays = cfg.initial_rays
        self.steps_done = 0
        self.seconds = 0.0
        self.rays_seen = 0

    @property
    def n_images(self) -> int:
        return int(self.images.shape[0])

    # ------------------------------------------------------------------ one step
    def _batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """n random training pixels: origins [n, 3], dirs [n, 3], target rgb [n, 3], alpha [n]."""
        g, dev = self._gen, self.device
        img = torch.randint(0, self.n_images, (n,), device=dev, generator=g)
        px = torch.randint(0, self.width, (n,), device=dev, generator=g)
        py = torch.randint(0, self.height, (n,), device=dev, generator=g)
        pix = self.images[img, py, px].float() / 255.0                         # [n, C]
        k = self.intrinsics[img]
        o, d = camera_rays(self.c2w[img], k[:, 0], k[:, 1], k[:, 2], k[:, 3],
                           px.float() + 0.5, py.float() + 0.5)
        alpha = pix[:, 3] if self.has_alpha else torch.ones(n, device=dev)
        return o, d, pix[:, :3], alpha

    def step(self) -> NerfProgress:
        """One optimisation step; returns its progress record."""
        t0 = time.perf_counter()
        cfg = self.cfg
        model = self.model
        if self.steps_done % cfg.occupancy.update_interval == 0:
            model.grid.update(model.field.density, self.steps_done, generator=self._gen)
        lr = cfg.optimizer.learning_rate_at(self.steps_done)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        n = self.n_rays
        o, d, rgb, alpha = self._batch(n)
        if self.has_alpha and cfg.random_background:
            bg = torch.rand(n, 3, device=self.device, generator=self._gen)
        else:
            bg = torch.ones(n, 3, device=self.device) if self.has_alpha else torch.zeros(n, 3, device=self.device)
        target = rgb * alpha[:, None] + bg * (1.0 - alpha[:, None])
        jitter = torch.rand(n, device=self.device, generator=self._gen)
        self.optimizer.zero_grad(set_to_none=True)
        out = model.render_rays(o, d, background=bg, jitter=jitter)
        if cfg.loss == "Huber":
            loss = F.huber_loss(out.rgb, target, delta=HUBER_DELTA)
        else:
            loss = F.mse_loss(out.rgb, target)
        if out.n_samples:
            loss.backward()
            self.optimizer.step()
        mse = float(F.mse_loss(out.rgb.detach(), target))
        # Adapt the ray count so the next step feeds about target_batch_samples samples.
        per_ray = out.n_samples / n
        want = cfg.target_batch_samples / max(per_ray, 1.0 / 16)
        self.n_rays = int(min(MAX_RAYS, max(MIN_RAYS, round(0.5 * n + 0.5 * want))))
        self.steps_done += 1
        self.rays_seen += n
        self.seconds += time.perf_counter() - t0
        return NerfProgress(step=self.steps_done, loss=float(loss.detach()),
                            psnr=-10.0 * math.log10(max(mse, 1e-10)), samples_per_ray=per_ray,
                            rays=n, rays_per_second=self.rays_seen / max(self.seconds, 1e-9),
                            seconds=self.seconds)

    def train(self, steps: int | None = None, seconds: float | None = None,
              callback: Callable[[NerfProgress], Any] | None = None,
              should_stop: Callable[[], bool] | None = None) -> None:
        """Train `steps` more steps or for `seconds` more seconds; `should_stop` may end it early."""
        if (steps is None) == (seconds is None):
            raise ValueError("give exactly one of steps and seconds")
        start_steps, start_seconds = self.steps_done, self.seconds
        while True:
            if steps is not None and self.steps_done - start_steps >= steps:
                break
            if seconds is not None and self.seconds - start_seconds >= seconds:
                break
            if should_stop is not None and should_stop():
                break
            p = self.step()
            if callback is not None:
                callback(p)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "config": cfgmod.to_dict(self.cfg),
            "transform": self.model.transform.to_dict(),
            "dataset": self.dataset_path,
            "image_size": [self.width, self.height],
            "model": self.model.state_dict(),
            "optimizer": files.to_cpu(self.optimizer.state_dict()),
            "sampler": self._gen.get_state().cpu(),
            "n_rays": self.n_rays,
            "steps": self.steps_done,
            "seconds": self.seconds,
            "rays_seen": self.rays_seen,
        }

    def load_state_dict(self, ckpt: dict[str, Any], where: str = "checkpoint") -> None:
        """Continue from a checkpoint of the same configuration (training state included)."""
        files.restore_training(ckpt, where, self.model, self.optimizer, self._gen)
        self.n_rays = int(ckpt["n_rays"])
        self.steps_done = int(ckpt["steps"])
        self.seconds = float(ckpt["seconds"])
        self.rays_seen = int(ckpt.get("rays_seen", 0))


REQUIRED_KEYS = ("config", "transform", "dataset", "image_size", "model", "optimizer", "sampler",
                 "n_rays", "steps", "seconds")


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and check a NeRF checkpoint (UserError naming the file otherwise)."""
    return files.load_checkpoint(path, CHECKPOINT_FORMAT, REQUIRED_KEYS, "a NeRF")


def model_from_checkpoint(path: str | Path, device: torch.device,
                          backend: str | None = None) -> tuple[NerfModel, dict[str, Any]]:
    """The trained model of a checkpoint (for rendering, evaluation, meshes) and the raw dict."""
    ckpt = load_checkpoint(path)
    cfg = config_of(ckpt, path, backend)
    try:
        transform = SceneTransform.from_dict(ckpt["transform"])
    except UserError as e:
        raise UserError(f"{path}: {e}") from None
    model = NerfModel(cfg, transform, device)
    files.load_weights(model, ckpt["model"], path)
    return model, ckpt


def config_of(ckpt: dict[str, Any], path: str | Path, backend: str | None = None) -> NerfConfig:
    return files.config_from_checkpoint(NerfConfig, ckpt, path, backend)

