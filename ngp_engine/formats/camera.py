"""The camera: intrinsics, lens distortion and camera-to-world, in a dataset's world units.

One type for every place a camera appears: a frame of a transforms.json, a `preview`
request of the service protocol (its JSON form *is* a frame's keys), the training views of
a NeRF dataset, the renderers, the evaluation, the hidden-space test and the add-on.

Convention (NeRF = Blender): the camera looks down -Z with +Y up and +X right in the image.
Pixel (column i, row j) covers [i, i+1) x [j, j+1) from the image's top-left corner; its
centre is (i + 0.5, j + 0.5). The ray through image point (u, v) has camera-space direction
((u - cx) / fx, -(v - cy) / fy, -1), and `project` inverts `rays` exactly.

Lens distortion (COLMAP / OpenCV models, on normalised OpenCV coordinates x right, y down,
z forward; OpenCV (x, y, z) = NeRF (x, -y, -z)): a point (x, y) = (X / Z, Y / Z) lands at
pixel (cx + fx xd, cy + fy yd) with
- OPENCV: r2 = x^2 + y^2, radial = 1 + k1 r2 + k2 r2^2 + k3 r2^3,
  xd = x radial + 2 p1 x y + p2 (r2 + 2 x^2), yd = y radial + p1 (r2 + 2 y^2) + 2 p2 x y;
- OPENCV_FISHEYE (equidistant): theta = atan(r), theta_d = theta (1 + k1 theta^2 + k2 theta^4
  + k3 theta^6 + k4 theta^8), (xd, yd) = theta_d (x, y) / r.
`project` applies this forward map; `rays` / `camera_directions` invert it per pixel with
Newton iterations (vectorised numpy), so `project(rays(u, v)) == (u, v)`. The coefficients
act on normalised coordinates, so `resized` / `fitted` keep them. A lens whose radial map
is not strictly increasing out to the farthest image corner folds the image and is refused.

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

PINHOLE, OPENCV, FISHEYE = "PINHOLE", "OPENCV", "OPENCV_FISHEYE"
CAMERA_MODELS = (PINHOLE, OPENCV, FISHEYE)
MODEL_ALIASES = {
    # COLMAP / instant-ngp / nerfstudio names -> the model that computes them (the simpler
    # COLMAP models are the OpenCV ones with some coefficients zero).
    "PINHOLE": PINHOLE, "SIMPLE_PINHOLE": PINHOLE,
    "OPENCV": OPENCV, "SIMPLE_RADIAL": OPENCV, "RADIAL": OPENCV,
    "OPENCV_FISHEYE": FISHEYE, "SIMPLE_RADIAL_FISHEYE": FISHEYE, "RADIAL_FISHEYE": FISHEYE,
}
DISTORTION_FIELDS = ("k1", "k2", "k3", "k4", "p1", "p2")
NEWTON_TOLERANCE = 1e-9        # normalised units: ~1e-6 px at a focal length of 1000 px
NEWTON_ITERATIONS = 50
_FOLD_SCAN = 4096              # grid steps when looking for the first fold of the radial map


def canonical_model(name: Any) -> str | None:
    """The camera model computing `name` (a COLMAP / nerfstudio name), None if unknown."""
    return MODEL_ALIASES.get(name) if isinstance(name, str) else None


@dataclass(frozen=True)
class Camera:
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

    def _check_lens(self) -> None:
        """Model name and coefficients valid, and the lens does not fold the image (pure
        Python: the service protocol builds cameras without numpy)."""
        model = canonical_model(self.camera_model)
        check(model is not None, "camera_model", self.camera_model,
              f"is not a camera model (supported: {', '.join(MODEL_ALIASES)})")
        for name in DISTORTION_FIELDS:
            v = getattr(self, name)
            check(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
                  name, v, "must be a finite number")
        if model == PINHOLE:
            given = [n for n in DISTORTION_FIELDS if getattr(self, n)]
            check(not given, given[0] if given else "", getattr(self, given[0]) if given else 0,
                  "is a distortion coefficient but camera_model is PINHOLE (use OPENCV)")
        elif model == OPENCV:
            check(self.k4 == 0, "k4", self.k4, "is a fisheye coefficient (OPENCV has k1 k2 k3 p1 p2)")
            if not any(getattr(self, n) for n in DISTORTION_FIELDS):
                model = PINHOLE            # no distortion at all: one spelling of a pinhole
        else:
            for n in ("p1", "p2"):
                check(getattr(self, n) == 0, n, getattr(self, n),
                      "is a tangential coefficient (OPENCV_FISHEYE has k1..k4 only)")
        object.__setattr__(self, "camera_model", model)
        for name in DISTORTION_FIELDS:                     # ints from JSON become floats
            object.__setattr__(self, name, float(getattr(self, name)))
        if self.distorted:
            self._check_no_fold()

    def _check_no_fold(self) -> None:
        """ConfigError when the radial map (r -> r radial(r), or theta -> theta_d) stops
        increasing before it reaches the farthest image corner: pixels beyond that radius
        would have no ray (or two)."""
        fx, fy, cx, cy = self.intrinsics
        corner = max(math.hypot((u - cx) / fx, (v - cy) / fy) for u in (0.0, self.w) for v in (0.0, self.h))
        reach, fold = self._radial_reach(corner)
        if reach < corner:
            given = ", ".join(f"{n} = {getattr(self, n):g}" for n in ("k1", "k2", "k3", "k4")
                              if getattr(self, n))
            verb = "fold" if "," in given else "folds"
            where = (f"at {100.0 * reach / corner:.0f}% of the way to the corner" if fold
                     else "before the image corner (beyond 180 degrees)")
            raise ConfigError(f"{given} {verb} the image {where}: not a valid lens")
        if not self.fisheye:
            self._check_border_inverts()

    def _check_border_inverts(self, per_edge: int = 16) -> None:
        """ConfigError when Newton's inversion of the OPENCV map fails at a point of the
        image border (tangential terms can fold an image whose radial map is fine)."""
        fx, fy, cx, cy = self.intrinsics
        ts = [i / per_edge for i in range(per_edge + 1)]
        border = ([(t * self.w, 0.0) for t in ts] + [(t * self.w, float(self.h)) for t in ts]
                  + [(0.0, t * self.h) for t in ts] + [(float(self.w), t * self.h) for t in ts])
        for u, v in border:
            xd, yd = (u - cx) / fx, (v - cy) / fy
            x, y = xd, yd
            for _ in range(NEWTON_ITERATIONS):
                x, y, res, det = self._newton_step(x, y, xd, yd)
                if not (math.isfinite(x) and math.isfinite(y)) or res < 1e-14:
                    break
            _, _, res, det = self._newton_step(x, y, xd, yd) if math.isfinite(x + y) else (0, 0, math.inf, 0)
            if not (res < NEWTON_TOLERANCE and det > 0):
                given = ", ".join(f"{n} = {getattr(self, n):g}" for n in DISTORTION_FIELDS
                                  if getattr(self, n))
                raise ConfigError(f"{given}: the lens cannot be inverted at pixel ({u:.1f}, "
                                  f"{v:.1f}) of the image border (it folds the image there): "
                                  "not a valid lens")

    # ------------------------------------------------------------------ lens model
    @property
    def distorted(self) -> bool:
        """True unless this is a plain pinhole (a fisheye with zero coefficients is still an
        equidistant lens, not a pinhole)."""
        return self.camera_model != PINHOLE

    @property
    def fisheye(self) -> bool:
        return self.camera_model == FISHEYE

    @property
    def lens_key(self) -> tuple:
        """What decides the camera-space ray of every pixel: cameras with equal keys share
        one direction map."""
        return (self.w, self.h, *self.intrinsics, self.camera_model,
                *(getattr(self, n) for n in DISTORTION_FIELDS))

    def _radial(self, r: float) -> tuple[float, float]:
        """The radial map and its derivative at r (undistorted radius, or theta for fisheye)."""
        k1, k2, k3, k4 = self.k1, self.k2, self.k3, self.k4 if self.fisheye else 0.0
        r2 = r * r
        f = r * (1.0 + r2 * (k1 + r2 * (k2 + r2 * (k3 + r2 * k4))))
        df = 1.0 + r2 * (3 * k1 + r2 * (5 * k2 + r2 * (7 * k3 + r2 * 9 * k4)))
        return f, df

    def _radial_reach(self, target: float) -> tuple[float, bool]:
        """How far (in distorted radius) the radial map gets while strictly increasing,
        scanning until it reaches `target`: (reach, folded). For a fisheye theta stops at pi."""
        limit = math.pi if self.fisheye else math.inf
        step = min(target, limit) / _FOLD_SCAN * 1.0001
        best, r = 0.0, 0.0
        for _ in range(64 * _FOLD_SCAN):                  # up to 64x the corner radius
            r = min(r + step, limit)
            f, df = self._radial(r)
            if df <= 0.0 or f <= best:
                return best, True
            best = f
            if f >= target:
                return f, False
            if r >= limit:
                return best, False
        return best, False

    def _fold_radius(self, limit: float) -> float:
        """The first radius (undistorted r, or theta) in (0, limit] where the radial map
        stops increasing, or `limit` (a coarse scan refined by bisection)."""
        if self.fisheye:
            limit = min(limit, math.pi)
        if not limit > 0.0:                     # NaN or 0: nothing to scan
            return limit
        # Evenly spaced up to radius 4 (76 degrees off axis), where lens polynomials fold if
        # they do; geometrically spaced beyond, for points far off the axis.
        near = min(limit, 4.0)
        radii = [near * i / _FOLD_SCAN for i in range(1, _FOLD_SCAN + 1)]
        if limit > near:
            radii += [near * (limit / near) ** (i / 256) for i in range(1, 257)]
        prev = 0.0
        for r in radii:
            if self._radial(r)[1] <= 0.0:
                lo, hi = prev, r
                for _ in range(60):
                    mid = 0.5 * (lo + hi)
                    lo, hi = (mid, hi) if self._radial(mid)[1] > 0.0 else (lo, mid)
                return lo
            prev = r
        return limit

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_arrays(cls, c2w: "np.ndarray", fx: float, fy: float, cx: float, cy: float,
                    width: int, height: int, **lens: Any) -> "Camera":
        """From a [4, 4] camera-to-world array and pixel intrinsics (`lens`: camera_model
        and distortion coefficients)."""
        return cls([[float(v) for v in row] for row in c2w], int(width), int(height), float(fx),
                   float(fy), float(cx), float(cy), **lens)

    def lens(self) -> dict[str, Any]:
        """camera_model and the coefficients it uses (empty for a pinhole)."""
        if not self.distorted:
            return {}
        names = ("k1", "k2", "k3", "k4") if self.fisheye else ("k1", "k2", "k3", "p1", "p2")
        return {"camera_model": self.camera_model, **{n: getattr(self, n) for n in names}}

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

    def _distort(self, x: Any, y: Any) -> tuple[Any, Any]:
        """OPENCV forward map on normalised coordinates (floats or arrays alike)."""
        k1, k2, k3, p1, p2 = self.k1, self.k2, self.k3, self.p1, self.p2
        r2 = x * x + y * y
        radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
        return (x * radial + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x),
                y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y)

    def _newton_step(self, x: Any, y: Any, xd: Any, yd: Any) -> tuple[Any, Any, Any, Any]:
        """One Newton step of distort(x, y) = (xd, yd): (x', y', |residual| before the step,
        Jacobian determinant). Arithmetic only, so it runs on floats and arrays."""
        k1, k2, k3, p1, p2 = self.k1, self.k2, self.k3, self.p1, self.p2
        r2 = x * x + y * y
        radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
        d_radial = k1 + r2 * (2.0 * k2 + r2 * 3.0 * k3)          # d radial / d r2
        fx_ = x * radial + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x) - xd
        fy_ = y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y - yd
        a = radial + 2.0 * x * x * d_radial + 2.0 * p1 * y + 6.0 * p2 * x     # d xd / dx
        b = 2.0 * x * y * d_radial + 2.0 * p1 * x + 2.0 * p2 * y             # d xd / dy = d yd / dx
        c = radial + 2.0 * y * y * d_radial + 6.0 * p1 * y + 2.0 * p2 * x     # d yd / dy
        det = a * c - b * b
        safe = det + (det == 0) * 1e-300
        return (x - (c * fx_ - b * fy_) / safe, y - (a * fy_ - b * fx_) / safe,
                abs(fx_) + abs(fy_), det)

    def _undistort(self, xd: "np.ndarray", yd: "np.ndarray") -> tuple["np.ndarray", "np.ndarray"]:
        """Normalised undistorted (x, y) [N] of distorted (xd, yd) [N] (OPENCV)."""
        import numpy as np  # noqa: PLC0415

        # Start at the distorted point: for barrel distortion (k1 < 0) the radial map is
        # concave there and Newton climbs to the root from below without overshooting.
        x, y = xd.copy(), yd.copy()
        for _ in range(NEWTON_ITERATIONS):
            x, y, res, det = self._newton_step(x, y, xd, yd)
            if not np.isfinite(res).all():
                break
            if res.max(initial=0.0) < 1e-14:
                break
        _, _, res, det = self._newton_step(x, y, xd, yd)
        r_fold = self._fold_radius(float(np.sqrt((x * x + y * y).max(initial=0.0))) + 1e-12)
        bad = ~(res < NEWTON_TOLERANCE) | ~(det > 0) | (np.sqrt(x * x + y * y) > r_fold)
        self._raise_if_bad(bad, xd, yd)
        return x, y

    def _fisheye_directions(self, xd: "np.ndarray", yd: "np.ndarray") -> "np.ndarray":
        """NeRF camera-space directions [N, 3] (not normalised) of fisheye points (xd, yd)."""
        import numpy as np  # noqa: PLC0415

        theta_d = np.hypot(xd, yd)
        theta = np.minimum(theta_d, math.pi)
        for _ in range(NEWTON_ITERATIONS):
            f, df = self._radial_array(theta)
            step = (f - theta_d) / np.where(df > 0, df, 1.0)
            theta = theta - step
            if np.abs(step).max(initial=0.0) < 1e-15:
                break
        f, df = self._radial_array(theta)
        limit = self._fold_radius(float(theta.max(initial=0.0)) + 1e-12)
        bad = ~(np.abs(f - theta_d) < NEWTON_TOLERANCE) | ~(df > 0) | (theta > limit) | (theta < 0)
        self._raise_if_bad(bad, xd, yd)
        with np.errstate(invalid="ignore", divide="ignore"):
            scale = np.where(theta_d > 0, np.sin(theta) / np.where(theta_d > 0, theta_d, 1.0), 1.0)
        return np.stack([scale * xd, -scale * yd, -np.cos(theta)], axis=-1)

    def _radial_array(self, theta: "np.ndarray") -> tuple["np.ndarray", "np.ndarray"]:
        """Fisheye theta_d(theta) [N] and its derivative [N]."""
        k1, k2, k3, k4 = self.k1, self.k2, self.k3, self.k4
        t2 = theta * theta
        f = theta * (1.0 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4))))
        df = 1.0 + t2 * (3 * k1 + t2 * (5 * k2 + t2 * (7 * k3 + t2 * 9 * k4)))
        return f, df

    def _raise_if_bad(self, bad: "np.ndarray", xd: "np.ndarray", yd: "np.ndarray") -> None:
        if not bad.any():
            return
        from ..errors import UserError  # noqa: PLC0415

        i = int(bad.argmax())
        fx, fy, cx, cy = self.intrinsics
        given = ", ".join(f"{n} = {getattr(self, n):g}" for n in DISTORTION_FIELDS if getattr(self, n))
        raise UserError(f"{given or self.camera_model}: the lens cannot be inverted at pixel "
                        f"({cx + fx * xd[i]:.1f}, {cy + fy * yd[i]:.1f}) (it folds the image "
                        "there): not a valid lens")

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

    def _project_fisheye(self, xc: "np.ndarray") -> "np.ndarray":
        """[P, 3] NeRF camera-space points -> [P, 2] pixels through the equidistant model."""
        import numpy as np  # noqa: PLC0415

        fx, fy, cx, cy = self.intrinsics
        X, Y, Z = xc[:, 0], -xc[:, 1], -xc[:, 2]                # OpenCV axes
        rho = np.hypot(X, Y)
        theta = np.arctan2(rho, Z)                                # 0 .. pi off the axis
        theta_d = self._radial_array(theta)[0]
        with np.errstate(divide="ignore", invalid="ignore"):
            s = np.where(rho > 0, theta_d / np.where(rho > 0, rho, 1.0), 0.0)
        uv = np.stack([cx + fx * s * X, cy + fy * s * Y], axis=-1)
        limit = self._fold_radius(math.pi)
        uv[~(theta < limit) | ((rho == 0) & (Z <= 0))] = np.nan
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
