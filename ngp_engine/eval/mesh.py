"""How close an extracted mesh is to the input: Chamfer distance (relative to the input's
bounding-box diagonal), normal consistency and volumetric IoU.

- Chamfer: mean of the two one-sided mean distances between area-uniform surface samples
  and the other mesh (as `mesh.distance.mesh_to_mesh_distance`), divided by the diagonal.
- Normal consistency: at surface samples of each mesh, |cos| between the sample's face
  normal and the normal of the nearest face of the other mesh, averaged both ways
  (Occupancy Networks' definition; 1 is perfect).
- IoU: uniform points in the input's bounding box inflated by 5%; inside each mesh where its
  winding number exceeds 1/2 (so open inputs have an inside too).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..mesh.distance import sample_surface
from ..mesh.signed_distance import MeshDistance


def _face_normals(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-300)


def _one_way(src: MeshDistance, src_normals: np.ndarray, dst: MeshDistance,
             dst_normals: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """From n area-uniform samples of mesh src: their distances to dst float64 [n] and |cos|
    between their face normal and the nearest dst face's normal float64 [n]."""
    pts, face = sample_surface(src.vertices, src.faces, n, seed, return_faces=True)
    dist, nearest = dst.unsigned(pts)
    return dist, np.abs(np.einsum("ij,ij->i", src_normals[face], dst_normals[nearest]))


def compare_meshes(pred_v: np.ndarray, pred_f: np.ndarray, gt_v: np.ndarray, gt_f: np.ndarray,
                   n_surface: int = 100_000, n_volume: int = 1 << 20, seed: int = 0) -> dict[str, Any]:
    """Metrics of a predicted mesh against the input (both world units, float [V, 3] / int [F, 3]).

    Returns chamfer (relative to the input's diagonal), chamfer_world, normal_consistency,
    iou, the one-sided mean distances (relative) and the diagonal, all floats."""
    pv, pf = np.asarray(pred_v, np.float64), np.asarray(pred_f, np.int64)
    gv, gf = np.asarray(gt_v, np.float64), np.asarray(gt_f, np.int64)
    lo, hi = gv.min(0), gv.max(0)
    diag = float(np.linalg.norm(hi - lo))
    gt, pred = MeshDistance(gv, gf), MeshDistance(pv, pf)
    gn, pn = _face_normals(gv, gf), _face_normals(pv, pf)
    forward, nc_forward = _one_way(pred, pn, gt, gn, n_surface, seed)
    backward, nc_backward = _one_way(gt, gn, pred, pn, n_surface, seed + 1)
    chamfer = 0.5 * (forward.mean() + backward.mean())
    pad = 0.05 * (hi - lo)
    pts = np.random.default_rng(seed + 4).uniform(lo - pad, hi + pad, (n_volume, 3))
    a, b = gt.inside(pts), pred.inside(pts)
    union = int((a | b).sum())
    iou = float((a & b).sum() / union) if union else 0.0
    return {"chamfer": float(chamfer / diag), "chamfer_world": float(chamfer),
            "pred_to_input_mean": float(forward.mean() / diag),
            "input_to_pred_mean": float(backward.mean() / diag),
            "normal_consistency": float(0.5 * (nc_forward.mean() + nc_backward.mean())),
            "iou": iou, "diagonal": diag}
