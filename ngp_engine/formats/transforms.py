"""transforms.json, read and written: NeRF-synthetic folders (`transforms_{split}.json`) and
instant-ngp files, as `Camera`s, image files and the scene's `UnitCube`. numpy and the
standard library only: the engine reads datasets with it (`data.transforms` decodes the
images with Pillow) and the add-on imports and exports cameras with it inside Blender.

Conventions (the renderer builds its rays on them):
- World = the dataset's own units and axes. Cameras follow NeRF/Blender: the camera looks down
  -Z, +Y is up and +X is right in the image.
- Pixel (i, j) covers [i, i+1) x [j, j+1) from the image's top-left corner, centre (i+0.5, j+0.5);
  cx, cy are in that frame (instant-ngp stores cx / w, which is the same thing).
- The engine's unit cube: u = world * scale + offset, world axis order kept
  (`formats.unit_cube.UnitCube`; the json `scale` is its `world_to_unit`). instant-ngp's
  internal point is this u cycled to (u.y, u.z, u.x) (`nerf_position_to_ngp`: `rv = pos *
  scale + offset; return {rv.y, rv.z, rv.x}`), so its json `offset` is added *before* the
  cycle and is already in world axis order. Its scene box is centred on 0.5 in every axis,
  so the cycle does not change which points are inside.
- Frames keep the json's order (instant-ngp sorts them by file name; the order matters nowhere
  in training, and keeping it lets test-split results be matched to files).
- Lens distortion (`Camera`'s OPENCV and OPENCV_FISHEYE models): `camera_model` (COLMAP,
  instant-ngp and nerfstudio names), `is_fisheye` (instant-ngp) and k1 k2 k3 k4 p1 p2, at the top
  level and per frame. A frame's coefficients win over the top level's, key by key; the
  model comes from the most specific level that names one (camera_model or is_fisheye), else
  OPENCV when any coefficient is non-zero. What `transforms_document` writes reads back equal.
- A frame's `transform_matrix` is kept as written (Blender's matrix_world may carry object
  scale; `Camera.c2w` removes it), so what `write_transforms` writes reads back equal.

Problems are one-line `UserError`s naming the file, the frame and the key.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..schema import ConfigError
from ..errors import UserError
from .atomic import atomic_write
from .camera import Camera
from .lens import FISHEYE, MODEL_ALIASES, OPENCV, PINHOLE, canonical_model
from .unit_cube import UnitCube, check_aabb_scale

DEFAULT_SCALE = 0.33                    # instant-ngp's NERF_SCALE
DEFAULT_OFFSET = (0.5, 0.5, 0.5)
IMAGE_SUFFIXES = ("", ".png", ".jpg", ".jpeg", ".PNG", ".JPG")   # "" = the name as given
DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")
INTRINSIC_KEYS = ("camera_angle_x", "camera_angle_y", "fl_x", "fl_y", "cx", "cy", "w", "h",
                  "camera_model", *DISTORTION_KEYS, "is_fisheye")
# Written by colmap2nerf, nerfstudio and Blender exporters; nothing we read depends on them.
IGNORED_TOP_KEYS = ("sharpness", "applied_transform", "ply_file_path",
                    "n_extra_learnable_dims", "enable_depth_loading", "integer_depth_scale")
TOP_KEYS = (*INTRINSIC_KEYS, "aabb_scale", "scale", "offset", "frames", *IGNORED_TOP_KEYS)
FRAME_KEYS = ("file_path", "transform_matrix", *INTRINSIC_KEYS,
              "rotation", "sharpness", "colmap_im_id", "depth_path")
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_-]+$")

ImageSize = Callable[[Path], tuple[int, int]]
"""(width, height) of an image file from its header; raises OSError or ValueError when the
file is not a readable image (the reader reports that as a UserError naming the frame)."""


@dataclass(frozen=True)
class Frame:
    """One frame of a transforms file."""
    camera: Camera
    """Intrinsics resolved (frame, then top level), size of its image, world units."""
    image: Path
    """The resolved image file, inside the dataset folder."""
    file_path: str
    """The frame's `file_path` as written."""
    where: str
    """`<json>: frame <i> ('<file_path>')`, to start messages about this frame with."""
    index: int = 0
    """i: the frame's place in the json's `frames` list (frames skipped before it count)."""


@dataclass(frozen=True)
class Transforms:
    """One split of a dataset as its transforms file describes it."""
    source: Path
    """The json file read (resolved)."""
    transform: UnitCube
    frames: tuple[Frame, ...]
    skipped: tuple[str, ...] = ()
    """`file_path`s of the frames left out (with `skip_missing`) because their image file
    is missing, in json order."""
    n_listed: int = 0
    """How many frames the json lists (read + skipped)."""


# ----------------------------------------------------------------------------- finding

def dataset_splits(path: str | os.PathLike) -> list[str]:
    """Splits that `read_transforms(path, split)` can read: train, val, test first."""
    path = Path(path)
    if path.is_file():
        return ["train"]                  # a json file is read whatever split is asked
    if not path.is_dir():
        raise UserError(f"{path}: no such file or folder")
    found = {p.name[len("transforms_"):-len(".json")] for p in path.glob("transforms_*.json")}
    found = {s for s in found if _SPLIT_NAME.match(s)}
    if (path / "transforms.json").is_file():
        found.add("train")
    order = {"train": 0, "val": 1, "test": 2}
    return sorted(found, key=lambda s: (order.get(s, 3), s))


def find_transforms(path: Path, split: str) -> Path:
    """The json of `split` in a dataset folder (`transforms_{split}.json`, or for train
    `transforms.json`), or `path` itself when it is a file; resolved."""
    if not path.exists():
        raise UserError(f"{path}: no such file or folder")
    if path.is_file():
        return path.resolve()
    if not _SPLIT_NAME.match(split):
        raise UserError(f"split {split!r}: use letters, digits, '_' or '-' only")
    looked = [f"transforms_{split}.json"] + (["transforms.json"] if split == "train" else [])
    for name in looked:
        if (path / name).is_file():
            return (path / name).resolve()
    note = " (transforms.json holds training frames only)" if (path / "transforms.json").is_file() else ""
    raise UserError(f"{path}: no '{split}' split: looked for {' and '.join(looked)}{note}")


# ----------------------------------------------------------------------------- reading

def read_transforms(path: str | os.PathLike, split: str = "train", *, image_size: ImageSize,
                    check_sizes: bool = False, images_required: bool = True,
                    skip_missing: bool = False) -> Transforms:
    """Read one split of a NeRF-synthetic folder or an instant-ngp transforms.json.

    A frame's image size comes from its w, h (frame, then top level); `image_size` is asked
    for the images of frames without them, and for every image when `check_sizes` is set
    (then a w, h that disagrees with the image is an error). Without `images_required`
    (importing cameras only), a frame that gives its w, h needs no image file: its `image`
    is then the path as written, unchecked. With `skip_missing`, frames whose image file is
    missing are left out and listed in `skipped` (instant-ngp's fox lists 17 such frames); if
    none remain it is an error naming the file."""
    src = find_transforms(Path(path), split)
    doc = _read_json(src)
    where = str(src)
    _check_keys(doc, TOP_KEYS, where)
    top = _intrinsics(doc, where)
    scale = _number(doc, "scale", where, DEFAULT_SCALE)
    if scale <= 0:
        raise UserError(f"{where}: 'scale' must be > 0, got {scale:g}")
    aabb_scale = _number(doc, "aabb_scale", where, 1.0)
    check_aabb_scale(aabb_scale, where)
    transform = UnitCube(scale, _offset(doc, where), aabb_scale)
    frames = doc.get("frames")
    if not isinstance(frames, list):
        raise UserError(f"{where}: 'frames' must be a list of frames")
    if not frames:
        raise UserError(f"{where}: 'frames' is empty, there are no images to read")
    root = src.parent.resolve()
    read, skipped = [], []
    for i, frame in enumerate(frames):
        try:
            read.append(_frame(frame, top, root, f"{where}: frame {i}", image_size, check_sizes,
                               images_required, i))
        except _MissingImage as e:
            if not skip_missing:
                raise UserError(str(e)) from None
            skipped.append(e.file_path)
    if not read:
        raise UserError(f"{where}: none of its {len(frames)} frames has its image file "
                        f"(first missing: {skipped[0]})")
    return Transforms(src, transform, tuple(read), tuple(skipped), len(frames))


class _MissingImage(UserError):
    """A frame's image file does not exist (the reader may skip such frames)."""

    def __init__(self, message: str, file_path: str) -> None:
        super().__init__(message)
        self.file_path = file_path


def _frame(frame: Any, top: dict[str, float], root: Path, label: str, image_size: ImageSize,
           check_sizes: bool, images_required: bool, index: int) -> Frame:
    if not isinstance(frame, dict):
        raise UserError(f"{label}: expected an object, got {type(frame).__name__}")
    fp = frame.get("file_path")
    if isinstance(fp, str):
        label = f"{label} ('{fp}')"
    _check_keys(frame, FRAME_KEYS, label)
    if not isinstance(fp, str) or not fp.strip():
        raise UserError(f"{label}: 'file_path' must be a non-empty string")
    if "transform_matrix" not in frame:
        raise UserError(f"{label}: missing 'transform_matrix'")
    matrix = _camera_matrix(frame["transform_matrix"], label)
    own = _intrinsics(frame, label)
    sized = all(own.get(k, top.get(k)) is not None for k in ("w", "h"))
    if not images_required and sized:
        file = root / fp.replace("\\", "/")
    else:
        file = _resolve_image(root, fp, label)
    w, h = _size(own, top, file, label, image_size, check_sizes)
    fx = _focal(own, top, "x", w)
    fy = _focal(own, top, "y", h)
    if fx is None and fy is None:
        raise UserError(f"{label}: no focal length (give fl_x/fl_y or "
                        "camera_angle_x/camera_angle_y, top level or per frame)")
    fx = fy if fx is None else fx                       # square pixels when only one is known
    fy = fx if fy is None else fy
    try:
        camera = Camera(matrix, w, h, fx, fy, own.get("cx", top.get("cx", w / 2)),
                        own.get("cy", top.get("cy", h / 2)), **_lens(own, top, label))
    except ConfigError as e:                            # e.g. an image over Camera's size limit
        raise UserError(f"{label}: {e}") from None
    return Frame(camera, file, fp, label, index)


def _size(own: dict[str, float], top: dict[str, float], file: Path, label: str,
          image_size: ImageSize, check_sizes: bool) -> tuple[int, int]:
    """(w, h) of the frame: as given, else (or, with check_sizes, also) from the image."""
    given = (own.get("w", top.get("w")), own.get("h", top.get("h")))
    if not check_sizes and None not in given:
        return int(given[0]), int(given[1])
    try:
        w, h = image_size(file)
    except (OSError, ValueError) as e:
        raise UserError(f"{label}: cannot read image {file} ({e})") from None
    if given[0] is not None and given[0] != w or given[1] is not None and given[1] != h:
        raise UserError(f"{label}: image {file.name} is {w}x{h} but w, h say "
                        f"{given[0] or w:g}x{given[1] or h:g}")
    return int(w), int(h)


def _read_json(src: Path) -> dict:
    try:
        doc = json.loads(src.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{src}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except UnicodeDecodeError:
        raise UserError(f"{src}: not valid JSON (not UTF-8 text)") from None
    except OSError as e:
        raise UserError(f"{src}: cannot read ({e.strerror or e})") from None
    if not isinstance(doc, dict):
        raise UserError(f"{src}: expected a JSON object at the top level, got {type(doc).__name__}")
    return doc


def _check_keys(d: dict, allowed: tuple[str, ...], where: str) -> None:
    for key in d:
        if key not in allowed:
            raise UserError(f"{where}: unknown key '{key}' (allowed: {', '.join(allowed)})")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _number(d: dict, key: str, where: str, default: float | None = None) -> float | None:
    if key not in d:
        return default
    v = d[key]
    if not _is_number(v) or not math.isfinite(v):
        raise UserError(f"{where}: '{key}' must be a finite number, got {v!r}")
    return float(v)


def _offset(d: dict, where: str) -> tuple[float, float, float]:
    # instant-ngp adds the json offset before cycling axes (see the module docstring), so it is taken
    # as is, in world axis order. A single number means the same offset on every axis.
    v = d.get("offset", DEFAULT_OFFSET)
    if _is_number(v):
        v = [v, v, v]
    if not (isinstance(v, (list, tuple)) and len(v) == 3
            and all(_is_number(x) and math.isfinite(x) for x in v)):
        raise UserError(f"{where}: 'offset' must be a list of 3 finite numbers, got {v!r}")
    return (float(v[0]), float(v[1]), float(v[2]))


def _intrinsics(d: dict, where: str) -> dict[str, float]:
    """The intrinsics present in one object (top level or frame), checked."""
    out = {}
    for key in ("fl_x", "fl_y", "camera_angle_x", "camera_angle_y", "w", "h"):
        v = _number(d, key, where)
        if v is not None and v <= 0:
            raise UserError(f"{where}: '{key}' must be > 0, got {v:g}")
        if v is not None and key in ("w", "h") and v != int(v):
            raise UserError(f"{where}: '{key}' must be a whole number of pixels, got {v:g}")
        if v is not None and key.startswith("camera_angle") and v >= math.pi:
            raise UserError(f"{where}: '{key}' is in radians and must be < pi, got {v:g}")
        if v is not None:
            out[key] = v
    for key in ("cx", "cy"):
        if key in d:
            out[key] = _number(d, key, where)
    for key in DISTORTION_KEYS:
        if key in d:
            out[key] = _number(d, key, where)
    if "is_fisheye" in d:
        if not isinstance(d["is_fisheye"], bool) and d["is_fisheye"] not in (0, 1):
            raise UserError(f"{where}: 'is_fisheye' must be true or false, got {d['is_fisheye']!r}")
        out["is_fisheye"] = bool(d["is_fisheye"])
    if "camera_model" in d:
        model = canonical_model(d["camera_model"])
        if model is None:
            raise UserError(f"{where}: camera_model {d['camera_model']!r} is not supported "
                            f"(supported: {', '.join(MODEL_ALIASES)})")
        if out.get("is_fisheye", model == FISHEYE) != (model == FISHEYE):
            raise UserError(f"{where}: camera_model {d['camera_model']!r} contradicts "
                            f"'is_fisheye' = {str(out['is_fisheye']).lower()}")
        out["camera_model"] = model
    return out


def _lens(own: dict[str, Any], top: dict[str, Any], label: str) -> dict[str, Any]:
    """camera_model and coefficients of a frame: coefficients key by key (frame wins), the
    model from the most specific level naming one, else OPENCV when any coefficient is set."""
    coeffs = {k: own.get(k, top.get(k, 0.0)) for k in DISTORTION_KEYS}
    level = next((d for d in (own, top) if "camera_model" in d or "is_fisheye" in d), {})
    model = level.get("camera_model", FISHEYE if level.get("is_fisheye") else None)
    if model is None:
        model = OPENCV if any(coeffs.values()) else PINHOLE
    if model == PINHOLE:
        given = next((k for k, v in coeffs.items() if v), None)
        if given is not None:
            raise UserError(f"{label}: '{given}' = {coeffs[given]:g} is a distortion coefficient "
                            "but camera_model is a pinhole (use OPENCV)")
    elif model == OPENCV and coeffs["k4"]:
        raise UserError(f"{label}: 'k4' = {coeffs['k4']:g} is a fisheye coefficient (OPENCV "
                        "has k1 k2 k3 p1 p2; use OPENCV_FISHEYE)")
    return {"camera_model": model, **coeffs}


def _focal(own: dict, top: dict, axis: str, size: int) -> float | None:
    # The frame's own value wins over the top level; within one object fl_* wins over
    # camera_angle_* (instant-ngp's order).
    for d in (own, top):
        if f"fl_{axis}" in d:
            return d[f"fl_{axis}"]
        if f"camera_angle_{axis}" in d:
            return 0.5 * size / math.tan(0.5 * d[f"camera_angle_{axis}"])
    return None


def _camera_matrix(v: Any, where: str) -> list[list[float]]:
    """The frame's 4x4 camera-to-world as written (floats), once checked to be one."""
    if not (isinstance(v, list) and len(v) == 4 and all(
            isinstance(r, list) and len(r) == 4 and all(map(_is_number, r)) for r in v)):
        raise UserError(f"{where}: 'transform_matrix' must be a 4x4 list of numbers")
    m = np.array(v, np.float64)
    if not np.isfinite(m).all():
        raise UserError(f"{where}: 'transform_matrix' has a non-finite value (NaN or inf)")
    if np.abs(m[3] - (0, 0, 0, 1)).max() > 1e-4:
        raise UserError(f"{where}: 'transform_matrix' last row must be [0, 0, 0, 1], got {m[3].tolist()}")
    norms = np.linalg.norm(m[:3, :3], axis=0)
    # Blender's matrix_world carries object scale; the camera only needs its orientation.
    rot = m[:3, :3] / np.maximum(norms, 1e-300)
    if norms.min() < 1e-12 or abs(np.linalg.det(rot)) < 1e-6:
        raise UserError(f"{where}: 'transform_matrix' rotation is not invertible")
    return m.tolist()


def _resolve_image(root: Path, file_path: str, where: str) -> Path:
    base = root / file_path.replace("\\", "/")          # Windows-written files, as instant-ngp
    if not base.resolve().is_relative_to(root):
        raise UserError(f"{where}: image path escapes the dataset folder {root}")
    for suffix in IMAGE_SUFFIXES:
        cand = Path(str(base) + suffix)
        if cand.is_file():
            resolved = cand.resolve()
            if not resolved.is_relative_to(root):      # e.g. a symlink pointing elsewhere
                raise UserError(f"{where}: image {cand} resolves to {resolved}, outside the "
                                f"dataset folder {root}")
            return resolved
    tried = ", ".join(repr(base.name + s) for s in IMAGE_SUFFIXES)
    raise _MissingImage(f"{where}: image not found (tried {tried} in {base.parent})", file_path)


# ----------------------------------------------------------------------------- writing

_SHARED = ("fl_x", "fl_y", "cx", "cy", "w", "h")
_LENS = ("camera_model", "is_fisheye", *DISTORTION_KEYS)
_PINHOLE_LENS = {"camera_model": PINHOLE, "is_fisheye": False, **{k: 0.0 for k in DISTORTION_KEYS}}


def transforms_document(frames: list[tuple[Camera, str]], transform: UnitCube) -> dict[str, Any]:
    """The instant-ngp transforms.json of (camera, image path relative to the json) pairs:
    the first camera's intrinsics (and camera_angle_x/y) at the top level, so NeRF-synthetic
    readers work too, with its camera_model, is_fisheye and distortion coefficients when it
    is distorted; a frame repeats an intrinsic or lens key only where its own differs;
    `scale`, `offset`, `aabb_scale` from `transform`."""
    if not frames:
        raise UserError("no cameras to export")
    first = _intrinsic_values(frames[0][0])
    top_lens = _lens_values(frames[0][0])
    doc: dict[str, Any] = {
        "camera_angle_x": 2.0 * math.atan(0.5 * first["w"] / first["fl_x"]),
        "camera_angle_y": 2.0 * math.atan(0.5 * first["h"] / first["fl_y"]),
        **first,
        **(top_lens if frames[0][0].distorted else {}),
        "aabb_scale": int(transform.aabb_scale),        # a power of two, 1..128
        "scale": transform.world_to_unit,
        "offset": list(transform.offset),
        "frames": [],
    }
    # What a frame without its own key reads back (top level, or a pinhole's defaults).
    inherited = {**first, **(top_lens if frames[0][0].distorted else _PINHOLE_LENS)}
    for camera, file_path in frames:
        own = {**_intrinsic_values(camera), **_lens_values(camera)}
        frame: dict[str, Any] = {"file_path": file_path,
                                 "transform_matrix": [[float(v) for v in row]
                                                      for row in camera.transform_matrix]}
        # Exact comparison: a value left out is read back as the first camera's, bit for bit.
        frame.update({k: own[k] for k in (*_SHARED, *_LENS) if own[k] != inherited[k]})
        doc["frames"].append(frame)
    return doc


def _intrinsic_values(camera: Camera) -> dict[str, Any]:
    fx, fy, cx, cy = camera.intrinsics
    return {"fl_x": fx, "fl_y": fy, "cx": cx, "cy": cy, "w": camera.w, "h": camera.h}


def _lens_values(camera: Camera) -> dict[str, Any]:
    """camera_model, is_fisheye (for instant-ngp) and every coefficient of a camera."""
    return {"camera_model": camera.camera_model, "is_fisheye": camera.fisheye,
            **{k: getattr(camera, k) for k in DISTORTION_KEYS}}


def write_transforms(path: str | os.PathLike, doc: dict[str, Any]) -> None:
    """Write `doc` as JSON beside `path` and rename it into place (never a half-written
    file); creates the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(doc, indent=2) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
