"""A NeRF's surface: marching cubes over the density in the object's box, enclosed hidden
space filled from the training cameras first, floaters removed, vertex colours from the
colour network.

The box: by default the engine's unit cube [0, 1]^3 in world units. A real capture's scene
box is `aabb_scale` times larger (room for the background the rays cross), but the object
the transform was fitted to is the unit cube; meshing the whole scene box would spend the
grid on background floaters. With aabb_scale 1 the two are the same box."""
from __future__ import annotations

from typing import Any

import numpy as np

from ...errors import UserError
from ...formats.camera import Camera
from ...mesh import remove_floaters
from ...mesh.marching_cubes import marching_cubes, sample_grid
from .model import NerfModel
from .visibility import apply_edit, lattice_shape, space_edit

DEFAULT_MESH_THRESHOLD = 2.5   # instant-ngp's marching-cubes density threshold
HIDDEN_RESOLUTION = 128        # lattice of the hidden-space test (upsampled to the mesh's)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals [V, 3] of a triangle mesh (outward for outward faces)."""
    v = vertices.astype(np.float64)
    fn = np.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]])   # [F, 3], |fn| = 2 area
    n = np.zeros_like(v)
    for k in range(3):
        np.add.at(n, faces[:, k], fn)
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-20)


def mesh_box(model: NerfModel, box: tuple[Any, Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(lo [3], hi [3]) float64 world box to mesh: `box` (world lo, hi) clipped to the scene
    box, or by default the unit cube (module docstring). UserError for a box that is not two
    triples of finite numbers with lo < hi, or that misses the scene box."""
    scene_lo, scene_hi = (np.asarray(b, np.float64) for b in model.scene_box_world())
    if box is None:
        lo, hi = model.transform.to_world(np.zeros(3)), model.transform.to_world(np.ones(3))
    else:
        try:
            lo, hi = (np.asarray(b, np.float64).reshape(3) for b in box)
        except (TypeError, ValueError):
            raise UserError(f"mesh box: {box!r} must be (lo, hi), each 3 numbers") from None
        if not (np.isfinite(lo).all() and np.isfinite(hi).all() and (lo < hi).all()):
            raise UserError(f"mesh box: lo {lo.tolist()} must be below hi {hi.tolist()} on "
                            "every axis (finite numbers, world units)")
    lo, hi = np.maximum(lo, scene_lo), np.minimum(hi, scene_hi)
    if not (lo < hi).all():
        raise UserError(f"mesh box: {box!r} does not overlap the scene box "
                        f"{scene_lo.tolist()}..{scene_hi.tolist()}")
    return lo, hi


def nerf_mesh(model: NerfModel, resolution: int = 256, threshold: float = DEFAULT_MESH_THRESHOLD,
              min_component_fraction: float | None = 0.05,
              cameras: list[Camera] | None = None,
              box: tuple[Any, Any] | None = None,
              alphas: np.ndarray | None = None) -> dict[str, Any]:
    """Marching cubes over the density in `box` (world lo [3], hi [3]; default the unit cube,
    see `mesh_box`), `resolution` grid points along its longest side; world-unit vertices
    [V, 3] float32, faces [F, 3] int32, vertex colours [V, 3] uint8 (the colour network looking
    at each vertex from outside, along -normal). `min_component_fraction` drops floaters:
    components with fewer faces than that fraction of the largest (None keeps everything).
    With the training `cameras`, hidden space that their observed surfaces enclose is filled
    before meshing and hidden space outside them emptied (see visibility.py): no hollow
    insides, no open bottoms, and nothing under an object where no camera saw; `alphas`
    [N, H, W] (the training photos' alpha, when they have one) empties their background too."""
    lo, hi = mesh_box(model, box)
    volume = sample_grid(model.density_world, lo, hi, lattice_shape(lo, hi, resolution),
                         device=model.device)
    info: dict[str, Any] = {"resolution": resolution, "threshold": threshold,
                            "box_min": lo.tolist(), "box_max": hi.tolist()}
    if cameras is not None:
        edit = space_edit(model, cameras, resolution=min(resolution, HIDDEN_RESOLUTION),
                          box=(lo, hi), alphas=alphas)
        volume = apply_edit(volume, edit, fill_value=2.0 * threshold + 1.0, empty_value=0.0)
        info["hidden_fraction"] = float(edit.fill.mean())
        info["emptied_fraction"] = float(edit.empty.mean())
    verts, faces = marching_cubes(volume, threshold, lo, hi, inside="above")
    if min_component_fraction is not None and len(faces):
        verts, faces, cleanup = remove_floaters(verts, faces, min_fraction=min_component_fraction)
        info.update(cleanup)
    colors = np.zeros((len(verts), 3), np.uint8)
    if len(faces):
        normals = vertex_normals(verts, faces)
        rgb = model.colour_world(verts.astype(np.float64), -normals)
        colors = (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)
    info.update(n_vertices=int(len(verts)), n_faces=int(len(faces)))
    return {"vertices": verts.astype(np.float32), "faces": faces.astype(np.int32), "colors": colors,
            "info": info}
