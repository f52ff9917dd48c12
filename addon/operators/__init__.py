"""User actions, one module per stage of the work:
- `dataset`: Render Camera Rig, Export Cameras, Import transforms.json.
- `training`: Train, Train SDF from Active Mesh, Stop (and the request ids).
- `results`: Import Mesh, Preview, and the engine events that bring results into the scene.

Each reports one clear sentence on failure (`feedback.fail`) and leaves the scene as it
found it."""
from __future__ import annotations

from .dataset import NGP_OT_export_cameras, NGP_OT_import_transforms, NGP_OT_render_rig
from .results import NGP_OT_import_mesh, NGP_OT_preview, on_event
from .training import NGP_OT_stop, NGP_OT_train, NGP_OT_train_sdf

classes = (NGP_OT_render_rig, NGP_OT_export_cameras, NGP_OT_import_transforms, NGP_OT_train,
           NGP_OT_train_sdf, NGP_OT_stop, NGP_OT_import_mesh, NGP_OT_preview)

__all__ = ["classes", "on_event"]
