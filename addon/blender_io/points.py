"""Sparse point clouds (what structure from motion triangulated) <-> Blender objects.

The cloud is a mesh object of vertices only, its colours a point-domain colour attribute
"Col" (what Blender's PLY importer makes of such a file, and what `export` tools read back).
Blender does not draw loose vertices outside Edit Mode, so a small Geometry Nodes modifier
shows each vertex as a coloured point in the viewport; the mesh itself stays plain vertices.
"""
from __future__ import annotations

import os
from pathlib import Path

import bpy
import numpy as np

from ..ngp_engine.formats import ply
from .meshes import colour_attribute_material

POINTS_NODES = "NGP Points"
POINTS_MATERIAL = "NGP Point Colour"


def read_point_cloud(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None]:
    """Points float64 [N, 3] and colours uint8 [N, 3] (or None) of a PLY file's vertex
    element (the engine's one PLY parser); UserError naming the file when it is not
    readable PLY with x, y, z."""
    return ply.read_points(Path(path))


def point_cloud_object(name: str, points: np.ndarray, colors: np.ndarray | None,
                       collection: bpy.types.Collection) -> bpy.types.Object:
    """A mesh object of vertices only at `points` [N, 3] (world units), with sRGB `colors`
    uint8 [N, 3] as the point colour attribute "Col"; shown as points whose radius follows
    the cloud's size."""
    mesh = bpy.data.meshes.new(name)
    mesh.vertices.add(len(points))
    mesh.vertices.foreach_set("co", np.ascontiguousarray(points, dtype=np.float32).ravel())
    if colors is not None:
        attr = mesh.color_attributes.new("Col", "BYTE_COLOR", "POINT")
        rgba = np.ones((len(points), 4), np.float32)
        rgba[:, :3] = colors.astype(np.float32) / 255.0
        attr.data.foreach_set("color_srgb", rgba.ravel())
        mesh.color_attributes.active_color = attr
    mesh.update()
    obj = bpy.data.objects.new(name, mesh)
    collection.objects.link(obj)
    mod = obj.modifiers.new("Points", "NODES")
    mod.node_group = _points_node_group()
    _set_radius(mod, _point_radius(points))
    return obj


def _point_radius(points: np.ndarray) -> float:
    """A point size that reads at any scale: 1/400 of the cloud's extent (its 5-95th
    percentile box, so a few stray points far out do not inflate it)."""
    if len(points) < 2:
        return 0.01
    lo, hi = np.percentile(points, [5, 95], axis=0)
    return float(max(np.linalg.norm(hi - lo) / 400.0, 1e-6))


def _set_radius(mod: bpy.types.Modifier, radius: float) -> None:
    """Set the modifier's "Radius" input (its identifier is the interface socket's)."""
    socket = next(s for s in mod.node_group.interface.items_tree
                  if getattr(s, "in_out", None) == "INPUT" and s.name == "Radius")
    mod[socket.identifier] = radius


def _points_node_group() -> bpy.types.NodeTree:
    """The one node group (made on first use): Mesh to Points with a Radius input, then
    the point colour material."""
    ng = bpy.data.node_groups.get(POINTS_NODES)
    if ng is not None:
        return ng
    ng = bpy.data.node_groups.new(POINTS_NODES, "GeometryNodeTree")
    ng.interface.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
    radius = ng.interface.new_socket("Radius", in_out="INPUT", socket_type="NodeSocketFloat")
    radius.default_value, radius.min_value = 0.01, 0.0
    ng.interface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")
    nodes, links = ng.nodes, ng.links
    group_in, group_out = nodes.new("NodeGroupInput"), nodes.new("NodeGroupOutput")
    to_points = nodes.new("GeometryNodeMeshToPoints")
    set_mat = nodes.new("GeometryNodeSetMaterial")
    set_mat.inputs["Material"].default_value = colour_attribute_material(POINTS_MATERIAL,
                                                                         point_cloud=True)
    links.new(group_in.outputs["Geometry"], to_points.inputs["Mesh"])
    links.new(group_in.outputs["Radius"], to_points.inputs["Radius"])
    links.new(to_points.outputs["Points"], set_mat.inputs["Geometry"])
    links.new(set_mat.outputs["Geometry"], group_out.inputs["Geometry"])
    return ng
