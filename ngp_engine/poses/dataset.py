"""Writing the output dataset folder, which appears only when complete.

Everything is written into a temporary sibling folder (`.<name>.tmp-*`) and renamed onto
the output at the end (one rename on one file system); a failure or a cancel removes the
temporary folder, and an existing output is replaced only with `overwrite`.

    transforms.json   instant-ngp: camera_model, fl_x, fl_y, cx, cy, distortion, w, h (top
                      level, or per frame for per-image cameras), aabb_scale, scale 0.5,
                      offset 0.5 (world [-1, 1]^3 = the engine's unit cube), applied_transform
                      (the similarity, 4x4), frames with file_path and transform_matrix
                      (NeRF/Blender camera-to-world)
    images/           the registered images at the dataset size
    points.ply        sparse points (normalised world) with colours, no faces
    poses.json        report: images found / registered / rejected with reasons, mean
                      reprojection error, the similarity, options, timings
    sparse/0/         the COLMAP model in COLMAP's own frame (image sizes of the SfM copies)
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..errors import UserError
from ..formats.ply import write_ply
from .colmap_model import Intrinsics

DATASET_SCALE = 0.5                 # unit = world * 0.5 + 0.5: world [-1, 1]^3 -> [0, 1]^3
DATASET_OFFSET = (0.5, 0.5, 0.5)
_CAMERA_KEYS = ("fl_x", "fl_y", "cx", "cy", "k1", "k2", "k3", "k4", "p1", "p2")


def check_output(out: Path, overwrite: bool) -> None:
    """UserError when `out` is a file, or a non-empty folder without `overwrite`."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(f"{out}: folder exists and is not empty (use --overwrite to replace it)")


@contextmanager
def staging_folder(out: Path, overwrite: bool) -> Iterator[Path]:
    """A temporary sibling of `out` to write into; renamed onto `out` when the block ends
    normally, removed when it raises (KeyboardInterrupt and cancel included)."""
    check_output(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)          # mkdtemp makes it private; the dataset is not
    try:
        yield tmp
        check_output(out, overwrite)                     # another writer may have come
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def camera_keys(cam: Intrinsics) -> dict[str, Any]:
    """fl_x, fl_y, cx, cy, the model's distortion keys, w, h."""
    out: dict[str, Any] = {k: float(cam.values[k]) for k in _CAMERA_KEYS if k in cam.values}
    out["w"], out["h"] = int(cam.w), int(cam.h)
    return out


def transforms_doc(frames: list[tuple[str, np.ndarray, Intrinsics]], shared: bool,
                   aabb_scale: int, applied: list[list[float]]) -> dict[str, Any]:
    """The transforms.json of (file_path, c2w [4, 4], intrinsics at the image's size)."""
    model = frames[0][2].model
    doc: dict[str, Any] = {"camera_model": model}
    if shared:
        doc.update(camera_keys(frames[0][2]))
    doc.update({"aabb_scale": int(aabb_scale), "scale": DATASET_SCALE,
                "offset": list(DATASET_OFFSET), "applied_transform": applied,
                "ply_file_path": "points.ply", "frames": []})
    for file_path, c2w, cam in frames:
        frame: dict[str, Any] = {"file_path": file_path,
                                 "transform_matrix": [[float(v) for v in row] for row in c2w]}
        if not shared:
            frame.update(camera_keys(cam))
        doc["frames"].append(frame)
    return doc


def write_json(path: Path, doc: dict[str, Any]) -> None:
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")


def write_points(path: Path, points: np.ndarray, colors: np.ndarray) -> None:
    """Sparse points [M, 3] with uint8 colours [M, 3] as a face-less PLY."""
    write_ply(path, points.astype(np.float32), np.zeros((0, 3), np.int64),
              colors if len(points) else None)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)         # written through mkstemp, which makes it private
