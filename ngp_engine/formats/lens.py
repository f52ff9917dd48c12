"""The lens model of a `Camera`: COLMAP / OpenCV distortion, its inverse and its checks.

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

Pure Python at import (the service protocol validates cameras without numpy); numpy is
imported by the methods that compute with arrays.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ..schema import ConfigError, check

if TYPE_CHECKING:
    import numpy as np

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


class LensModel:
    """The lens half of `Camera` (a mixin: it reads the camera's `camera_model`, `k1`..`k4`,
    `p1`, `p2`, `w`, `h` and `intrinsics`)."""

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

    def lens(self) -> dict[str, Any]:
        """camera_model and the coefficients it uses (empty for a pinhole)."""
        if not self.distorted:
            return {}
        names = ("k1", "k2", "k3", "k4") if self.fisheye else ("k1", "k2", "k3", "p1", "p2")
        return {"camera_model": self.camera_model, **{n: getattr(self, n) for n in names}}

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
