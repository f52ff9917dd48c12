"""The engine's unit cube: where a scene or mesh is normalised to, and back.

    unit = world * world_to_unit + offset            (uniform scale, world axes kept)

`world_to_unit` is the unit-cube length of one world unit: instant-ngp's transforms.json
`scale` means exactly that (its default 0.33), and an SDF's mesh is normalised the same way
(its inflated bounding box scaled to span [0, 1] along its longest side, centred on 0.5).
`aabb_scale` is a NeRF's scene box: [0.5 - a/2, 0.5 + a/2]^3 in unit-cube coordinates, a
power of two from 1 to 128 (an SDF's is 1).

Every output (mesh vertices, depth) goes back through `to_world`, so results land in the
input's own units. Standard library at import; numpy inside the array methods.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import UserError

if TYPE_CHECKING:
    import numpy as np

MAX_AABB_SCALE = 128
KEYS = ("world_to_unit", "offset", "aabb_scale")


@dataclass(frozen=True)
class UnitCube:
    """World (the input's units) -> unit-cube coordinates; see the module docstring."""

    world_to_unit: float
    """Unit-cube length of one world unit."""
    offset: tuple[float, float, float]
    """Unit-cube position of the world origin, in world axis order."""
    aabb_scale: float = 1.0
    """Scene box edge in unit-cube lengths (a power of two, 1..128)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "world_to_unit", float(self.world_to_unit))
        object.__setattr__(self, "aabb_scale", float(self.aabb_scale))
        object.__setattr__(self, "offset", tuple(float(v) for v in self.offset))
        if not (math.isfinite(self.world_to_unit) and self.world_to_unit > 0):
            raise UserError(f"scene transform: scale must be a finite number > 0, got {self.world_to_unit}")
        if len(self.offset) != 3 or not all(math.isfinite(v) for v in self.offset):
            raise UserError(f"scene transform: offset must be 3 finite numbers, got {self.offset}")
        check_aabb_scale(self.aabb_scale, "scene transform")

    @classmethod
    def around(cls, centre: "np.ndarray", extent: float) -> "UnitCube":
        """The cube that maps a box of side `extent` centred on `centre` onto [0, 1]^3."""
        w2u = 1.0 / float(extent)
        return cls(w2u, tuple(0.5 - float(c) * w2u for c in centre))

    def to_unit(self, points: "np.ndarray") -> "np.ndarray":
        """[..., 3] world -> [..., 3] unit cube (float64)."""
        import numpy as np  # noqa: PLC0415

        return np.asarray(points, np.float64) * self.world_to_unit + np.asarray(self.offset)

    def to_world(self, points: "np.ndarray") -> "np.ndarray":
        """[..., 3] unit cube -> [..., 3] world (float64)."""
        import numpy as np  # noqa: PLC0415

        return (np.asarray(points, np.float64) - np.asarray(self.offset)) / self.world_to_unit

    def box_unit(self) -> tuple["np.ndarray", "np.ndarray"]:
        """(min [3], max [3]) of the scene box in unit-cube coordinates."""
        import numpy as np  # noqa: PLC0415

        half = 0.5 * self.aabb_scale
        return np.full(3, 0.5 - half), np.full(3, 0.5 + half)

    def box_world(self) -> tuple["np.ndarray", "np.ndarray"]:
        """(min [3], max [3]) of the scene box in world units."""
        lo, hi = self.box_unit()
        return self.to_world(lo), self.to_world(hi)

    def to_dict(self) -> dict[str, Any]:
        return {"world_to_unit": self.world_to_unit, "offset": list(self.offset),
                "aabb_scale": self.aabb_scale}

    @classmethod
    def from_dict(cls, d: Any) -> "UnitCube":
        """Strict inverse of `to_dict` (checkpoints are user files: UserError on anything
        else). Also reads the two forms of engine 0.1.0's checkpoints: a NeRF's {scale,
        offset, aabb_scale} (scale = world_to_unit) and an SDF's {centre, scale} (there
        scale was the unit cube's edge in world units)."""
        where = "scene transform"
        if not isinstance(d, dict):
            raise UserError(f"{where}: expected an object, got {type(d).__name__}")
        if set(d) == {"centre", "scale"}:
            return cls.around(_numbers(d["centre"], 3, "centre"), _number(d["scale"], "scale"))
        keys = ("scale", "offset", "aabb_scale") if "scale" in d else KEYS
        for key in d:
            if key not in keys:
                raise UserError(f"{where}: unknown key '{key}'")
        missing = [k for k in keys if k not in d]
        if missing:
            raise UserError(f"{where}: missing key '{missing[0]}'")
        return cls(_number(d[keys[0]], keys[0]), tuple(_numbers(d["offset"], 3, "offset")),
                   _number(d["aabb_scale"], "aabb_scale"))


def check_aabb_scale(a: float, where: str) -> None:
    if not (1 <= a <= MAX_AABB_SCALE and a == 2 ** round(math.log2(a))):
        raise UserError(f"{where}: 'aabb_scale' must be a power of two from 1 to "
                        f"{MAX_AABB_SCALE}, got {a:g}")


def _number(v: Any, key: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise UserError(f"scene transform: '{key}' must be a finite number, got {v!r}")
    return float(v)


def _numbers(v: Any, n: int, key: str) -> list[float]:
    if not (isinstance(v, (list, tuple)) and len(v) == n):
        raise UserError(f"scene transform: '{key}' must be a list of {n} finite numbers, got {v!r}")
    return [_number(x, key) for x in v]
