"""File formats and geometry shared by the engine and the Blender add-on.

Standard library at import time; numpy inside the functions that need arrays (Blender ships
numpy, so the add-on bundles this package). Nothing here imports torch or bpy:
- `camera`: the one pinhole camera type (NeRF/Blender convention), JSON form = a
  transforms.json frame.
"""
