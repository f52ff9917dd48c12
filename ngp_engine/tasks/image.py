"""Fitting an image: (x, y) in [0, 1]^2 -> colour (the seed article's experiment).

Coordinates: x runs along the width, y down the rows; pixel (row i, column j) has its
centre at ((j + 0.5) / W, (i + 0.5) / H). Training samples continuous positions and
bilinearly interpolated targets, as instant-ngp's image mode does.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..config import IMAGE_PRESETS, HashGridConfig, ImageFitConfig
from ..data.image import is_hdr_file
from ..data.tiled_image import ImageShape, TiledImage, is_tiled_tiff
from ..errors import UserError
from ..eval.image import psnr
from ..fields.image import ImageField
from ..formats.camera import Camera
from ..nn.optim import TcnnAdam, param_groups
from .base import Progress, Task

EVAL_PIXELS = 1_000_000          # random pixels that score an image too large to render whole
PREVIEW_LONG_SIDE = 1024         # a tiled image's preview, by default


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

    def __init__(self, data: tuple[np.ndarray | TiledImage, str], cfg: ImageFitConfig,
                 device: torch.device) -> None:
        super().__init__(cfg, device)
        image, self.image_path = data
        self.tiled: TiledImage | None = image if isinstance(image, TiledImage) else None
        """An image larger than memory, read by chunks (None: `image` holds the pixels)."""
        self._hdr = (image.hdr if isinstance(image, (TiledImage, ImageShape))
                     else is_hdr_file(self.image_path))
        if self.tiled is not None or isinstance(image, ImageShape):
            self.image = None               # no pixels in memory (or none at all: render only)
            self.height, self.width, self.n_channels = image.shape
            self._target = None
            # Chunks are read on the host: a CPU generator draws them on every device.
            self.sampler = torch.Generator().manual_seed(cfg.seed + 1)
        else:
            self.image = np.ascontiguousarray(image, dtype=np.float32)    # [H, W, C]
            self.height, self.width, self.n_channels = self.image.shape
            # [1, C, H, W] for grid_sample.
            self._target = torch.from_numpy(self.image).permute(2, 0, 1)[None].to(device)
            self.sampler = torch.Generator(device=device).manual_seed(cfg.seed + 1)
        gen = torch.Generator().manual_seed(cfg.seed)
        self.model = ImageField(cfg, self.n_channels, generator=gen).to(device)
        self.optimizer = TcnnAdam(param_groups([self.model.encoding], [self.model.network]),
                                  cfg.optimizer)

    # ------------------------------------------------------------------ data
    @classmethod
    def load_data(cls, path: str | Path, cfg: Any = None) -> tuple[np.ndarray | TiledImage, str]:
        """(image [H, W, C] float32 in [0, 1], its resolved path); a tiled, BigTIFF or very
        large TIFF comes as a TiledImage, read by chunks while training."""
        return _open_image(path), str(Path(path).resolve())

    @classmethod
    def data_from_checkpoint(cls, ckpt: dict[str, Any], where: str | Path, for_training: bool
                             ) -> tuple[np.ndarray | TiledImage | ImageShape, str]:
        """The image it was trained on; rendering needs its size only (no file)."""
        if not for_training:
            h, w, c = (int(v) for v in ckpt["image_shape"])
            return ImageShape(h, w, c, bool(ckpt.get("hdr", False))), ckpt["image_path"]
        return _open_image(ckpt["image_path"]), ckpt["image_path"]

    @classmethod
    def check_data(cls, ckpt: dict[str, Any], data: tuple[np.ndarray | TiledImage, str],
                   where: str | Path) -> None:
        if isinstance(data[0], ImageShape):
            return
        if list(data[0].shape) != list(ckpt["image_shape"]):
            raise UserError(f"{where}: checkpoint was trained on a {ckpt['image_shape']} image, "
                            f"this one is {list(data[0].shape)}")

    # ------------------------------------------------------------------ training
    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """n random positions [n, 2] and their bilinearly interpolated colours [n, C] (a
        tiled image: its pixels' values, from a few chunks, see data/tiled_image.py)."""
        if self.tiled is not None:
            return self.tiled.sample(n, self.sampler, self.device)
        xy = torch.rand(n, 2, device=self.device, generator=self.sampler)
        grid = (xy * 2.0 - 1.0)[None, None]                                # [1, 1, n, 2]
        rgb = F.grid_sample(self._target, grid, mode="bilinear", padding_mode="border",
                            align_corners=False)                           # [1, C, 1, n]
        return xy, rgb[0, :, 0].T

    def train_step(self) -> Progress:
        return self.fit_batch(*self.sample(self.cfg.batch_size), self.loss_kind)

    @property
    def loss_kind(self) -> str:
        """The configured loss; "auto" is RelativeL2 for HDR images, L2 otherwise."""
        if self.cfg.loss == "auto":
            return "RelativeL2" if self.hdr else "L2"
        return self.cfg.loss

    # ------------------------------------------------------------------ outputs
    @torch.no_grad()
    def render_image(self, height: int | None = None, width: int | None = None,
                     chunk: int = 1 << 16) -> np.ndarray:
        """The field at pixel centres: float32 [H, W, C] clamped to [0, 1]."""
        return self.render_region((0.0, 0.0, float(self.width), float(self.height)),
                                  width or self.width, height or self.height, chunk)

    @torch.no_grad()
    def render_region(self, region: tuple[float, float, float, float], width: int, height: int,
                      chunk: int = 1 << 16) -> np.ndarray:
        """The field over `region` (x0, y0, x1, y1 in the image's pixels; x along the
        width, y down the rows) at `width` x `height` output pixels (their centres):
        float32 [height, width, C] clamped to [0, 1] (an HDR image: to >= 0)."""
        x0, y0, x1, y1 = region
        # Positions in float64 on the host (MPS has no float64), then float32 on the device.
        ys = (y0 + (torch.arange(height, dtype=torch.float64) + 0.5) * ((y1 - y0) / height)) / self.height
        xs = (x0 + (torch.arange(width, dtype=torch.float64) + 0.5) * ((x1 - x0) / width)) / self.width
        xs, ys = xs.float().to(self.device), ys.float().to(self.device)
        xy = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).reshape(-1, 2)
        out = torch.cat([self.model(xy[i:i + chunk]) for i in range(0, xy.shape[0], chunk)])
        out = out.clamp_min(0.0) if self.hdr else out.clamp(0.0, 1.0)
        return out.reshape(height, width, self.n_channels).cpu().numpy()

    @property
    def hdr(self) -> bool:
        """Linear float values (a float TIFF): not clamped to 1."""
        return self._hdr

    @torch.no_grad()
    def sampled_psnr(self, n: int = EVAL_PIXELS, seed: int = 0, block: int = 1 << 17) -> float:
        """PSNR on `n` random pixels (centres) of the image: how a picture too large to
        render whole is scored. Read and evaluated `block` pixels at a time (bounded memory)."""
        sse, count = 0.0, 0
        for k, start in enumerate(range(0, n, block)):
            m = min(block, n - start)
            if self.tiled is not None:
                xy, truth = self.tiled.pixels(m, seed=(seed, k))
            else:
                rng = np.random.default_rng((seed, k))
                rows, cols = rng.integers(0, self.height, m), rng.integers(0, self.width, m)
                xy = np.stack([(cols + 0.5) / self.width, (rows + 0.5) / self.height], 1).astype(np.float32)
                truth = self.image[rows, cols]
            pred = self.model(torch.from_numpy(xy).to(self.device))
            pred = pred.clamp_min(0.0) if self.hdr else pred.clamp(0.0, 1.0)
            sse += float(((pred.double().cpu().numpy() - truth) ** 2).sum())
            count += truth.size
        mse = sse / max(count, 1)
        return float("inf") if mse == 0.0 else -10.0 * math.log10(mse)

    def render(self, camera: Camera | None, passes: tuple[str, ...],
               resolution: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
        """The whole image (an image field has no camera: `camera` is ignored)."""
        if tuple(passes) != ("rgb",):
            raise UserError(f"preview.passes: an image field renders only ['rgb'], not {list(passes)}")
        w, h = resolution or _fit(self.width, self.height, PREVIEW_LONG_SIDE if self.tiled else None)
        return {"rgb": self.render_image(height=h, width=w)}

    def psnr(self) -> float:
        """PSNR of the whole image (a tiled one: of EVAL_PIXELS random pixels)."""
        return self.sampled_psnr() if self.tiled is not None else psnr(self.render_image(), self.image)

    def metrics(self, reconstruction: np.ndarray | None = None) -> dict[str, Any]:
        """Figures of the run; `psnr` over every pixel, or for a tiled image over
        EVAL_PIXELS random ones (`psnr_pixels` says how many)."""
        enc = self.cfg.encoding
        if self.tiled is not None:
            scored = {"psnr": self.sampled_psnr(), "psnr_pixels": EVAL_PIXELS,
                      "chunks_read": self.tiled.chunks_read}
        else:
            rec = self.render_image() if reconstruction is None else reconstruction
            scored = {"psnr": psnr(rec, self.image)}
            if self.hdr:            # PSNR of linear values says little: errors relative to them
                scored.update(relative_errors(rec, self.image))
        scored["loss"] = self.loss_kind
        return {
            **scored,
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

    def export_fp16(self, path: Path) -> Path:
        """The field alone, parameters as float16 (half the bytes, no optimiser state): what
        a neural image costs on disk. Renders with `image render`; cannot resume training."""
        from ..files import save_torch  # noqa: PLC0415

        state = self.state_dict()
        state.update(model={k: v.half() for k, v in state["model"].items()}, optimizer=None,
                     sampler=None, export="fp16")
        save_torch(path, state)
        return path

    def load_state_dict(self, ckpt: dict[str, Any], where: str | Path = "checkpoint") -> None:
        if ckpt.get("export") != "fp16":
            super().load_state_dict(ckpt, where)
            return
        if self.image is not None or self.tiled is not None:
            raise UserError(f"{where}: an fp16 export renders only; resume from the run's checkpoint.pt")
        from ..files import load_weights  # noqa: PLC0415

        load_weights(self.model, {k: v.float() for k, v in ckpt["model"].items()}, where)
        self.steps_done, self.seconds = int(ckpt["steps"]), float(ckpt["seconds"])

    def extra_state(self) -> dict[str, Any]:
        return {"image_path": self.image_path, "image_shape": [self.height, self.width, self.n_channels],
                "hdr": self.hdr}


def relative_errors(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """How far linear (HDR) values are off, relative to their size: mean |p - t| / (|t| +
    0.01) and instant-ngp's relative L2, mean (p - t)^2 / (t^2 + 0.01)."""
    p, t = np.asarray(pred, np.float64), np.asarray(truth, np.float64)
    return {"mean_relative_error": float(np.mean(np.abs(p - t) / (np.abs(t) + 0.01))),
            "relative_l2": float(np.mean((p - t) ** 2 / (t * t + 0.01)))}


def _fit(width: int, height: int, long_side: int | None) -> tuple[int, int]:
    """(width, height) scaled down so that the longer side is at most `long_side`."""
    if long_side is None or max(width, height) <= long_side:
        return width, height
    f = long_side / max(width, height)
    return max(1, round(width * f)), max(1, round(height * f))


def _open_image(path: str | Path) -> np.ndarray | TiledImage:
    """The pixels of a small image, or a chunk reader for a large / tiled TIFF."""
    if is_tiled_tiff(path):
        return TiledImage(path)
    from ..data.image import load_image  # noqa: PLC0415

    return load_image(path)
