"""Training a NeRF on posed images (instant-ngp's recipe): random pixels of random training
images, random background colours for RGBA data, occupancy-grid updates every 16 steps, the
ray count adapted so that each step feeds about `target_batch_samples` samples to the network.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ...config import NERF_PRESETS, NerfConfig
from ...data.transforms import NerfDataset, load_nerf_dataset
from ...device import LaggedReads
from ...errors import UserError
from ...formats.camera import Camera, stack_cameras
from ...formats.unit_cube import UnitCube
from ...nn.appearance import ImageAppearance
from ...nn.losses import loss
from ...nn.optim import TcnnAdam, param_groups
from ...render.passes import PASSES
from ...render.rays import camera_rays, direction_maps, enclosing_pinhole, rays_from_directions
from ...render.renderer import Capacity
from ..base import Progress, Task
from .mesh import DEFAULT_MESH_THRESHOLD, nerf_mesh
from .model import NerfModel

MIN_RAYS, MAX_RAYS = 64, 1 << 20
RAY_GRANULARITY = 64    # the ray count moves in steps of this many (instant-ngp: 256 samples):
                        # a sample more or less (float rounding in early termination) then
                        # rarely changes the next batch, and data-parallel ranks stay in step


def uses_appearance(cfg: NerfConfig, data: NerfDataset) -> bool:
    """Whether training learns per-image appearance: as configured, and for "auto" when the
    images are photos (no alpha channel: renders of synthetic scenes carry one)."""
    if cfg.appearance == "auto":
        return len(data.images) > 0 and not data.has_alpha
    return cfg.appearance == "on" and len(data.images) > 0


class NerfTask(Task):
    """Owns the training images (uint8, on the device), the model and its optimiser."""

    mode = "nerf"
    kind = "a NeRF"
    config_type = NerfConfig
    presets = NERF_PRESETS
    default_preset = "cpu-fast"
    default_steps = 1000
    checkpoint_format = "ngp-nerf-checkpoint"
    checkpoint_keys = ("transform", "dataset", "image_size", "n_rays")
    passes = PASSES

    def __init__(self, data: NerfDataset, cfg: NerfConfig, device: torch.device) -> None:
        super().__init__(cfg, device)
        self.dataset = data
        self.dataset_path = str(data.path)
        self.model = NerfModel(cfg, data.transform, device)
        self.cameras = data.cameras                                        # world units
        self.width, self.height = data.width, data.height
        self.images = torch.from_numpy(data.images).to(device)             # [N, H, W, C] uint8
        self.has_alpha = data.has_alpha
        c2w, intr = stack_cameras(self.cameras)
        self.c2w = self.model.unit_c2w(c2w)                                # [N, 4, 4]
        self.intrinsics = torch.from_numpy(intr).float().to(device)        # [N, 4] fx, fy, cx, cy
        # Distorted photos: camera-space ray directions per pixel, once per distinct lens
        # ([K, H, W, 3] on the device) and the lens of each image ([N]); None for pinholes,
        # which keep the closed-form rays.
        self.direction_maps: torch.Tensor | None = None
        self.lens_of_image: torch.Tensor | None = None
        if any(c.distorted for c in self.cameras):
            self.direction_maps, self.lens_of_image = direction_maps(self.cameras, device)
        if self.cameras:
            seen_by = (self.intrinsics, self.width, self.height)
            if self.direction_maps is not None:
                # What a distorted camera sees, as a wider pinhole (None: a fisheye seeing
                # 90 degrees or more off its axis, then no cell is ruled out).
                seen_by = enclosing_pinhole(self.direction_maps, self.lens_of_image, self.intrinsics)
            if seen_by is not None:
                self.model.grid.mark_unseen(self.c2w, *seen_by[0].T, seen_by[1], seen_by[2])
        groups = param_groups([self.model.field.encoding],
                              [self.model.field.density_net, self.model.field.rgb_net])
        if uses_appearance(cfg, data):
            self.model.appearance = ImageAppearance(len(data.images), device)
            # Plain Adam on the corrections: the MLPs' L2 regularisation would fight the penalty.
            groups.append({"params": list(self.model.appearance.parameters()), "kind": "matrix",
                           "l2_reg": 0.0})
        self.optimizer = TcnnAdam(groups, cfg.optimizer)
        self.sampler = torch.Generator(device=device).manual_seed(cfg.seed + 1)
        self.n_rays = cfg.initial_rays
        self.rays_seen = 0
        # Where a step reads nothing back (GPUs): the samples each step asked for reach the
        # host a few steps later (`LaggedReads`), and size the buffers and the ray count then.
        self.reads = LaggedReads(device)
        self.capacity = Capacity()            # exact sizes (one read) until a step is measured

    @property
    def n_images(self) -> int:
        return int(self.images.shape[0])

    @property
    def backend(self) -> str:
        return self.model.backend

    @property
    def n_params(self) -> int:
        return self.model.field.n_params

    # ------------------------------------------------------------------ data
    @classmethod
    def load_data(cls, path: str | Path, cfg: NerfConfig | None = None,
                  split: str = "train") -> NerfDataset:
        """A split of the dataset as a run with `cfg` sees it: its image size cap and its
        held-out frames (split `data.transforms.HOLDOUT`)."""
        return load_nerf_dataset(path, split,
                                 max_image_size=cfg.max_image_size if cfg is not None else None,
                                 holdout_every=cfg.holdout_every if cfg is not None else None)

    @classmethod
    def data_from_checkpoint(cls, ckpt: dict[str, Any], where: str | Path, for_training: bool
                             ) -> NerfDataset:
        if for_training:
            if not ckpt["dataset"]:
                raise UserError(f"{where}: records no dataset; give one")
            return load_nerf_dataset(ckpt["dataset"], "train",
                                     max_image_size=ckpt["config"].get("max_image_size"),
                                     holdout_every=ckpt["config"].get("holdout_every"))
        # Rendering, evaluating and meshing need the model only: no images decoded.
        try:
            transform = UnitCube.from_dict(ckpt["transform"])
        except UserError as e:
            raise UserError(f"{where}: {e}") from None
        w, h = ckpt["image_size"]
        return NerfDataset.views_only(transform, int(w), int(h), ckpt["dataset"])

    @classmethod
    def check_data(cls, ckpt: dict[str, Any], data: NerfDataset, where: str | Path) -> None:
        if len(data.images) and list(ckpt["image_size"]) != [data.width, data.height]:
            raise UserError(f"{where}: trained on {ckpt['image_size']} images, {data.path} has "
                            f"{[data.width, data.height]}")

    # ------------------------------------------------------------------ one step
    def _batch(self, n: int
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """n random training pixels: origins [n, 3], dirs [n, 3], target rgb [n, 3], alpha [n]
        and the image each comes from [n] int64."""
        g, dev = self.sampler, self.device
        img = torch.randint(0, self.n_images, (n,), device=dev, generator=g)
        px = torch.randint(0, self.width, (n,), device=dev, generator=g)
        py = torch.randint(0, self.height, (n,), device=dev, generator=g)
        pix = self.images[img, py, px].float() / 255.0                         # [n, C]
        if self.direction_maps is not None:      # through the lens: look the pixel's ray up
            o, d = rays_from_directions(self.c2w[img], self.direction_maps[self.lens_of_image[img], py, px])
        else:
            k = self.intrinsics[img]
            o, d = camera_rays(self.c2w[img], k[:, 0], k[:, 1], k[:, 2], k[:, 3],
                               px.float() + 0.5, py.float() + 0.5)
        alpha = pix[:, 3] if self.has_alpha else torch.ones(n, device=dev)
        return o, d, pix[:, :3], alpha, img

    def train_step(self) -> Progress:
        if not self.n_images:
            raise UserError(f"{self.dataset_path}: no training images were loaded")
        cfg, model, ranks = self.cfg, self.model, self.ranks
        if self.steps_done % cfg.occupancy.update_interval == 0:
            model.grid.update(model.field.density, self.steps_done, generator=self.sampler)
        n = self.n_rays
        o, d, rgb, alpha, img = self._batch(n)
        if self.has_alpha and cfg.random_background:
            bg = torch.rand(n, 3, device=self.device, generator=self.sampler)
        else:
            bg = torch.ones(n, 3, device=self.device) if self.has_alpha else torch.zeros(n, 3, device=self.device)
        target = rgb * alpha[:, None] + bg * (1.0 - alpha[:, None])
        jitter = torch.rand(n, device=self.device, generator=self.sampler)
        # Every rank drew the same combined batch (same generator); each trains on its share.
        part = ranks.share(n)
        o, d, bg, target, jitter, img = o[part], d[part], bg[part], target[part], jitter[part], img[part]
        weight = ranks.weight(n)
        self.optimizer.zero_grad(set_to_none=True)
        fixed = model.reads_nothing_back
        out = model.render_rays(o, d, background=bg, jitter=jitter,
                                **({"capacity": self.capacity} if fixed else {}))
        pred = out.rgb
        if model.appearance is not None:     # the photo's look = its correction of the neutral one
            pred = model.appearance(pred, img)
        if out.fits is not None:
            # Rays that did not fit the buffers are not in the batch: no loss, no gradient,
            # and the means are over the rays rendered.
            pred = torch.where(out.fits[:, None], pred, target)
            weight = weight * (pred.shape[0] / out.fits.sum().clamp_min(1))
        value = loss(cfg.loss, pred, target) * weight
        if model.appearance is not None:
            value = value + cfg.appearance_penalty * model.appearance.penalty() / ranks.world
        if value.requires_grad:      # (a ray share without samples may still train appearance)
            value.backward()
        mse = F.mse_loss(pred.detach(), target) * weight
        # Loss and PSNR stay on the device (Progress.resolved reads them when shown); with
        # several ranks they, the gradients and the sample count are summed over the ranks.
        (value_sum, mse_sum), n_samples = ranks.reduce_gradients(
            self.optimizer.param_groups, torch.stack([value.detach(), mse]), out.n_samples)
        self.rays_seen += n
        progress = Progress(loss=value_sum, psnr=-10.0 * torch.log10(mse_sum.clamp_min(1e-10)),
                            samples_per_ray=n_samples / n)
        if not fixed:
            if n_samples:
                self.optimizer.step()
            self._adapt_rays(n, n_samples)
            return progress
        # Nothing read back: an empty batch steps too (the tables see no gradient, so Adam
        # leaves them; the MLPs' moments move, as in instant-ngp). The demand of the step
        # `reads.lag` steps back sizes the buffers and the ray count from here on.
        self.optimizer.step()
        demand = out.demand if out.demand is not None else \
            torch.zeros(2, dtype=torch.int64, device=self.device)      # a share with no rays
        self.reads.push(ranks.sum_counts(demand), n)
        for rays_then, (marched, kept) in self.reads.ready():      # summed over the ranks
            self._adapt_rays(rays_then, kept)
            # Each rank renders its share of the rays.
            self.capacity = Capacity.after(rays_then * ranks.world, marched, kept, self.n_rays)
        return progress

    def _adapt_rays(self, n: int, n_samples: int) -> None:
        """Adapt the ray count so that a step feeds about target_batch_samples samples, after
        n rays had n_samples."""
        per_ray = n_samples / n
        want = self.cfg.target_batch_samples / max(per_ray, 1.0 / 16)
        rays = RAY_GRANULARITY * round((0.5 * self.n_rays + 0.5 * want) / RAY_GRANULARITY)
        self.n_rays = int(min(MAX_RAYS, max(MIN_RAYS, rays)))

    def step(self) -> Progress:
        p = super().step()
        return replace(p, rays_per_second=self.rays_seen / max(self.seconds, 1e-9))

    # ------------------------------------------------------------------ outputs
    def render(self, camera: Camera | None, passes: tuple[str, ...],
               resolution: tuple[int, int] | None = None,
               background: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> dict[str, np.ndarray]:
        if camera is None:
            raise UserError("preview.camera: a NeRF preview needs a camera")
        if resolution is not None:
            camera = camera.resized(*resolution)
        return self.model.render_camera(camera, passes=tuple(passes), background=background)

    def extract_mesh(self, resolution: int, threshold: float | None,
                     min_component_fraction: float | None = 0.05,
                     fill_hidden: bool = True,
                     box: tuple[Any, Any] | None = None) -> dict[str, Any]:
        """The density's level set in `box` (world lo [3], hi [3]; default the object's box,
        the unit cube; see nerf/mesh.py); with `fill_hidden`, hidden space that the training
        cameras' observed surfaces enclose is filled first."""
        threshold = DEFAULT_MESH_THRESHOLD if threshold is None else threshold
        if fill_hidden and not self.cameras:
            raise UserError(f"{self.dataset_path}: the training cameras are needed to fill the "
                            "hidden space (or mesh the raw density)")
        mesh = nerf_mesh(self.model, resolution=resolution, threshold=threshold,
                         min_component_fraction=min_component_fraction,
                         cameras=self.cameras if fill_hidden else None, box=box,
                         alphas=self.dataset.images[..., 3] if self.has_alpha else None)
        if not len(mesh["faces"]):
            raise UserError(f"export_mesh: no surface at density {threshold} yet "
                            "(train longer or lower the threshold)")
        return mesh

    def metrics(self) -> dict[str, Any]:
        m = {"backend": self.backend, "device": str(self.device), "n_params": self.n_params,
             "rays_per_second": round(self.rays_seen / max(self.seconds, 1e-9), 1),
             "occupancy": self.model.grid.occupancy_fraction, "dataset": self.dataset_path,
             "dataset_mb": round(self.dataset.nbytes / 1e6, 1),
             "appearance": self.model.appearance is not None}
        if self.model.appearance is not None:
            m["appearance_spread"] = self.model.appearance.summary()
        return m

    # ------------------------------------------------------------------ checkpoints
    def extra_state(self) -> dict[str, Any]:
        return {"transform": self.model.transform.to_dict(), "dataset": self.dataset_path,
                "image_size": [self.width, self.height], "n_rays": self.n_rays,
                "rays_seen": self.rays_seen,
                # A GPU run's demand not read yet and its buffer sizes: a resumed run goes
                # on as if it never stopped.
                "pending_reads": self.reads.pending(),
                "capacity": [self.capacity.marched, self.capacity.kept]}

    def load_state_dict(self, ckpt: dict[str, Any], where: str | Path = "checkpoint") -> None:
        super().load_state_dict(ckpt, where)
        self.n_rays = int(ckpt["n_rays"])
        self.rays_seen = int(ckpt.get("rays_seen", 0))
        self.reads.restore(ckpt.get("pending_reads", []))
        self.capacity = Capacity(*ckpt.get("capacity", [None, None]))
