"""Meshes: marching cubes on a sampled field, floater cleanup, PLY/OBJ files, distances.

Used by NeRF mesh export (density, inside="above") and by the SDF field (inside="below",
threshold 0). Vertices are in the caller's world coordinates; faces wind so that normals
point outward.
"""
from __future__ import annotations

from .cleanup import remove_floaters
from .distance import face_areas, mesh_to_mesh_distance, point_to_mesh_distance, sample_surface
from .io import read_mesh, write_obj, write_ply
from .marching_cubes import extract_mesh, marching_cubes, sample_grid

__all__ = [
    "extract_mesh", "marching_cubes", "sample_grid",
    "remove_floaters",
    "read_mesh", "write_obj", "write_ply",
    "face_areas", "mesh_to_mesh_distance", "point_to_mesh_distance", "sample_surface",
]
