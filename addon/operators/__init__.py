"""User actions, one module per stage of the work:
- `stepped`: how an operator that builds a dataset step by step keeps the UI live (and Cancel).
- `rig`: Render Camera Rig.
- `dataset`: Export Cameras, Import transforms.json, Fit Bounds.
- `photos`: Import Photos (camera poses of a real capture found by the engine) and its Stop.
- `training`: Train, Load Trained Field, Train SDF from Active Mesh, Stop (and the request ids).
- `results`: Import Mesh, Preview, and the engine events that bring results into the scene.
- `image_field`: Fit Image Field (an image in, its field's rendering back as a new image).

Each reports one clear sentence on failure (`feedback.fail`) and leaves the scene as it
found it."""
from __future__ import annotations

from . import image_field, photos, results
from .dataset import NGP_OT_export_cameras, NGP_OT_fit_bounds, NGP_OT_import_transforms
from .rig import NGP_OT_render_rig
from .stepped import NGP_OT_cancel_job
from .results import NGP_OT_import_mesh, NGP_OT_preview
from .image_field import NGP_OT_fit_image
from .training import NGP_OT_load_field, NGP_OT_stop, NGP_OT_train, NGP_OT_train_sdf

classes = (NGP_OT_render_rig, NGP_OT_cancel_job, NGP_OT_fit_bounds, NGP_OT_export_cameras, NGP_OT_import_transforms,
           *photos.classes,
           NGP_OT_train, NGP_OT_load_field, NGP_OT_train_sdf, NGP_OT_stop, NGP_OT_import_mesh, NGP_OT_preview,
           NGP_OT_fit_image)


def on_event(ev) -> None:
    """Engine events that change the scene (main thread, from engine_link's pump)."""
    photos.on_event(ev)
    results.on_event(ev)
    image_field.on_event(ev)


__all__ = ["classes", "on_event"]
