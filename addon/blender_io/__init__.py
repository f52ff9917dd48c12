"""Blender data <-> the engine's plain data: cameras, meshes and images.

bpy, numpy and the standard library only; the file formats themselves (transforms.json,
PLY) are the bundled engine's `ngp_engine.formats`, so both sides read and write them with
one implementation. One module per kind of data:
- `cameras`: render size, intrinsics as rendered, camera-to-world, transforms.json
  documents of Blender cameras, and Blender cameras from a file's frames.
- `meshes`: evaluated object triangles, world bounding boxes, mesh objects from arrays.
- `images`: image sizes, float images from arrays.
"""
from __future__ import annotations


class SceneIOError(Exception):
    """A problem with the user's data; the message is one sentence naming it."""
