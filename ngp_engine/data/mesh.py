"""A triangle mesh to learn a signed distance field of, normalised into the unit cube.

instant-ngp's rule: the mesh's bounding box, inflated on every side by a fraction of its
diagonal, is scaled uniformly so that its longest side spans [0, 1] and centred at 0.5.
The transform (a `formats.unit_cube.UnitCube`) is recorded in checkpoints so that extracted meshes go
back to the input's own coordinates.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..formats.unit_cube import UnitCube
from ..mesh.distance import face_areas
from ..mesh.io import read_mesh

log = logging.getLogger(__name__)
INFLATION = 0.02
"""Box inflation per side, as a fraction of the diagonal (instant-ngp: 0.005). A little more
than instant-ngp so that marching cubes never meets the surface at the edge of its lattice."""


@dataclass
class SdfMesh:
    """The input mesh in world and unit-cube coordinates.

    vertices: float64 [V, 3] world; faces: int64 [F, 3]; unit_vertices: float64 [V, 3];
    box_min/box_max: float64 [3], the inflated box in unit coordinates (inside [0, 1]^3);
    boundary_edges: edges used by one face only (0 for a closed mesh).
    """

    path: str
    vertices: np.ndarray
    faces: np.ndarray
    transform: UnitCube
    unit_vertices: np.ndarray
    box_min: np.ndarray
    box_max: np.ndarray
    boundary_edges: int
    flipped: bool = False
    """True when the input's faces pointed inwards (negative enclosed volume) and were turned."""

    @property
    def diagonal(self) -> float:
        """Bounding-box diagonal of the input in world units (the scale metrics are relative to)."""
        return float(np.linalg.norm(self.vertices.max(0) - self.vertices.min(0)))

    @property
    def note(self) -> str | None:
        """A user-facing remark about the input, or None."""
        notes = []
        if self.boundary_edges:
            notes.append(f"the mesh is not closed ({self.boundary_edges} boundary edges); inside "
                         "and outside come from winding numbers, so small holes are bridged")
        if self.flipped:
            notes.append("its faces pointed inwards and were turned outwards")
        return f"{self.path}: " + "; ".join(notes) if notes else None


def box_only_mesh(path: str, transform: UnitCube, box_min: np.ndarray, box_max: np.ndarray
                  ) -> SdfMesh:
    """A stand-in with no triangles for a mesh file that is gone: enough to mesh and render a
    trained field (transform and box come from its checkpoint), not to train or compare."""
    empty = np.zeros((0, 3))
    return SdfMesh(path, empty, np.zeros((0, 3), np.int64), transform, empty,
                   np.asarray(box_min, np.float64), np.asarray(box_max, np.float64), 0)


def enclosed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    """Signed volume (divergence theorem) of a triangle mesh: float, positive for outward faces."""
    a, b, c = vertices[faces[:, 0]], vertices[faces[:, 1]], vertices[faces[:, 2]]
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def count_boundary_edges(faces: np.ndarray) -> int:
    """Number of undirected edges used by exactly one face."""
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    return int((counts == 1).sum())


def load_sdf_mesh(path: str | Path) -> SdfMesh:
    """Read a .ply/.obj mesh and normalise it. UserError (naming the file) for a missing,
    empty or non-mesh file, NaN vertices, no faces, a flat mesh or one enclosing no volume."""
    path = Path(path)
    vertices, faces, _ = read_mesh(path)
    used = np.unique(faces)
    vertices, faces = _drop_unused(vertices, faces, used)
    lo, hi = vertices.min(0), vertices.max(0)
    diag = float(np.linalg.norm(hi - lo))
    if not diag > 0:
        raise UserError(f"{path}: the mesh is degenerate (all vertices at one point)")
    if not face_areas(vertices, faces).sum() > 1e-12 * diag * diag:
        raise UserError(f"{path}: the mesh is degenerate (its faces have no area)")
    signed_volume = enclosed_volume(vertices, faces)
    extent = hi - lo
    if extent.min() <= 1e-9 * diag or abs(signed_volume) <= 1e-9 * diag ** 3:
        raise UserError(f"{path}: the mesh encloses no volume (flat or a single sheet); "
                        "a signed distance needs an inside")
    inflate = INFLATION * diag
    lo_i, hi_i = lo - inflate, hi + inflate
    transform = UnitCube.around(0.5 * (lo_i + hi_i), float((hi_i - lo_i).max()))
    unit = transform.to_unit(vertices)
    box_min = np.clip(transform.to_unit(lo_i[None])[0], 0.0, 1.0)
    box_max = np.clip(transform.to_unit(hi_i[None])[0], 0.0, 1.0)
    # Inside is where the winding number is +1: a mesh turned inside out (a mirrored export)
    # would read as all outside.
    flipped = signed_volume < 0
    if flipped:
        faces = np.ascontiguousarray(faces[:, [0, 2, 1]])
    mesh = SdfMesh(str(path.resolve()), vertices, faces, transform, unit, box_min, box_max,
                   count_boundary_edges(faces), flipped)
    if mesh.note:
        log.warning("%s", mesh.note)
    return mesh


def _drop_unused(vertices: np.ndarray, faces: np.ndarray, used: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Vertices no face uses (loose points) would stretch the box: keep only used ones."""
    if len(used) == len(vertices):
        return vertices, faces
    remap = np.full(len(vertices), -1, np.int64)
    remap[used] = np.arange(len(used))
    return vertices[used], remap[faces]
