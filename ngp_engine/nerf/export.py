"""What a trained NeRF gives back: rendered passes as files and a coloured mesh in world units."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from ..data.image import save_png
from ..files import atomic_write
from ..data.transforms import Cameras
from ..mesh import remove_floaters
from ..mesh.marching_cubes import marching_cubes, sample_grid
from .model import NerfModel
from .visibility import fill_hidden, hidden_space

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


def nerf_mesh(model: NerfModel, resolution: int = 256, threshold: float = DEFAULT_MESH_THRESHOLD,
              min_component_fraction: float | None = 0.05,
              cameras: Cameras | None = None) -> dict[str, Any]:
    """Marching cubes over the density in the scene box; world-unit vertices [V, 3] float32,
    faces [F, 3] int32, vertex colours [V, 3] uint8 (the colour network looking at each vertex
    from outside, along -normal). `min_component_fraction` drops floaters: components with
    fewer faces than that fraction of the largest (None keeps everything). With the training
    `cameras`, space they saw only from behind a surface is filled before meshing (see
    visibility.py): no hollow insides, no open bottoms."""
    lo, hi = model.scene_box_world()
    volume = sample_grid(model.density_world, lo, hi, resolution, device=model.device)
    info: dict[str, Any] = {"resolution": resolution, "threshold": threshold}
    if cameras is not None:
        hidden = hidden_space(model, cameras, resolution=min(resolution, HIDDEN_RESOLUTION))
        volume = fill_hidden(volume, hidden, value=2.0 * threshold + 1.0)
        info["hidden_fraction"] = float(hidden.mean())
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


def save_passes(passes: dict[str, np.ndarray], out_dir: Path, stem: str) -> list[Path]:
    """Each pass as float32 `<stem>_<pass>.npy` plus a viewable `<stem>_<pass>.png`:
    rgb as is, opacity as grey, depth normalised near-white to far-black over the covered
    pixels, normals as (n + 1) / 2."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, arr in passes.items():
        npy = out_dir / f"{stem}_{name}.npy"
        atomic_write(npy, lambda tmp, a=arr: np.save(tmp, a.astype(np.float32)))
        png = out_dir / f"{stem}_{name}.png"
        save_png(png, _viewable(name, arr, passes.get("opacity")))
        written += [npy, png]
    return written


def _viewable(name: str, arr: np.ndarray, opacity: np.ndarray | None) -> np.ndarray:
    if name == "rgb":
        return arr
    if name == "opacity":
        return arr[..., None]
    if name == "normals":
        return np.where(np.any(arr != 0, axis=-1, keepdims=True), (arr + 1.0) * 0.5, 0.0)
    if name == "depth":
        covered = arr > 0
        if not covered.any():
            return np.zeros(arr.shape + (1,), np.float32)
        near, far = float(arr[covered].min()), float(arr[covered].max())
        img = np.where(covered, 1.0 - (arr - near) / max(far - near, 1e-9) * 0.8, 0.0)
        return img[..., None].astype(np.float32)
    raise ValueError(f"unknown pass {name!r}")

