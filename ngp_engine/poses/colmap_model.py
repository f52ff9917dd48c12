"""COLMAP models: reading an existing `sparse/0` (.bin or .txt) and taking any
`pycolmap.Reconstruction` apart into plain arrays (cameras, registered views, points).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import UserError

if TYPE_CHECKING:
    import pycolmap

MODEL_FILES = ("cameras", "images", "points3D")

# COLMAP model -> (transforms.json camera_model, names of its parameters in COLMAP's order).
# "f" is one focal length for both axes; RADIAL is OPENCV with p1 = p2 = 0.
CAMERA_PARAMS = {
    "SIMPLE_PINHOLE": ("PINHOLE", ("f", "cx", "cy")),
    "PINHOLE": ("PINHOLE", ("fl_x", "fl_y", "cx", "cy")),
    "SIMPLE_RADIAL": ("SIMPLE_RADIAL", ("f", "cx", "cy", "k1")),
    "RADIAL": ("OPENCV", ("f", "cx", "cy", "k1", "k2")),
    "OPENCV": ("OPENCV", ("fl_x", "fl_y", "cx", "cy", "k1", "k2", "p1", "p2")),
    "OPENCV_FISHEYE": ("OPENCV_FISHEYE", ("fl_x", "fl_y", "cx", "cy", "k1", "k2", "k3", "k4")),
}


@dataclass(frozen=True)
class Intrinsics:
    """A camera in transforms.json terms: `model` (its camera_model) and `values`
    (fl_x, fl_y, cx, cy and the distortion keys of that model; pixels of a w x h image)."""
    model: str
    w: int
    h: int
    values: dict[str, float]

    def scaled(self, w: int, h: int) -> "Intrinsics":
        """The same lens for the image resized to w x h (distortion is on normalised
        coordinates, so it stays; pixel (i+0.5) centres map linearly)."""
        sx, sy = w / self.w, h / self.h
        v = dict(self.values)
        v["fl_x"], v["cx"] = v["fl_x"] * sx, v["cx"] * sx
        v["fl_y"], v["cy"] = v["fl_y"] * sy, v["cy"] * sy
        return Intrinsics(self.model, w, h, v)


@dataclass(frozen=True)
class View:
    """A registered image: world-to-camera rotation [3, 3], translation [3] (OpenCV)."""
    name: str
    camera_id: int
    rotation: np.ndarray
    translation: np.ndarray


@dataclass(frozen=True)
class Model:
    """A reconstruction as arrays: cameras by id, registered views (by name), points
    [M, 3] float64 and colours [M, 3] uint8, the mean reprojection error in pixels."""
    cameras: dict[int, Intrinsics]
    views: list[View]
    points: np.ndarray
    colors: np.ndarray
    reprojection_error: float
    image_names: list[str]
    """Every image in the model, registered or not."""


def intrinsics(camera: "pycolmap.Camera", where: str) -> Intrinsics:
    """A pycolmap camera as transforms.json intrinsics. UserError for unsupported models."""
    name = camera.model.name
    if name not in CAMERA_PARAMS:
        raise UserError(f"{where}: camera model {name} is not supported "
                        f"(use one of {', '.join(CAMERA_PARAMS)})")
    model, keys = CAMERA_PARAMS[name]
    params = [float(p) for p in camera.params]
    values = dict(zip(keys, params))
    if "f" in values:
        values["fl_x"] = values["fl_y"] = values.pop("f")
    if model in ("SIMPLE_RADIAL", "OPENCV"):          # instant-ngp's keys, all present
        for key in ("k1", "k2", "p1", "p2"):
            values.setdefault(key, 0.0)
    return Intrinsics(model, int(camera.width), int(camera.height), values)


def model_arrays(rec: "pycolmap.Reconstruction", where: str) -> Model:
    """Take a reconstruction apart (registered views sorted by image name)."""
    cameras = {int(cid): intrinsics(cam, where) for cid, cam in rec.cameras.items()}
    views = []
    for image in rec.images.values():
        if not image.has_pose:
            continue
        pose = image.cam_from_world()
        views.append(View(image.name, int(image.camera_id), np.asarray(pose.rotation.matrix(), np.float64),
                          np.asarray(pose.translation, np.float64)))
    views.sort(key=lambda v: v.name)
    pts = list(rec.points3D.values())
    points = np.array([p.xyz for p in pts], np.float64).reshape(-1, 3)
    colors = np.array([p.color for p in pts], np.uint8).reshape(-1, 3)
    error = float(rec.compute_mean_reprojection_error()) if pts else float("nan")
    return Model(cameras, views, points, colors, error,
                 sorted(image.name for image in rec.images.values()))


def find_model_folder(path: Path) -> Path | None:
    """The COLMAP model folder of `path` (itself, `sparse/0` or `sparse` inside it), or
    None when `path` does not look like a COLMAP model or project."""
    for cand in (path, path / "sparse" / "0", path / "sparse"):
        if any((cand / f"{n}{ext}").is_file() for n in MODEL_FILES for ext in (".bin", ".txt")):
            return cand
    return None


def read_model(folder: Path) -> "pycolmap.Reconstruction":
    """Read cameras, images and points3D (.bin, else .txt) from `folder`; a missing file
    is a UserError naming it."""
    from .sfm import import_pycolmap  # noqa: PLC0415

    for name in MODEL_FILES:
        if not any((folder / f"{name}{ext}").is_file() for ext in (".bin", ".txt")):
            raise UserError(f"{folder}: missing {name}.bin (or {name}.txt); a COLMAP model needs "
                            f"{', '.join(MODEL_FILES)}")
    pycolmap = import_pycolmap()
    try:
        return pycolmap.Reconstruction(folder)
    except Exception as e:        # pycolmap raises plain RuntimeError/ValueError on bad files
        raise UserError(f"{folder}: cannot read the COLMAP model ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None


def model_image_folder(model_dir: Path, images: Path | None) -> Path:
    """Where the model's images are: `images` if given, else `images/` beside `sparse/`
    (project/sparse/0 -> project/images) or inside the model folder."""
    if images is not None:
        if not images.is_dir():
            raise UserError(f"{images}: no such image folder")
        return images
    cands = [model_dir / "images"]
    if model_dir.parent.name == "sparse":
        cands.insert(0, model_dir.parent.parent / "images")
    elif model_dir.name == "sparse":
        cands.insert(0, model_dir.parent / "images")
    cands.append(model_dir.parent / "images")
    for c in cands:
        if c.is_dir():
            return c
    raise UserError(f"{model_dir}: no images folder found (looked in "
                    f"{', '.join(str(c) for c in cands)}); pass the images folder")
