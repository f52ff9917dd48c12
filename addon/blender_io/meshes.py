"""Blender objects <-> triangle meshes as numpy arrays (world coordinates).

What an SDF is trained on (`object_triangles`: the mesh as the user sees it, modifiers
applied), where objects are (`world_bounds`) and the engine's meshes back as objects
(`mesh_object`: vertex colours shown by a material). The PLY files these travel in are
read and written by the bundled `ngp_engine.formats.ply`.
"""
from __future__ import annotations

from collections.abc import Iterable

import bpy
import numpy as np

from .. import rig_geometry


def world_bounds(objects: Iterable[bpy.types.Object]) -> tuple[np.ndarray, np.ndarray]:
    """World-space bounding box (min corner [3], max corner [3]) of the Blender `objects`:
    the box around their local bounding boxes' corners carried into the world."""
    corners = []
    for obj in objects:
        m = np.array(obj.matrix_world, dtype=np.float64)                       # [4, 4]
        corners.append(np.array(obj.bound_box, dtype=np.float64) @ m[:3, :3].T + m[:3, 3])
    return rig_geometry.points_bounds(np.concatenate(corners))


def object_triangles(obj: bpy.types.Object, depsgraph: bpy.types.Depsgraph
                     ) -> tuple[np.ndarray, np.ndarray]:
    """The evaluated mesh of `obj` (modifiers applied) as triangles in world coordinates:
    vertices float64 [V, 3], faces int64 [F, 3]."""
    evaluated = obj.evaluated_get(depsgraph)
    mesh = evaluated.to_mesh()
    try:
        mesh.calc_loop_triangles()
        v = np.empty(len(mesh.vertices) * 3, np.float64)
        mesh.vertices.foreach_get("co", v)
        f = np.empty(len(mesh.loop_triangles) * 3, np.int64)
        mesh.loop_triangles.foreach_get("vertices", f)
    finally:
        evaluated.to_mesh_clear()
    m = np.array(obj.matrix_world, dtype=np.float64)                         # [4, 4]
    f = f.reshape(-1, 3)
    if np.linalg.det(m[:3, :3]) < 0:
        f = f[:, [0, 2, 1]]          # a mirrored object: keep the faces pointing outwards
    return v.reshape(-1, 3) @ m[:3, :3].T + m[:3, 3], f


def mesh_object(name: str, vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray | None,
                collection: bpy.types.Collection) -> bpy.types.Object:
    """A mesh object from numpy arrays (vertices [V, 3] world units, triangle faces [F, 3],
    sRGB colours uint8 [V, 3]), built with foreach_set; colours as a point colour attribute
    shown by a material."""
    faces = np.asarray(faces, dtype=np.int32).reshape(-1, 3)
    # What Mesh.validate() would remove, found in numpy: it costs half the import of a
    # million-triangle mesh (0.48 of 0.92 s), on Blender's main thread.
    ok = ((faces >= 0) & (faces < len(vertices))).all(axis=1)
    ok &= (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 2] != faces[:, 0])
    faces = faces[ok]
    mesh = bpy.data.meshes.new(name)
    n_v, n_f = len(vertices), len(faces)
    mesh.vertices.add(n_v)
    mesh.vertices.foreach_set("co", np.ascontiguousarray(vertices, dtype=np.float32).ravel())
    mesh.loops.add(3 * n_f)
    mesh.loops.foreach_set("vertex_index", np.ascontiguousarray(faces, dtype=np.int32).ravel())
    mesh.polygons.add(n_f)
    mesh.polygons.foreach_set("loop_start", np.arange(0, 3 * n_f, 3, dtype=np.int32))
    if colors is not None:
        attr = mesh.color_attributes.new("Col", "BYTE_COLOR", "POINT")
        rgba = np.ones((n_v, 4), np.float32)
        rgba[:, :3] = colors.astype(np.float32) / 255.0
        attr.data.foreach_set("color_srgb", rgba.ravel())
        mesh.color_attributes.active_color = attr
        mesh.materials.append(_vertex_colour_material())
    mesh.update(calc_edges=True)
    obj = bpy.data.objects.new(name, mesh)
    collection.objects.link(obj)
    return obj


def _vertex_colour_material() -> bpy.types.Material:
    """The one material (made on first use) that shows the "Col" attribute as base colour."""
    return colour_attribute_material("NGP Vertex Colour", point_cloud=False)


def colour_attribute_material(name: str, point_cloud: bool) -> bpy.types.Material:
    """The material `name` (made on first use) whose base colour is the "Col" attribute: a
    Color Attribute node for meshes, an Attribute node for point clouds (which have no mesh
    colour layers)."""
    mat = bpy.data.materials.get(name)
    if mat is not None:
        return mat
    mat = bpy.data.materials.new(name)
    if mat.node_tree is None:      # Blender < 5 starts materials without nodes
        mat.use_nodes = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    bsdf = next(n for n in nodes if n.type == "BSDF_PRINCIPLED")
    attr = nodes.new("ShaderNodeVertexColor")
    attr.layer_name = "Col"
    links.new(attr.outputs["Color"], bsdf.inputs["Base Color"])
    return mat
