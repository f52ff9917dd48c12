"""A trained (or training) NeRF: the field, its occupancy grid and the scene transform.

Everything here works in the engine's unit cube internally and speaks the dataset's world
units outwards (cameras in, depth and mesh vertices out), through the scene's `UnitCube` transform.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ...config import NerfConfig
from ...fields.nerf import NerfField
from ...nn.appearance import ImageAppearance
from ...formats.camera import Camera
from ...formats.unit_cube import UnitCube
from ...render.occupancy_grid import OccupancyGrid, n_cascades_for
from ...render.passes import PASSES, check_passes
from ...render.ray_marching import marcher_for, step_bounds
from ...render.rays import camera_directions, camera_rays, pixel_grid, rays_from_directions
from ...render.renderer import MarchSettings, RenderedRays, render_rays, render_rays_windowed


class NerfModel:
    """Field + occupancy grid + scene transform, on one device."""

    def __init__(self, cfg: NerfConfig, transform: UnitCube, device: torch.device) -> None:
        self.cfg = cfg
        self.transform = transform
        self.device = device
        self.appearance: ImageAppearance | None = None
        """Per-training-image colour correction (set by the training task; renders never use it)."""
        box_min, box_max = transform.box_unit()
        gen = torch.Generator().manual_seed(cfg.seed)
        self.field = NerfField(cfg, float(box_min[0]), float(box_max[0] - box_min[0]),
                               transform.aabb_scale, generator=gen).to(device)
        n_cascades = n_cascades_for(transform.aabb_scale)
        min_step, max_step = step_bounds(cfg.marching.steps_per_diagonal, n_cascades,
                                         cfg.occupancy.resolution)
        self.grid = OccupancyGrid(cfg.occupancy, n_cascades, min_step, device)
        cone = cfg.marching.cone_angle
        if cone is None:
            cone = 1.0 / 256.0 if transform.aabb_scale > 1 else 0.0
        self.settings = MarchSettings(
            box_min=tuple(float(v) for v in box_min), box_max=tuple(float(v) for v in box_max),
            min_step=min_step, max_step=max_step, cone_angle=cone,
            max_samples=cfg.marching.max_samples_per_ray,
            early_stop=cfg.marching.early_stop_transmittance,
            # The triton backend asked for by name means every Triton kernel (marching and
            # compositing too: how the interpreter tests run them in a training step); auto
            # picks them on CUDA/ROCm anyway.
            backend="triton" if cfg.backend == "triton" else "auto")

    @property
    def backend(self) -> str:
        return self.field.encoding.backend_for(self.device)

    @property
    def reads_nothing_back(self) -> bool:
        """Whether training renders with fixed-size buffers (`renderer.Capacity`), reading
        nothing back to the host per step: where the Triton marcher runs (GPUs, and the
        interpreter's tests), with early termination on. The CPU's windowed search reads
        counts as it goes, which costs nothing there."""
        return (self.settings.early_stop > 0
                and marcher_for(self.device, self.settings.backend) == "triton")

    # ------------------------------------------------------------------ cameras
    def unit_c2w(self, c2w_world: np.ndarray) -> torch.Tensor:
        """[N, 4, 4] world camera-to-world -> unit-cube camera-to-world (float32, device).
        The scale is uniform, so rotations and directions are unchanged."""
        c2w = np.array(c2w_world, dtype=np.float64, copy=True).reshape(-1, 4, 4)
        c2w[:, :3, 3] = self.transform.to_unit(c2w[:, :3, 3])
        return torch.from_numpy(c2w).float().to(self.device)

    def render_rays(self, origins: torch.Tensor, dirs: torch.Tensor, **kw: Any) -> RenderedRays:
        return render_rays(self.field, self.grid, origins, dirs, self.settings, **kw)

    @torch.no_grad()
    def render_camera(self, camera: Camera, passes: tuple[str, ...] = PASSES,
                      background: tuple[float, float, float] = (1.0, 1.0, 1.0),
                      chunk: int = 1 << 14) -> dict[str, np.ndarray]:
        """Render one camera (world units) at its own size, through its lens model (a
        distorted camera renders the distorted image, pixel for pixel its photo's).

        Returns float32 arrays: rgb [H, W, 3] composited on `background`; opacity [H, W];
        depth [H, W] z-depth (distance along the camera's viewing axis) in world units, 0 where
        opacity < 0.01; normals [H, W, 3] world-space unit normals from the density gradient,
        0 where opacity < 0.01.
        """
        check_passes(passes)
        width, height = camera.w, camera.h
        fx, fy, cx, cy = camera.intrinsics
        c2w_u = self.unit_c2w(camera.c2w)[0]
        u, v = pixel_grid(width, height, self.device)
        d_cam = camera_directions(camera, self.device) if camera.distorted else None   # [H*W, 3]
        n = u.numel()
        bg = torch.tensor(background, dtype=torch.float32, device=self.device)
        out = {k: [] for k in ("rgb", "opacity", "depth", "normals")}
        want_normals = "normals" in passes
        for s in range(0, n, chunk):
            uu, vv = u[s:s + chunk], v[s:s + chunk]
            m = uu.numel()
            if d_cam is not None:
                o, d = rays_from_directions(c2w_u.expand(m, 4, 4), d_cam[s:s + chunk])
            else:
                o, d = camera_rays(c2w_u.expand(m, 4, 4), *(torch.full((m,), float(a), device=self.device)
                                                             for a in (fx, fy, cx, cy)), uu, vv)
            r = render_rays_windowed(self.field, self.grid, o, d, self.settings, background=bg,
                                     want_normals=want_normals)
            # z-depth: distance along the ray times the cosine to the viewing axis.
            cos = -(d @ c2w_u[:3, 2])
            out["rgb"].append(r.rgb)
            out["opacity"].append(r.opacity)
            out["depth"].append(r.depth * cos)
            if want_normals:
                out["normals"].append(r.normals)
        opacity = torch.cat(out["opacity"]).reshape(height, width)
        covered = opacity >= 0.01
        result: dict[str, np.ndarray] = {}
        if "rgb" in passes:
            result["rgb"] = torch.cat(out["rgb"]).reshape(height, width, 3).clamp(0, 1).cpu().numpy()
        if "opacity" in passes:
            result["opacity"] = opacity.cpu().numpy()
        if "depth" in passes:
            depth = torch.cat(out["depth"]).reshape(height, width) / opacity.clamp_min(1e-6)
            depth = torch.where(covered, depth / self.transform.world_to_unit, torch.zeros_like(depth))
            result["depth"] = depth.cpu().numpy()
        if want_normals:
            nrm = torch.cat(out["normals"]).reshape(height, width, 3)
            nrm = nrm / nrm.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            result["normals"] = torch.where(covered[..., None], nrm, torch.zeros_like(nrm)).cpu().numpy()
        return {k: v.astype(np.float32) for k, v in result.items()}

    # ------------------------------------------------------------------ geometry
    @torch.no_grad()
    def density_world(self, points_world: torch.Tensor) -> torch.Tensor:
        """Density at world points [N, 3] (float32, device) -> [N], per unit-cube length."""
        off = torch.tensor(self.transform.offset, dtype=torch.float32, device=points_world.device)
        return self.field.density(points_world * self.transform.world_to_unit + off)

    @torch.no_grad()
    def colour_world(self, points_world: np.ndarray, view_dirs: np.ndarray,
                     chunk: int = 1 << 16) -> np.ndarray:
        """RGB [N, 3] float32 seen at world points [N, 3] looking along view_dirs [N, 3]."""
        off = np.asarray(self.transform.offset)
        out = []
        for s in range(0, len(points_world), chunk):
            x = torch.from_numpy(points_world[s:s + chunk] * self.transform.world_to_unit + off).float().to(self.device)
            d = torch.from_numpy(view_dirs[s:s + chunk]).float().to(self.device)
            d = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            out.append(self.field(x, d)[1].clamp(0, 1).cpu())
        if not out:
            return np.zeros((0, 3), np.float32)
        return torch.cat(out).numpy().astype(np.float32)

    def scene_box_world(self) -> tuple[np.ndarray, np.ndarray]:
        return self.transform.box_world()

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        state = {
            "field": {k: v.detach().cpu() for k, v in self.field.state_dict().items()},
            "grid": self.grid.state_dict(),
        }
        if self.appearance is not None:
            state["appearance"] = {k: v.detach().cpu() for k, v in self.appearance.state_dict().items()}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.field.load_state_dict(state["field"])
        self.grid.load_state_dict(state["grid"])
        # A model that only renders has no training images, hence no appearance to restore.
        if self.appearance is not None and "appearance" in state:
            self.appearance.load_state_dict(state["appearance"])

