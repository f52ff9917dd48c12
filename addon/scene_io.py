"""Blender data <-> plain files: cameras as `transforms.json`, meshes from PLY, passes as images.

bpy, numpy and the standard library only. Conventions (see ARCHITECTURE.md):
- A Blender camera looks down -Z with +Y up, the NeRF convention, so a frame's
  `transform_matrix` is the camera's `matrix_world` with any scale removed.
- Intrinsics follow Blender's own view-plane computation: sensor fit (AUTO / HORIZONTAL /
  VERTICAL), pixel aspect and lens shift, so a point lands on the same pixel as in
  Blender's render (checked against `world_to_camera_view` in the tests).
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import bpy
import numpy as np
from mathutils import Matrix


class SceneIOError(Exception):
    """A problem with the user's data; the message is one sentence naming it."""


# ---------------------------------------------------------------------------------- cameras
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


def transforms_document(frames: list[tuple[bpy.types.Object, str]], scene: bpy.types.Scene,
                        centre: tuple[float, float, float], half_extent: float) -> dict[str, Any]:
    """The instant-ngp `transforms.json` for (camera, image path relative to the file) pairs.
    Shared intrinsics go to the top level, so NeRF-synthetic readers work too; `scale` and
    `offset` put the box centre +- half_extent into the engine's unit cube (with a margin)."""
    if not frames:
        raise SceneIOError("no cameras to export")
    intr = [camera_intrinsics(cam, scene) for cam, _ in frames]
    first = intr[0]
    scale = 0.5 / (1.1 * max(half_extent, 1e-6))
    doc: dict[str, Any] = {key: first[key] for key in ("camera_angle_x", "camera_angle_y", "fl_x", "fl_y",
                                                       "cx", "cy", "w", "h")}
    doc.update(aabb_scale=1, scale=scale, offset=[0.5 - scale * c for c in centre])
    doc["frames"] = []
    for (cam, path), k in zip(frames, intr):
        frame: dict[str, Any] = {"file_path": path, "transform_matrix": camera_to_world(cam)}
        for key in ("fl_x", "fl_y", "cx", "cy"):
            if not math.isclose(k[key], first[key], rel_tol=0, abs_tol=1e-9):
                frame[key] = k[key]
        doc["frames"].append(frame)
    return doc


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON beside `path` and rename it into place: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_transforms(path: Path) -> list[dict[str, Any]]:
    """Frames of an instant-ngp or NeRF-synthetic transforms file, each with transform_matrix
    (4x4 lists), fl_x, fl_y, cx, cy, w, h and file_path; intrinsics resolved from the frame,
    then the top level, then camera_angle_x/y and the first image's size."""
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise SceneIOError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SceneIOError(f"{path}: not a readable JSON file ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("frames"), list) or not doc["frames"]:
        raise SceneIOError(f"{path}: needs a non-empty 'frames' list")
    frames = []
    for i, fr in enumerate(doc["frames"]):
        where = f"{path}: frame {i}"
        if not isinstance(fr, dict):
            raise SceneIOError(f"{where}: not an object")
        m = np.asarray(fr.get("transform_matrix"), dtype=np.float64) \
            if isinstance(fr.get("transform_matrix"), list) else None
        if m is None or m.shape != (4, 4) or not np.isfinite(m).all():
            raise SceneIOError(f"{where}: transform_matrix must be a finite 4x4 matrix")

        def get(key: str) -> Any:
            return fr.get(key, doc.get(key))

        w, h = get("w"), get("h")
        if w is None or h is None:
            w, h = _image_size(Path(path).parent, str(fr.get("file_path", "")), where)
        fl_x, fl_y = get("fl_x"), get("fl_y")
        if fl_x is None and get("camera_angle_x") is not None:
            fl_x = 0.5 * w / math.tan(0.5 * float(get("camera_angle_x")))
        if fl_y is None and get("camera_angle_y") is not None:
            fl_y = 0.5 * h / math.tan(0.5 * float(get("camera_angle_y")))
        if fl_x is None and fl_y is None:
            raise SceneIOError(f"{where}: no focal length (fl_x or camera_angle_x)")
        fl_x = fl_x if fl_x is not None else fl_y
        fl_y = fl_y if fl_y is not None else fl_x
        frames.append({"transform_matrix": m.tolist(), "fl_x": float(fl_x), "fl_y": float(fl_y),
                       "cx": float(get("cx") if get("cx") is not None else 0.5 * w),
                       "cy": float(get("cy") if get("cy") is not None else 0.5 * h),
                       "w": int(w), "h": int(h), "file_path": str(fr.get("file_path", ""))})
    return frames


def _image_size(folder: Path, file_path: str, where: str) -> tuple[int, int]:
    candidates = [folder / file_path] + [folder / (file_path + ext) for ext in (".png", ".jpg", ".jpeg")]
    for c in candidates:
        if c.is_file():
            img = bpy.data.images.load(str(c), check_existing=False)
            try:
                w, h = img.size
            finally:
                bpy.data.images.remove(img)
            if w and h:
                return int(w), int(h)
    raise SceneIOError(f"{where}: no w/h and no readable image at {file_path!r}")


def create_cameras(frames: list[dict[str, Any]], scene: bpy.types.Scene,
                   collection: bpy.types.Collection) -> list[bpy.types.Object]:
    """Blender cameras reproducing each frame's pose and intrinsics. Resolution and pixel
    aspect are scene-wide in Blender, so they come from the first frame; the sensor fit is
    horizontal, sensor 36 mm; focal length and lens shift carry the rest."""
    w, h = frames[0]["w"], frames[0]["h"]
    ratio = frames[0]["fl_x"] / frames[0]["fl_y"]            # = ycor = pixel_aspect_y / pixel_aspect_x
    scene.render.resolution_x, scene.render.resolution_y = w, h
    scene.render.resolution_percentage = 100
    if ratio >= 1.0:
        scene.render.pixel_aspect_x, scene.render.pixel_aspect_y = 1.0, ratio
    else:
        scene.render.pixel_aspect_x, scene.render.pixel_aspect_y = 1.0 / ratio, 1.0
    objs = []
    for i, fr in enumerate(frames):
        data = bpy.data.cameras.new(f"ngp_cam_{i:03d}")
        data.sensor_fit = "HORIZONTAL"
        data.sensor_width = 36.0
        data.lens = fr["fl_x"] * 36.0 / w
        data.shift_x = (0.5 * w - fr["cx"]) / w
        data.shift_y = (fr["cy"] - 0.5 * h) * ratio / w
        obj = bpy.data.objects.new(Path(fr["file_path"]).stem or f"ngp_cam_{i:03d}", data)
        obj.matrix_world = Matrix(fr["transform_matrix"])
        collection.objects.link(obj)
        objs.append(obj)
    return objs


# ---------------------------------------------------------------------------------- meshes
def read_ply(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Binary little-endian triangle PLY (the engine's format): vertices float32 [V, 3],
    faces int32 [F, 3], colours uint8 [V, 3] or None. numpy only, no plyfile in Blender."""
    with open(path, "rb") as f:
        header = []
        while True:
            line = f.readline()
            if not line:
                raise SceneIOError(f"{path}: not a PLY file (no end_header)")
            header.append(line.decode("ascii", "replace").strip())
            if header[-1] == "end_header":
                break
        body = f.read()
    if header[0] != "ply" or "format binary_little_endian 1.0" not in header:
        raise SceneIOError(f"{path}: only binary little-endian PLY is read here")
    n_v = n_f = 0
    v_props: list[tuple[str, str]] = []
    face_list = None
    element = None
    types = {"float": "<f4", "float32": "<f4", "double": "<f8", "uchar": "u1", "uint8": "u1",
             "int": "<i4", "int32": "<i4", "uint": "<u4", "uint32": "<u4"}
    for line in header[1:]:
        parts = line.split()
        if parts[:1] == ["element"]:
            element = parts[1]
            if element == "vertex":
                n_v = int(parts[2])
            elif element == "face":
                n_f = int(parts[2])
        elif parts[:1] == ["property"] and element == "vertex":
            v_props.append((parts[2], types[parts[1]]))
        elif parts[:2] == ["property", "list"] and element == "face":
            face_list = (types[parts[2]], types[parts[3]])
    if face_list is None and n_f:
        raise SceneIOError(f"{path}: faces without a vertex index list")
    vdt = np.dtype(v_props)
    verts = np.frombuffer(body, dtype=vdt, count=n_v)
    fdt = np.dtype([("n", face_list[0]), ("i", face_list[1], (3,))]) if n_f else None
    faces_rec = np.frombuffer(body, dtype=fdt, count=n_f, offset=vdt.itemsize * n_v) if n_f else None
    if n_f and (faces_rec["n"] != 3).any():
        raise SceneIOError(f"{path}: only triangle meshes are read here")
    v = np.stack([verts["x"], verts["y"], verts["z"]], axis=1).astype(np.float32)
    f = faces_rec["i"].astype(np.int32) if n_f else np.zeros((0, 3), np.int32)
    names = vdt.names
    colors = np.stack([verts[c] for c in ("red", "green", "blue")], axis=1).astype(np.uint8) \
        if all(c in names for c in ("red", "green", "blue")) else None
    return v, f, colors


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


def write_ply(path: Path, vertices: np.ndarray, faces: np.ndarray) -> None:
    """Binary little-endian triangle PLY (float x, y, z; uchar-counted int indices), written
    beside `path` and renamed into place. numpy only: Blender ships no PLY library."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (f"ply\nformat binary_little_endian 1.0\nelement vertex {len(vertices)}\n"
              "property float x\nproperty float y\nproperty float z\n"
              f"element face {len(faces)}\nproperty list uchar int vertex_indices\nend_header\n")
    rows = np.empty(len(faces), dtype=[("n", "u1"), ("i", "<i4", (3,))])
    rows["n"], rows["i"] = 3, faces
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".ply", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(header.encode("ascii"))
            f.write(np.ascontiguousarray(vertices, dtype="<f4").tobytes())
            f.write(rows.tobytes())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def mesh_object(name: str, vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray | None,
                collection: bpy.types.Collection) -> bpy.types.Object:
    """A mesh object from numpy arrays (vertices [V, 3] world units, triangle faces [F, 3],
    sRGB colours uint8 [V, 3]), built with foreach_set; colours as a point colour attribute
    shown by a material."""
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
    mesh.validate(verbose=False)
    obj = bpy.data.objects.new(name, mesh)
    collection.objects.link(obj)
    return obj


def _vertex_colour_material() -> bpy.types.Material:
    name = "NGP Vertex Colour"
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


# ---------------------------------------------------------------------------------- images
def image_from_array(name: str, pixels: np.ndarray, is_data: bool = False) -> bpy.types.Image:
    """A float Blender image from [H, W] or [H, W, C] values (row 0 at the top), replacing
    an image of that name. Blender stores rows bottom to top, RGBA."""
    arr = np.asarray(pixels, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[..., None]
    h, w, c = arr.shape
    rgba = np.ones((h, w, 4), np.float32)
    rgba[..., :3] = arr[..., :3] if c >= 3 else arr[..., :1]
    if c == 4:
        rgba[..., 3] = arr[..., 3]
    img = bpy.data.images.get(name)
    if img is not None and (tuple(img.size) != (w, h) or not img.is_float):
        bpy.data.images.remove(img)
        img = None
    if img is None:
        img = bpy.data.images.new(name, width=w, height=h, alpha=True, float_buffer=True)
    if is_data:
        img.colorspace_settings.is_data = True
    img.pixels.foreach_set(rgba[::-1].ravel())
    img.update()
    return img
