"""The camera: intrinsics, lens distortion and camera-to-world, in a dataset's world units.

One type for every place a camera appears: a frame of a transforms.json, a `preview`
request of the service protocol (its JSON form *is* a frame's keys), the training views of
a NeRF dataset, the renderers, the evaluation, the hidden-space test and the add-on.

Convention (NeRF = Blender): the camera looks down -Z with +Y up and +X right in the image.
Pixel (column i, row j) covers [i, i+1) x [j, j+1) from the image's top-left corner; its
centre is (i + 0.5, j + 0.5). The ray through image point (u, v) has camera-space direction
((u - cx) / fx, -(v - cy) / fy, -1), and `project` inverts `rays` exactly.

Lens distortion (the model, its inversion and its checks) lives in `lens.py`; `Camera`
inherits it. Fields are plain JSON values (the protocol parses them strictly with `schema.from_dict`);
numpy is imported only by the methods that compute with arrays, so the service protocol can
use this class without importing numpy.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..schema import ConfigError, check
from .lens import DISTORTION_FIELDS, MODEL_ALIASES, OPENCV, PINHOLE, LensModel, canonical_model

if TYPE_CHECKING:
    from pathlib import Path

    import numpy as np

MAX_SIZE = 16384

@dataclass(frozen=True)
class Camera(LensModel):
    """A camera: `transform_matrix` 4x4 camera-to-world (rows; the world may carry object
    scale, which `c2w` removes), image `w` x `h` pixels, focal lengths and principal point
    in pixels (fl_y defaults to fl_x, cx/cy to the image centre), and an optional lens model
    (`camera_model` PINHOLE, OPENCV with k1 k2 k3 p1 p2, or OPENCV_FISHEYE with k1..k4; see
    the module docstring). COLMAP names are accepted and stored as the model computing them;
    an OPENCV camera whose coefficients are all zero is stored as PINHOLE."""

    transform_matrix: list[list[float]]
    w: int
    h: int
    fl_x: float
    fl_y: float | None = None
    cx: float | None = None
    cy: float | None = None
    camera_model: str = PINHOLE
    k1: float = 0.0
    k2: float = 0.0
    k3: float = 0.0
    k4: float = 0.0
    p1: float = 0.0
    p2: float = 0.0

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
        self._check_lens()

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_arrays(cls, c2w: "np.ndarray", fx: float, fy: float, cx: float, cy: float,
                    width: int, height: int, **lens: Any) -> "Camera":
        """From a [4, 4] camera-to-world array and pixel intrinsics (`lens`: camera_model
        and distortion coefficients)."""
        return cls([[float(v) for v in row] for row in c2w], int(width), int(height), float(fx),
                   float(fy), float(cx), float(cy), **lens)

    def to_dict(self) -> dict[str, Any]:
        """The camera as transforms.json frame keys (every intrinsic spelled out; the lens
        model and its coefficients only when the camera is distorted)."""
        return {"transform_matrix": [list(map(float, r)) for r in self.transform_matrix],
                "w": self.w, "h": self.h, "fl_x": self.fx, "fl_y": self.fy, "cx": self.cx,
                "cy": self.cy, **self.lens()}
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
        """The same view rendered at width x height: focal lengths and principal point scale;
        the distortion coefficients act on normalised coordinates and stay."""
        sx, sy = width / self.w, height / self.h
        cx, cy = self.principal_point
        return Camera(self.transform_matrix, int(width), int(height), self.fx * sx, self.fy * sy,
                      cx * sx, cy * sy, **self.lens())

    def fitted(self, long_side: int) -> "Camera":
        """Resized so that the longer side has `long_side` pixels (aspect kept)."""
        s = long_side / max(self.w, self.h)
        return self.resized(max(1, round(self.w * s)), max(1, round(self.h * s)))

    # ------------------------------------------------------------------ geometry
    def rays(self, u: "np.ndarray | None" = None, v: "np.ndarray | None" = None
             ) -> tuple["np.ndarray", "np.ndarray"]:
        """Rays through image points u [N], v [N] (pixels, u right, v down; default: every
        pixel centre, row-major), through the lens model. Returns origins [N, 3] and unit
        directions [N, 3], float64 world."""
        import numpy as np  # noqa: PLC0415

        u, v = self._points(u, v)
        c2w = self.c2w
        if self.distorted:
            d = self.camera_directions(u, v) @ c2w[:3, :3].T
        else:                        # the pinhole's own arithmetic, kept bit for bit
            fx, fy, cx, cy = self.intrinsics
            d_cam = np.stack([(u - cx) / fx, -(v - cy) / fy, -np.ones_like(u)], axis=-1)
            d = d_cam @ c2w[:3, :3].T
        d /= np.linalg.norm(d, axis=-1, keepdims=True)
        return np.broadcast_to(c2w[:3, 3], d.shape).copy(), d

    def camera_directions(self, u: "np.ndarray | None" = None, v: "np.ndarray | None" = None
                          ) -> "np.ndarray":
        """Camera-space unit directions [N, 3] float64 (NeRF convention: -Z forward, +Y up)
        of the rays through image points u [N], v [N] (default: every pixel centre,
        row-major), the lens distortion inverted by Newton iterations. UserError when the
        inversion does not converge at some point (a lens that folds the image there)."""
        import numpy as np  # noqa: PLC0415

        u, v = self._points(u, v)
        fx, fy, cx, cy = self.intrinsics
        xd, yd = (u - cx) / fx, (v - cy) / fy             # OpenCV normalised, y down
        if self.fisheye:
            d = self._fisheye_directions(xd, yd)
        else:
            x, y = (xd, yd) if not self.distorted else self._undistort(xd, yd)
            d = np.stack([x, -y, -np.ones_like(x)], axis=-1)
        return d / np.linalg.norm(d, axis=-1, keepdims=True)

    def _points(self, u: "np.ndarray | None", v: "np.ndarray | None"
                ) -> tuple["np.ndarray", "np.ndarray"]:
        """u, v [N] float64: as given, or every pixel centre row-major."""
        import numpy as np  # noqa: PLC0415

        if u is None or v is None:
            vs, us = np.meshgrid(np.arange(self.h) + 0.5, np.arange(self.w) + 0.5, indexing="ij")
            u, v = us.ravel(), vs.ravel()
        return (np.asarray(u, np.float64).reshape(-1), np.asarray(v, np.float64).reshape(-1))

    def world_to_camera(self, points: "np.ndarray") -> "np.ndarray":
        """[P, 3] world points -> [P, 3] camera-space points (the camera looks down -Z)."""
        import numpy as np  # noqa: PLC0415

        c2w = self.c2w
        p = np.asarray(points, np.float64).reshape(-1, 3)
        return (p - c2w[:3, 3]) @ c2w[:3, :3]          # R^T (p - t), R orthonormal

    def project(self, points: "np.ndarray") -> "np.ndarray":
        """[P, 3] world points -> [P, 2] pixel coordinates (u right, v down), through the
        lens model. Points without an image come back as NaN: on or behind the camera plane
        (a fisheye sees up to 180 degrees off its axis), or beyond the radius where the
        lens's radial map folds."""
        import numpy as np  # noqa: PLC0415

        xc = self.world_to_camera(points)
        depth = -xc[:, 2]                              # distance along the view axis (-Z)
        fx, fy, cx, cy = self.intrinsics
        if self.fisheye:
            return self._project_fisheye(xc)
        with np.errstate(divide="ignore", invalid="ignore"):
            if not self.distorted:
                uv = np.stack([cx + fx * xc[:, 0] / depth, cy - fy * xc[:, 1] / depth], axis=-1)
                uv[depth <= 0] = np.nan
                return uv
            x, y = xc[:, 0] / depth, -xc[:, 1] / depth           # OpenCV: y down
            xd, yd = self._distort(x, y)
            uv = np.stack([cx + fx * xd, cy + fy * yd], axis=-1)
        r = np.hypot(x, y)
        finite = r[np.isfinite(r) & (depth > 0)]
        r_fold = self._fold_radius(float(finite.max(initial=0.0)) + 1e-12)
        uv[(depth <= 0) | ~(r <= r_fold)] = np.nan
        return uv

def stack_cameras(cameras: "list[Camera]") -> tuple["np.ndarray", "np.ndarray"]:
    """c2w [N, 4, 4] float64 and intrinsics [N, 4] (fx, fy, cx, cy) float64 of N cameras."""
    import numpy as np  # noqa: PLC0415

    if not cameras:
        return np.zeros((0, 4, 4)), np.zeros((0, 4))
    return (np.stack([c.c2w for c in cameras]),
            np.array([c.intrinsics for c in cameras], dtype=np.float64))


CAMERA_FILE_KEYS = ("transform_matrix", "w", "h", "fl_x", "fl_y", "cx", "cy", "camera_angle_x",
                    "camera_model", *DISTORTION_FIELDS)


def camera_from_dict(cam: Any, where: str) -> Camera:
    """A camera from a transforms.json-style object: transform_matrix, w, h, and fl_x [fl_y,
    cx, cy] or camera_angle_x [camera_model, k1 k2 k3 k4 p1 p2]. Problems are one-line
    UserErrors starting with `where`."""
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
    lens: dict[str, Any] = {}
    for key in DISTORTION_FIELDS:
        v = cam.get(key, 0.0)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise UserError(f"{where}: {key} must be a finite number, got {v!r}")
        lens[key] = float(v)
    if "camera_model" in cam:
        model = canonical_model(cam["camera_model"])
        if model is None:
            raise UserError(f"{where}: camera_model {cam['camera_model']!r} is not supported "
                            f"(supported: {', '.join(MODEL_ALIASES)})")
        lens["camera_model"] = model
    elif any(lens.values()):
        lens["camera_model"] = OPENCV
    try:
        return Camera(cam["transform_matrix"], w, h, fx, num("fl_y"), num("cx"), num("cy"), **lens)
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
