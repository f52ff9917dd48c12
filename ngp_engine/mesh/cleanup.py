"""Mesh cleanup: drop the small disconnected "floaters" that NeRF density leaves in empty space.

No vertex welding here: PyMCubes shares each edge-crossing vertex between the cells that
touch it, so its meshes are already welded by index (tests/test_mesh.py checks every edge
is shared by exactly two faces). See marching_cubes.py for the one case (samples exactly at
the threshold) that leaves coincident vertices, and why they are kept.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse
from scipy.sparse.csgraph import connected_components


def remove_floaters(vertices: np.ndarray, faces: np.ndarray, min_fraction: float = 0.05
                    ) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Drop connected components much smaller than the largest one.

    vertices: [V, 3] any float dtype; faces: [F, 3] integer indices into vertices.
    Components are sets of faces joined through shared vertices. A component is kept when
    its face count is >= min_fraction * (face count of the largest component).
    Returns (vertices [V', 3] same dtype, faces [F', 3] same dtype re-indexed, info) where
    unreferenced vertices are gone and kept vertices keep their relative order; info holds
    components_before, components_after, faces_removed, vertices_removed.
    """
    vertices = np.asarray(vertices)
    faces = np.asarray(faces)
    if faces.ndim != 2 or faces.shape[1] != 3 or vertices.ndim != 2 or vertices.shape[1] != 3:
        raise ValueError(f"expected vertices [V, 3] and faces [F, 3]; got {vertices.shape}, "
                         f"{faces.shape}")
    if len(faces) and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise ValueError("face index out of range")
    n_v = len(vertices)
    if len(faces) == 0:
        info = dict(components_before=0, components_after=0, faces_removed=0,
                    vertices_removed=n_v)
        return vertices[:0], faces, info

    # Vertex graph with an edge a-b and b-c per triangle: enough to connect all three.
    rows = np.concatenate([faces[:, 0], faces[:, 1]])
    cols = np.concatenate([faces[:, 1], faces[:, 2]])
    graph = scipy.sparse.coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)),
                                    shape=(n_v, n_v))
    _, vertex_label = connected_components(graph, directed=False)
    face_label = vertex_label[faces[:, 0]]                      # [F]
    labels, face_count = np.unique(face_label, return_counts=True)
    kept_labels = labels[face_count >= min_fraction * face_count.max()]
    keep_face = np.isin(face_label, kept_labels)                # [F] bool

    kept_faces = faces[keep_face]
    used = np.zeros(n_v, dtype=bool)
    used[kept_faces.reshape(-1)] = True
    new_index = np.cumsum(used) - 1                             # old vertex -> new vertex
    new_faces = new_index[kept_faces].astype(faces.dtype, copy=False)
    info = dict(components_before=int(len(labels)), components_after=int(len(kept_labels)),
                faces_removed=int((~keep_face).sum()), vertices_removed=int(n_v - used.sum()))
    return vertices[used], new_faces, info
