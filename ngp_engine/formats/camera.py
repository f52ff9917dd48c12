"""The pinhole camera: intrinsics plus camera-to-world, in a dataset's world units.

One type for every place a camera appears: a frame of a transforms.json, a `preview`
request of the service protocol (its JSON form *is* a frame's keys), the training views of
a NeRF dataset, the renderers, the evaluation, the hidden-space test and the add-on.

Convention (NeRF = Blender): the camera looks down -Z with +Y up and +X right in the image.
Pixel (column i, row j) covers [i, i+1) x [j, j+1) from the image's top-left corner; its
centre is (i + 0.5, j + 0.5). The ray through image point (u, v) has camera-space direction
((u - cx) / fx, -(v - cy) / fy, -1), and `project` inverts `rays` exactly.

Fields are plain JSON values (the protocol parses them strictly with `schema.from_dict`);
numpy is imported only by the methods that compute with arrays, so the service protocol can
use this class without importing numpy.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..schema import ConfigError, check

if TYPE_CHECKING:
    from pathlib import Path

    import numpy as np

MAX_SIZE = 16384


@dataclass(frozen=True)
class Camera:
    """A pinhole camera: `transform_matrix` 4x4 camera-to-world (rows; the world may carry
    object scale, which `c2w` removes), image `w` x `h` pixels, focal lengths and principal
    point in pixels (fl_y defaults to fl_x, cx/cy to the image centre)."""

    transform_matrix: list[list[float]]
    w: int
    h: int
    fl_x: float
    fl_y: float | None = None
    cx: float | None = None
    cy: float | None = None

    def __post_init__(self) -> None:
        m = self.transform_matrix
        if not (isinstance(m, (list, tuple)) and len(m) == 4
                and all(isinstance(r, (list, tuple)) and len(r) == 4 for r in m)):
            rows = len(m) if isinstance(m, (list, tuple)) else 0
            lens = sorted({len(r) for r in m if isinstance(r, (list, tuple))}) if rows else []
            raise ConfigError(f"transform_matrix: must be a 4x4 list of numbers, got "
                              f"{rows} rows of {lens} numbers")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                   for r in m for v in r):
            raise ConfigError("transform_matrix: must be a finite 4x4 matrix")
        check(1 <= self.w <= MAX_SIZE, "w", self.w, f"must be in 1..{MAX_SIZE}")
        check(1 <= self.h <= MAX_SIZE, "h", self.h, f"must be in 1..{MAX_SIZE}")
        for name in ("fl_x", "fl_y"):
            v = getattr(self, name)
            check(v is None or v > 0, name, v, "must be positive")

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_arrays(cls, c2w: "np.ndarray", fx: float, fy: float, cx: float, cy: float,
                    width: int, height: int) -> "Camera":
        """From a [4, 4] camera-to-world array and pixel intrinsics."""
        return cls([[float(v) for v in row] for row in c2w], int(width), int(height), float(fx),
                   float(fy), float(cx), float(cy))

    def to_dict(self) -> dict[str, Any]:
        """The camera as transforms.json frame keys (every intrinsic spelled out)."""
        return {"transform_matrix": [list(map(float, r)) for r in self.transform_matrix],
                "w": self.w, "h": self.h, "fl_x": self.fx, "fl_y": self.fy, "cx": self.cx,
                "cy": self.cy}

    # ------------------------------------------------------------------ resolved values
    @property
    def fx(self) -> float:
        return float(self.fl_x)

    @property
    def fy(self) -> float:
        return float(self.fl_y if self.fl_y is not None else self.fl_x)

    @property
    def principal_point(self) -> tuple[float, float]:
        """(cx, cy) in pixels from the top-left corner (default: the image centre)."""
        return (float(self.cx if self.cx is not None else 0.5 * self.w),
                float(self.cy if self.cy is not None else 0.5 * self.h))

    @property
    def c2w(self) -> "np.ndarray":
        """[4, 4] float64 camera-to-world with unit rotation columns (object scale removed)."""
        import numpy as np  # noqa: PLC0415

        m = np.array(self.transform_matrix, dtype=np.float64)
        m[:3, :3] /= np.maximum(np.linalg.norm(m[:3, :3], axis=0, keepdims=True), 1e-300)
        m[3] = (0.0, 0.0, 0.0, 1.0)
        return m

    @property
    def intrinsics(self) -> tuple[float, float, float, float]:
        """(fx, fy, cx, cy) in pixels."""
        return (self.fx, self.fy, *self.principal_point)

    def resized(self, width: int, height: int) -> "Camera":
        """The same view rendered at width x height: focal lengths and principal point scale."""
        sx, sy = width / self.w, height / self.h
        cx, cy = self.principal_point
        return Camera(self.transform_matrix, int(width), int(height), self.fx * sx, self.fy * sy,
                      cx * sx, cy * sy)

    def fitted(self, long_side: int) -> "Camera":
        """Resized so that the longer side has `long_side` pixels (aspect kept)."""
        s = long_side / max(self.w, self.h)
        return self.resized(max(1, round(self.w * s)), max(1, round(self.h * s)))

    # ------------------------------------------------------------------ geometry
    def rays(self, u: "np.ndarray | None" = None, v: "np.ndarray | None" = None
             ) -> tuple["np.ndarray", "np.ndarray"]:
        """Rays through image points u [N], v [N] (pixels, u right, v down; default: every
        pixel centre, row-major). Returns origins [N, 3] and unit directions [N, 3], float64
        world."""
        import numpy as np  # noqa: PLC0415

        if u is None or v is None:
            vs, us = np.meshgrid(np.arange(self.h) + 0.5, np.arange(self.w) + 0.5, indexing="ij")
            u, v = us.ravel(), vs.ravel()
        fx, fy, cx, cy = self.intrinsics
        u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
        d_cam = np.stack([(u - cx) / fx, -(v - cy) / fy, -np.ones_like(u)], axis=-1)
        c2w = self.c2w
        d = d_cam @ c2w[:3, :3].T
        d /= np.linalg.norm(d, axis=-1, keepdims=True)
        return np.broadcast_to(c2w[:3, 3], d.shape).copy(), d

    def world_to_camera(self, points: "np.ndarray") -> "np.ndarray":
        """[P, 3] world points -> [P, 3] camera-space points (the camera looks down -Z)."""
        import numpy as np  # noqa: PLC0415

        c2w = self.c2w
        p = np.asarray(points, np.float64).reshape(-1, 3)
        return (p - c2w[:3, 3]) @ c2w[:3, :3]          # R^T (p - t), R orthonormal

    def project(self, points: "np.ndarray") -> "np.ndarray":
        """[P, 3] world points -> [P, 2] pixel coordinates (u right, v down). Points on or
        behind the camera plane have no image and come back as NaN."""
        import numpy as np  # noqa: PLC0415

        xc = self.world_to_camera(points)
        depth = -xc[:, 2]                              # distance along the view axis (-Z)
        fx, fy, cx, cy = self.intrinsics
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = np.stack([cx + fx * xc[:, 0] / depth, cy - fy * xc[:, 1] / depth], axis=-1)
        uv[depth <= 0] = np.nan
        return uv


def stack_cameras(cameras: "list[Camera]") -> tuple["np.ndarray", "np.ndarray"]:
    """c2w [N, 4, 4] float64 and intrinsics [N, 4] (fx, fy, cx, cy) float64 of N cameras."""
    import numpy as np  # noqa: PLC0415

    if not cameras:
        return np.zeros((0, 4, 4)), np.zeros((0, 4))
    return (np.stack([c.c2w for c in cameras]),
            np.array([c.intrinsics for c in cameras], dtype=np.float64))


CAMERA_FILE_KEYS = ("transform_matrix", "w", "h", "fl_x", "fl_y", "cx", "cy", "camera_angle_x")


def camera_from_dict(cam: Any, where: str) -> Camera:
    """A camera from a transforms.json-style object: transform_matrix, w, h, and fl_x [fl_y,
    cx, cy] or camera_angle_x. Problems are one-line UserErrors starting with `where`."""
    from ..errors import UserError  # noqa: PLC0415

    if not isinstance(cam, dict):
        raise UserError(f"{where}: expected a JSON object")
    unknown = sorted(set(cam) - set(CAMERA_FILE_KEYS))
    if unknown:
        raise UserError(f"{where}: unknown key '{unknown[0]}' (known: {', '.join(sorted(CAMERA_FILE_KEYS))})")
    for key in ("transform_matrix", "w", "h"):
        if key not in cam:
            raise UserError(f"{where}: missing key '{key}'")
    w, h = cam["w"], cam["h"]
    if not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_SIZE for v in (w, h)):
        raise UserError(f"{where}: w and h must be whole numbers of pixels in 1..{MAX_SIZE}")

    def num(key: str) -> float | None:
        v = cam.get(key)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise UserError(f"{where}: {key} must be a positive number, got {v!r}")
        return float(v)

    fx = num("fl_x")
    if fx is None:
        angle = num("camera_angle_x")
        if angle is None:
            raise UserError(f"{where}: give fl_x or camera_angle_x")
        if angle >= math.pi:
            raise UserError(f"{where}: camera_angle_x must be below pi, got {angle}")
        fx = 0.5 * w / math.tan(0.5 * angle)
    try:
        return Camera(cam["transform_matrix"], w, h, fx, num("fl_y"), num("cx"), num("cy"))
    except ConfigError as e:
        raise UserError(f"{where}: {e}") from None


def read_camera_file(path: "Path") -> Camera:
    """One camera from a JSON file (see `camera_from_dict`)."""
    import json  # noqa: PLC0415

    from ..errors import UserError  # noqa: PLC0415

    if not path.is_file():
        raise UserError(f"{path}: no such camera file")
    try:
        cam = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None
    return camera_from_dict(cam, str(path))
