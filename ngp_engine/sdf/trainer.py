"""Training a signed distance field on a mesh (instant-ngp's SDF mode) and extracting its
zero level set with marching cubes, back in the mesh's own coordinates."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .. import config as cfgmod
from .. import files
from ..config import SdfConfig
from ..data.mesh import MeshTransform, SdfMesh, box_only_mesh, load_sdf_mesh
from ..errors import UserError
from ..fields.sdf import SdfField
from ..mesh.marching_cubes import marching_cubes, sample_grid_near_level
from ..optim import TcnnAdam, param_groups
from .samples import SdfSamples

CHECKPOINT_FORMAT = "ngp-sdf-checkpoint"
MAPE_EPSILON = 1e-2      # tiny-cuda-nn's MAPE: |pred - target| / (|target| + 0.01)


@dataclass
class SdfProgress:
    """What a training callback hears after each step."""

    step: int
    loss: float
    seconds: float


def sdf_loss(kind: str, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Scalar loss of predictions [N] against true distances [N]."""
    diff = pred - target
    if kind == "MAPE":
        return (diff.abs() / (target.abs() + MAPE_EPSILON)).mean()
    if kind == "L1":
        return diff.abs().mean()
    return (diff * diff).mean()


def lattice_resolution(box_min: np.ndarray, box_max: np.ndarray, resolution: int) -> tuple[int, int, int]:
    """Points per axis for cubic cells with `resolution` points along the longest side."""
    extent = np.asarray(box_max) - np.asarray(box_min)
    res = np.maximum(2, np.round((resolution - 1) * extent / extent.max()).astype(int) + 1)
    return int(res[0]), int(res[1]), int(res[2])


class SdfTrainer:
    """Owns the mesh's samples, the field and its optimiser; `step()` trains one batch."""

    def __init__(self, mesh: SdfMesh, cfg: SdfConfig, device: torch.device) -> None:
        self.cfg = cfg
        self.device = device
        self.mesh = mesh
        gen = torch.Generator().manual_seed(cfg.seed)
        self.model = SdfField(cfg, generator=gen).to(device)
        self.optimizer = TcnnAdam(param_groups([self.model.encoding], [self.model.network]),
                                  cfg.optimizer)
        self._samples: SdfSamples | None = None
        self._sampler = torch.Generator(device=device).manual_seed(cfg.seed + 1)
        self.steps_done = 0
        self.seconds = 0.0
        self.last_extract_fraction = 1.0     # share of lattice points the last extract evaluated

    @property
    def samples(self) -> SdfSamples:
        """The training samples, made on first use (the ground truth takes seconds; meshing a
        checkpoint does not need it)."""
        if self._samples is None:
            if not len(self.mesh.faces):
                raise UserError(f"{self.mesh.path}: the mesh this field was trained on is missing; "
                                "training needs it")
            self._samples = SdfSamples(self.mesh, self.cfg, self.device)
        return self._samples

    def step(self) -> SdfProgress:
        """One optimisation step on a fresh batch."""
        t0 = time.perf_counter()
        for group in self.optimizer.param_groups:
            group["lr"] = self.cfg.optimizer.learning_rate_at(self.steps_done)
        points, target = self.samples.batch(self.cfg.batch_size, self._sampler)
        self.optimizer.zero_grad(set_to_none=True)
        loss = sdf_loss(self.cfg.loss, self.model(points), target)
        loss.backward()
        self.optimizer.step()
        self.steps_done += 1
        self.seconds += time.perf_counter() - t0
        return SdfProgress(self.steps_done, float(loss.detach()), self.seconds)

    def train(self, steps: int | None = None, seconds: float | None = None,
              callback: Callable[[SdfProgress], None] | None = None) -> None:
        """Train `steps` more steps or for `seconds` more seconds (exactly one of them)."""
        if (steps is None) == (seconds is None):
            raise ValueError("give exactly one of steps and seconds")
        start_steps, start_seconds = self.steps_done, self.seconds
        while not ((steps is not None and self.steps_done - start_steps >= steps)
                   or (seconds is not None and self.seconds - start_seconds >= seconds)):
            p = self.step()
            if callback is not None:
                callback(p)

    # ------------------------------------------------------------------ outputs
    @torch.no_grad()
    def distance(self, world_points: np.ndarray, chunk: int = 1 << 18) -> np.ndarray:
        """The field's signed distance float64 [N] at world points [N, 3], in world units."""
        t = self.mesh.transform
        unit = torch.from_numpy(t.to_unit(world_points)).float().to(self.device)
        out = torch.cat([self.model(unit[i:i + chunk]) for i in range(0, len(unit), chunk)]) \
            if len(unit) else torch.zeros(0)
        return out.double().cpu().numpy() * t.scale

    @torch.no_grad()
    def extract(self, resolution: int = 256, threshold: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """Marching cubes on the `threshold` level (world units; 0 is the surface) over the
        mesh's box, `resolution` lattice points along its longest side. Returns vertices
        float64 [V, 3] in world units and faces int32 [F, 3] (outward normals)."""
        if resolution < 8:
            raise UserError(f"resolution: {resolution} must be >= 8")
        if not math.isfinite(threshold):
            raise UserError(f"threshold: {threshold} must be a finite number")
        m = self.mesh
        res = lattice_resolution(m.box_min, m.box_max, resolution)
        level = threshold / m.transform.scale
        # Only the band around the level set is evaluated finely: a trained SDF is close to
        # 1-Lipschitz, so far cells cannot hold the surface (4-8x fewer network queries).
        volume, self.last_extract_fraction = sample_grid_near_level(
            lambda x: self.model(x), m.box_min, m.box_max, res, level, device=self.device)
        verts, faces = marching_cubes(volume, level, m.box_min, m.box_max, inside="below")
        if not len(faces):
            raise UserError(f"no surface at level {threshold} yet (train longer)")
        return m.transform.to_world(verts), faces

    def render_camera(self, c2w: np.ndarray, fx: float, fy: float, cx: float, cy: float,
                      width: int, height: int, passes: tuple[str, ...] = ("rgb", "depth")
                      ) -> dict[str, np.ndarray]:
        """Sphere-traced passes of the field seen by a world camera (see sdf.render)."""
        from .render import sphere_trace  # noqa: PLC0415

        m = self.mesh
        return sphere_trace(self.model, m.transform, m.box_min, m.box_max, c2w, fx, fy, cx, cy,
                            width, height, self.device, passes=passes)

    def metrics(self) -> dict[str, Any]:
        return {"steps": self.steps_done, "seconds": round(self.seconds, 3),
                "ground_truth_seconds": round(self._samples.ground_truth_seconds, 3)
                if self._samples is not None else None,
                "backend": self.model.backend, "device": str(self.device),
                "n_params": self.model.n_params, "mesh": self.mesh.path,
                "input_faces": int(len(self.mesh.faces)),
                "input_boundary_edges": self.mesh.boundary_edges,
                "batch_size": self.cfg.batch_size}

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "config": cfgmod.to_dict(self.cfg),
            "mesh_path": self.mesh.path,
            "transform": self.mesh.transform.as_dict(),
            "box": [self.mesh.box_min.tolist(), self.mesh.box_max.tolist()],
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": files.to_cpu(self.optimizer.state_dict()),
            "sampler": self._sampler.get_state().cpu(),
            "steps": self.steps_done,
            "seconds": self.seconds,
        }

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: torch.device, mesh: SdfMesh | None = None,
                        backend: str | None = None) -> "SdfTrainer":
        """Rebuild a trainer from `checkpoint.pt`; the mesh is re-read from its recorded path
        unless given. Where that file is gone the trainer can still mesh and render (the
        checkpoint holds the transform and box) but not train. `backend` overrides the
        recorded one."""
        ckpt = load_checkpoint(path)
        cfg = files.config_from_checkpoint(SdfConfig, ckpt, path, backend)
        if mesh is None and not Path(ckpt["mesh_path"]).is_file():
            mesh = box_only_mesh(ckpt["mesh_path"], MeshTransform.from_dict(ckpt["transform"]),
                                 *ckpt["box"])
        mesh = mesh if mesh is not None else load_sdf_mesh(ckpt["mesh_path"])
        if mesh.transform.as_dict() != ckpt["transform"]:
            raise UserError(f"{path}: was trained on another mesh than {mesh.path} "
                            "(its bounding box differs)")
        trainer = cls(mesh, cfg, device)
        files.restore_training(ckpt, path, trainer.model, trainer.optimizer, trainer._sampler)
        trainer.steps_done = int(ckpt["steps"])
        trainer.seconds = float(ckpt["seconds"])
        return trainer


REQUIRED_KEYS = ("config", "mesh_path", "transform", "box", "model", "optimizer", "sampler",
                 "steps", "seconds")


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and check an SDF checkpoint (UserError naming the file otherwise)."""
    return files.load_checkpoint(path, CHECKPOINT_FORMAT, REQUIRED_KEYS, "an SDF")
