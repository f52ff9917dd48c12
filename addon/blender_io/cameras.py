"""Blender cameras <-> the engine's pinhole cameras (`ngp_engine.formats.camera.Camera`).

Conventions (see ARCHITECTURE.md):
- A Blender camera looks down -Z with +Y up, the NeRF convention, so a frame's
  `transform_matrix` is the camera's `matrix_world` with any scale removed.
- Intrinsics follow Blender's own view-plane computation: sensor fit (AUTO / HORIZONTAL /
  VERTICAL), pixel aspect and lens shift, so a point lands on the same pixel as in
  Blender's render (checked against `world_to_camera_view` in the tests).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import bpy
from mathutils import Matrix

from ..ngp_engine.formats import transforms
from ..ngp_engine.formats.camera import Camera
from ..ngp_engine.formats.unit_cube import UnitCube
from . import SceneIOError


def render_size(scene: bpy.types.Scene) -> tuple[int, int]:
    """Rendered image size in pixels (resolution times the percentage)."""
    r = scene.render
    return (max(1, round(r.resolution_x * r.resolution_percentage / 100)),
            max(1, round(r.resolution_y * r.resolution_percentage / 100)))


def camera_intrinsics(cam: bpy.types.Object, scene: bpy.types.Scene) -> dict[str, float]:
    """fl_x, fl_y, cx, cy (pixels, origin top-left), w, h of a perspective camera as rendered."""
    data = cam.data
    if data.type != "PERSP":
        raise SceneIOError(f"camera '{cam.name}' is {data.type.lower()}; only perspective cameras work")
    w, h = render_size(scene)
    pa_x, pa_y = scene.render.pixel_aspect_x, scene.render.pixel_aspect_y
    ycor = pa_y / pa_x
    fit = data.sensor_fit
    if fit == "AUTO":
        fit = "HORIZONTAL" if w * pa_x >= h * pa_y else "VERTICAL"
        sensor = data.sensor_width
    else:
        sensor = data.sensor_width if fit == "HORIZONTAL" else data.sensor_height
    viewfac = w if fit == "HORIZONTAL" else ycor * h
    fl_x = data.lens / sensor * viewfac
    fl_y = fl_x / ycor
    cx = 0.5 * w - data.shift_x * viewfac
    cy = 0.5 * h + data.shift_y * viewfac / ycor
    return {"fl_x": fl_x, "fl_y": fl_y, "cx": cx, "cy": cy, "w": w, "h": h,
            "camera_angle_x": 2.0 * math.atan(0.5 * w / fl_x),
            "camera_angle_y": 2.0 * math.atan(0.5 * h / fl_y)}


def camera_to_world(cam: bpy.types.Object) -> list[list[float]]:
    """4x4 camera-to-world of the NeRF convention: matrix_world without scale."""
    loc, rot, _ = cam.matrix_world.decompose()
    m = Matrix.Translation(loc) @ rot.to_matrix().to_4x4()
    return [list(map(float, row)) for row in m]


def pinhole_camera(cam: bpy.types.Object, scene: bpy.types.Scene) -> Camera:
    """The engine's camera for a Blender camera object as `scene` renders it: the pose of
    `camera_to_world` and the pixel intrinsics of `camera_intrinsics`."""
    k = camera_intrinsics(cam, scene)
    try:
        return Camera(transform_matrix=camera_to_world(cam), w=k["w"], h=k["h"], fl_x=k["fl_x"],
                      fl_y=k["fl_y"], cx=k["cx"], cy=k["cy"])
    except ValueError as e:      # the Camera's ConfigError, e.g. a render size over its limit
        raise SceneIOError(f"camera '{cam.name}': {e}") from None


def transforms_document(frames: Sequence[tuple[bpy.types.Object, str]], scene: bpy.types.Scene,
                        transform: UnitCube) -> dict[str, Any]:
    """The instant-ngp transforms.json (`ngp_engine.formats.transforms`) of (Blender camera,
    image path relative to the file) pairs as `scene` renders them, in the unit cube
    `transform`. Raises SceneIOError for a camera the engine cannot use."""
    return transforms.transforms_document([(pinhole_camera(cam, scene), path) for cam, path in frames],
                                          transform)


def create_cameras(frames: Sequence[tuple[Camera, str]], scene: bpy.types.Scene,
                   collection: bpy.types.Collection,
                   photos: Sequence[Path | None] | None = None) -> list[bpy.types.Object]:
    """Blender cameras reproducing each (camera, image file path) pair's pose and
    intrinsics, named after the image. Resolution and pixel aspect are scene-wide in
    Blender, so they come from the first camera; the sensor fit is horizontal, sensor 36 mm;
    focal length and lens shift carry the rest. Lens distortion has no Blender equivalent:
    only the pinhole part is kept (`distorted` tells the caller which cameras lose some).
    `photos` (one per frame, None for none): the image shown behind each camera, so that
    looking through it shows whether the pose fits."""
    first = frames[0][0]
    w, h = first.w, first.h
    ratio = first.fx / first.fy                  # = ycor = pixel_aspect_y / pixel_aspect_x
    scene.render.resolution_x, scene.render.resolution_y = w, h
    scene.render.resolution_percentage = 100
    if ratio >= 1.0:
        scene.render.pixel_aspect_x, scene.render.pixel_aspect_y = 1.0, ratio
    else:
        scene.render.pixel_aspect_x, scene.render.pixel_aspect_y = 1.0 / ratio, 1.0
    objs = []
    for i, (camera, file_path) in enumerate(frames):
        cx, cy = camera.principal_point
        data = bpy.data.cameras.new(f"ngp_cam_{i:03d}")
        data.sensor_fit = "HORIZONTAL"
        data.sensor_width = 36.0
        data.lens = camera.fx * 36.0 / w
        data.shift_x = (0.5 * w - cx) / w
        data.shift_y = (cy - 0.5 * h) * ratio / w
        obj = bpy.data.objects.new(Path(file_path).stem or f"ngp_cam_{i:03d}", data)
        obj.matrix_world = Matrix(camera.transform_matrix)
        collection.objects.link(obj)
        objs.append(obj)
        photo = photos[i] if photos is not None else None
        if photo is not None:
            add_background_photo(data, photo)
    return objs


def add_background_photo(data: bpy.types.Camera, photo: Path) -> bpy.types.CameraBackgroundImage:
    """Show the image file `photo` behind the camera `data` (opaque, filling the camera
    frame as the photo filled the sensor). The image is loaded lazily by Blender (the
    file is only opened when drawn), and one file loaded once however many use it."""
    img = bpy.data.images.load(str(photo), check_existing=True)
    bg = data.background_images.new()
    bg.image = img
    bg.alpha = 1.0
    bg.frame_method = "STRETCH"          # the photo is exactly the camera's frame
    data.show_background_images = True
    return bg


def distorted(frames: Sequence[Camera]) -> int:
    """How many of the cameras have a lens model Blender cannot show (anything but a
    pinhole with all coefficients zero)."""
    return sum(getattr(c, "camera_model", "PINHOLE") != "PINHOLE" for c in frames)
