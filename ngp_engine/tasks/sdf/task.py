"""Training a signed distance field on a mesh (instant-ngp's SDF mode) and extracting its
zero level set with marching cubes, back in the mesh's own coordinates."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...config import SDF_PRESETS, SdfConfig
from ...data.mesh import SdfMesh, box_only_mesh, load_sdf_mesh
from ...errors import UserError
from ...fields.sdf import SdfField
from ...formats.camera import Camera
from ...formats.unit_cube import UnitCube
from ...mesh.marching_cubes import lattice_resolution, marching_cubes, sample_grid_near_level
from ...nn.optim import TcnnAdam, param_groups
from ...render.passes import PASSES
from ..base import Progress, Task
from .samples import SdfSamples


class SdfTask(Task):
    """Owns the mesh's samples, the field and its optimiser."""

    mode = "sdf"
    kind = "an SDF"
    config_type = SdfConfig
    presets = SDF_PRESETS
    default_preset = "cpu-fast"
    default_steps = 2000
    checkpoint_format = "ngp-sdf-checkpoint"
    checkpoint_keys = ("mesh_path", "transform", "box")
    passes = PASSES

    def __init__(self, data: SdfMesh, cfg: SdfConfig, device: torch.device) -> None:
        super().__init__(cfg, device)
        self.mesh = data
        gen = torch.Generator().manual_seed(cfg.seed)
        self.model = SdfField(cfg, generator=gen).to(device)
        self.optimizer = TcnnAdam(param_groups([self.model.encoding], [self.model.network]),
                                  cfg.optimizer)
        self._samples: SdfSamples | None = None
        self.sampler = torch.Generator(device=device).manual_seed(cfg.seed + 1)
        self.last_extract_fraction = 1.0     # share of lattice points the last extract evaluated

    # ------------------------------------------------------------------ data
    @classmethod
    def load_data(cls, path: str | Path, cfg: Any = None) -> SdfMesh:
        return load_sdf_mesh(path)

    @classmethod
    def data_from_checkpoint(cls, ckpt: dict[str, Any], where: str | Path, for_training: bool
                             ) -> SdfMesh:
        """The recorded mesh; where that file is gone and no training is asked for, a
        stand-in with the checkpoint's transform and box (enough to mesh and render)."""
        if not Path(ckpt["mesh_path"]).is_file():
            if for_training:
                raise UserError(f"{ckpt['mesh_path']}: the mesh this field was trained on is "
                                "missing; training needs it")
            return box_only_mesh(ckpt["mesh_path"], _transform(ckpt, where), *ckpt["box"])
        return load_sdf_mesh(ckpt["mesh_path"])

    @classmethod
    def check_data(cls, ckpt: dict[str, Any], data: SdfMesh, where: str | Path) -> None:
        if data.transform != _transform(ckpt, where):
            raise UserError(f"{where}: was trained on another mesh than {data.path} "
                            "(its bounding box differs)")

    def prepare(self) -> None:
        """Compute the ground truth now, before the clock starts (it takes seconds; meshing
        or rendering a checkpoint never needs it)."""
        if self._samples is None:
            if not len(self.mesh.faces):
                raise UserError(f"{self.mesh.path}: the mesh this field was trained on is missing; "
                                "training needs it")
            self._samples = SdfSamples(self.mesh, self.cfg, self.device)

    @property
    def samples(self) -> SdfSamples:
        """The training samples (made on first use)."""
        self.prepare()
        return self._samples

    # ------------------------------------------------------------------ training
    def train_step(self) -> Progress:
        return self.fit_batch(*self.samples.batch(self.cfg.batch_size, self.sampler), self.cfg.loss)

    # ------------------------------------------------------------------ outputs
    @torch.no_grad()
    def distance(self, world_points: np.ndarray, chunk: int = 1 << 18) -> np.ndarray:
        """The field's signed distance float64 [N] at world points [N, 3], in world units."""
        t = self.mesh.transform
        unit = torch.from_numpy(t.to_unit(world_points)).float().to(self.device)
        out = torch.cat([self.model(unit[i:i + chunk]) for i in range(0, len(unit), chunk)]) \
            if len(unit) else torch.zeros(0)
        return out.double().cpu().numpy() / t.world_to_unit

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
        level = threshold * m.transform.world_to_unit
        # Only the band around the level set is evaluated finely: a trained SDF is close to
        # 1-Lipschitz, so far cells cannot hold the surface (4-8x fewer network queries).
        volume, self.last_extract_fraction = sample_grid_near_level(
            lambda x: self.model(x), m.box_min, m.box_max, res, level, device=self.device)
        verts, faces = marching_cubes(volume, level, m.box_min, m.box_max, inside="below")
        if not len(faces):
            raise UserError(f"no surface at level {threshold} yet (train longer)")
        return m.transform.to_world(verts), faces

    def extract_mesh(self, resolution: int, threshold: float | None) -> dict[str, Any]:
        level = 0.0 if threshold is None else threshold
        vertices, faces = self.extract(resolution, level)
        return {"vertices": vertices, "faces": faces,
                "info": {"n_vertices": int(len(vertices)), "n_faces": int(len(faces)),
                         "resolution": resolution, "threshold": level}}

    def render(self, camera: Camera | None, passes: tuple[str, ...],
               resolution: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
        """Sphere-traced passes of the field seen by a world camera (render/sphere_tracing)."""
        from ...render.sphere_tracing import sphere_trace  # noqa: PLC0415

        if camera is None:
            raise UserError("preview.camera: an SDF preview needs a camera")
        if resolution is not None:
            camera = camera.resized(*resolution)
        m = self.mesh
        return sphere_trace(self.model, m.transform, m.box_min, m.box_max, camera, self.device,
                            passes=tuple(passes))

    def metrics(self) -> dict[str, Any]:
        out = {"ground_truth_seconds": round(self._samples.ground_truth_seconds, 3)
               if self._samples is not None else None,
               "backend": self.backend, "device": str(self.device),
               "n_params": self.n_params, "mesh": self.mesh.path,
               "input_faces": int(len(self.mesh.faces)),
               "input_boundary_edges": self.mesh.boundary_edges,
               "batch_size": self.cfg.batch_size}
        if self.mesh.note:
            out["note"] = self.mesh.note
        return out

    # ------------------------------------------------------------------ checkpoints
    def extra_state(self) -> dict[str, Any]:
        return {"mesh_path": self.mesh.path, "transform": self.mesh.transform.to_dict(),
                "box": [self.mesh.box_min.tolist(), self.mesh.box_max.tolist()]}


def _transform(ckpt: dict[str, Any], where: str | Path) -> UnitCube:
    try:
        return UnitCube.from_dict(ckpt["transform"])
    except UserError as e:
        raise UserError(f"{where}: {e}") from None
