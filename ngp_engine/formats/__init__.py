"""File formats and geometry shared by the engine and the Blender add-on.

Standard library and numpy only (Blender ships numpy, so the add-on bundles this package;
nothing here imports torch, PIL, plyfile or bpy). `camera` and `unit_cube` import numpy only
inside the functions that need arrays, so the service protocol can use them without it.
- `camera`: the one pinhole camera type (NeRF/Blender convention), JSON form = a
  transforms.json frame.
- `unit_cube`: the recorded world <-> unit-cube transform (a transforms.json's scale, offset,
  aabb_scale).
- `transforms`: transforms.json read (one split of a dataset, as cameras and image files) and
  written.
- `ply`: PLY triangle meshes read (ASCII and binary, any types) and written (binary).
- `triangles`: fan triangulation and the array checks the mesh readers and writers share.
- `atomic`: write beside the target and rename, so no file is ever half written.
"""
