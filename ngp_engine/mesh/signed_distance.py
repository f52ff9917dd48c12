"""True signed distances to a triangle mesh, with libigl.

Distance: libigl's AABB tree (built once per mesh, reused by every query). Sign: libigl's
fast winding number, so a mesh that is not closed (Suzanne's eyes, a scan with holes) still
has an inside: a point is inside where the generalised winding number exceeds 1/2.
Negative inside, positive outside.
"""
from __future__ import annotations

import numpy as np

from ..packages import require


class MeshDistance:
    """Signed distance and inside test for one mesh (vertices float64 [V, 3], faces int64 [F, 3])."""

    def __init__(self, vertices: np.ndarray, faces: np.ndarray) -> None:
        self.vertices = np.ascontiguousarray(vertices, dtype=np.float64)
        self.faces = np.ascontiguousarray(faces, dtype=np.int64)
        self._igl = igl = require("libigl", "Signed distances to a mesh")
        self._tree = igl.AABB()
        self._tree.init(self.vertices, self.faces)

    def unsigned(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Distance float64 [N] to the nearest triangle and that triangle's index int64 [N]."""
        p = np.ascontiguousarray(points, dtype=np.float64).reshape(-1, 3)
        if len(p) == 0:
            return np.zeros(0), np.zeros(0, np.int64)
        sq, face, _ = self._tree.squared_distance(self.vertices, self.faces, p)
        return np.sqrt(np.maximum(sq, 0.0)), face

    def winding_number(self, points: np.ndarray) -> np.ndarray:
        """Generalised winding number float64 [N] (1 inside a closed outward mesh, 0 outside)."""
        p = np.ascontiguousarray(points, dtype=np.float64).reshape(-1, 3)
        if len(p) == 0:
            return np.zeros(0)
        return self._igl.fast_winding_number(self.vertices, self.faces, p)

    def inside(self, points: np.ndarray) -> np.ndarray:
        """bool [N]: winding number > 1/2."""
        return self.winding_number(points) > 0.5

    def signed(self, points: np.ndarray) -> np.ndarray:
        """Signed distance float64 [N]: negative inside, positive outside."""
        dist, _ = self.unsigned(points)
        return np.where(self.inside(points), -dist, dist)
