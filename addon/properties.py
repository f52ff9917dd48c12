"""Per-scene settings of the add-on (`scene.ngp`), shown in the N-panel."""
from __future__ import annotations

from pathlib import Path

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty, StringProperty


class NGP_SceneSettings(bpy.types.PropertyGroup):
    source: EnumProperty(
        name="Source", default="RIG",
        items=[("RIG", "Camera Rig", "Render a ring of cameras around the selected objects"),
               ("CAMERAS", "Scene Cameras", "Cameras of a collection with their images"),
               ("PHOTOS", "Photos", "Photos or a video whose camera poses the engine finds "
                "(Import Photos); Train uses that dataset")])
    camera_collection: PointerProperty(name="Cameras", type=bpy.types.Collection,
                                       description="Collection whose cameras are exported")
    image_folder: StringProperty(name="Images", subtype="DIR_PATH",
                                 description="Folder with one image per camera, named like the camera "
                                             "(used when a camera has no background image)")
    photos_dataset: StringProperty(name="Dataset", subtype="DIR_PATH",
                                   description="The dataset folder Train uses with the Photos source "
                                               "(set by Import Photos: transforms.json, images/, points.ply)")
    photos_matching: EnumProperty(
        name="Matching", default="auto",
        items=[("auto", "Auto", "Sequential for a video, exhaustive for a folder of photos"),
               ("exhaustive", "Exhaustive", "Every photo against every other (slow for hundreds)"),
               ("sequential", "Sequential", "Each frame against its neighbours (a video, a walk)")])
    photos_video_frames: IntProperty(name="Video Frames", default=100, min=3, max=2000,
                                     description="How many frames to take from a video, evenly spaced")
    photos_image_size: IntProperty(name="Image Size", default=0, min=0, max=16384,
                                   description="Longer side of the dataset's images in pixels, never "
                                               "upscaled (0: the engine's default)")
    rig_count: IntProperty(name="Views", default=60, min=4, max=1000)
    rig_radius: FloatProperty(name="Radius", default=0.0, min=0.0, unit="LENGTH",
                              description="Distance of the cameras from the objects' centre (0: fit)")
    rig_sphere: BoolProperty(name="Full Sphere", default=False,
                             description="Cameras all around (off: upper hemisphere)")
    rig_resolution: IntProperty(name="Resolution", default=200, min=16, max=4096)
    rig_samples: IntProperty(name="Samples", default=32, min=1, max=4096,
                             description="Render samples per view (Cycles)")
    run_folder: StringProperty(name="Run Folder", subtype="DIR_PATH",
                               description="Where datasets and results go (empty: the add-on's user folder)")
    train_budget: EnumProperty(name="Budget", default="SECONDS",
                               items=[("SECONDS", "Time", "Train for a number of seconds"),
                                      ("STEPS", "Steps", "Train for a number of optimiser steps "
                                       "(the same result on a slow or a fast machine)")])
    train_seconds: FloatProperty(name="Seconds", default=120.0, min=1.0, max=86400.0,
                                 description="Training time budget")
    train_steps: IntProperty(name="Steps", default=2000, min=1, max=10_000_000,
                             description="Training step budget")
    preset: EnumProperty(name="Preset", default="cpu-fast",
                         items=[("cpu-fast", "Fast (CPU)", "Smaller grid and batch; minutes on a CPU"),
                                ("instant-ngp", "Instant-NGP", "The paper's configuration; for a GPU")])
    mesh_resolution: IntProperty(name="Mesh Resolution", default=256, min=32, max=1024)
    mesh_triangles: IntProperty(name="Target Triangles", default=0, min=0, max=100_000_000,
                                description="Decimate imported meshes to about this many triangles "
                                            "(a Decimate modifier; 0: keep every triangle)")
    mesh_smooth: BoolProperty(name="Smooth Shading", default=True,
                              description="Shade imported meshes smooth")
    mesh_replace: BoolProperty(name="Replace", default=False,
                               description="A new import replaces the run's previous one "
                                           "(off: every import is kept)")
    preview_resolution: IntProperty(name="Preview Size", default=256, min=16, max=4096,
                                    description="Longer side of the preview image in pixels")


def run_folder(scene: bpy.types.Scene, create: bool = True) -> Path:
    """The scene's run folder (created unless `create` is off): the setting, or <user
    folder>/runs/<blend name>."""
    settings = scene.ngp
    if settings.run_folder:
        folder = Path(bpy.path.abspath(settings.run_folder))
    else:
        base = Path(bpy.utils.extension_path_user(__package__, create=create))
        stem = Path(bpy.data.filepath).stem if bpy.data.filepath else "untitled"
        folder = base / "runs" / stem
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    return folder


def data_folder(scene: bpy.types.Scene) -> Path:
    """The scene's NeRF dataset (`transforms.json` and `images/`, not created): with the
    Photos source, the dataset Import Photos made (the engine wrote it); else where
    rendering the rig or exporting cameras writes it."""
    settings = scene.ngp
    if settings.source == "PHOTOS" and settings.photos_dataset:
        return Path(bpy.path.abspath(settings.photos_dataset))
    return scene_dataset_folder(scene)


def scene_dataset_folder(scene: bpy.types.Scene) -> Path:
    """Where rendering the rig or exporting cameras writes its dataset (not created); never
    an imported capture, which the engine wrote and which rendering and exporting never touch."""
    return run_folder(scene, create=False) / "data"


def captures_folder(scene: bpy.types.Scene) -> Path:
    """Where Import Photos puts its datasets, one folder per capture (created)."""
    folder = run_folder(scene) / "captures"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


classes = (NGP_SceneSettings,)


def register() -> None:
    bpy.types.Scene.ngp = PointerProperty(type=NGP_SceneSettings)


def unregister() -> None:
    del bpy.types.Scene.ngp
