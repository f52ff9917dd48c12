"""Triangle meshes to and from PLY and OBJ files.

Writers take vertices [V, 3], faces [F, 3] and optional per-vertex colours [V, 3] (uint8, or
float in [0, 1]), store positions as float32 (what Blender keeps anyway) and write
atomically, so a crash never leaves a half-written mesh for Blender to import. PLY is
`formats.ply` (numpy only, shared with the add-on); OBJ is here. `read_mesh` accepts what
other tools write (ASCII or binary PLY with any list types, OBJ with `a/b/c` face entries
and negative indices), fan-triangulates polygons, and reports bad input as a one-line
UserError that names the file.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..formats.atomic import atomic_write
from ..formats.ply import read_ply, write_ply
from ..formats.triangles import mesh_arrays, triangle_mesh


# ----------------------------------------------------------------------------- writing

def write_obj(path: str | os.PathLike, vertices: np.ndarray, faces: np.ndarray,
              colors: np.ndarray | None = None) -> None:
    """Text OBJ: `v x y z [r g b]` (colour floats in [0, 1], the vertex-colour extension that
    Blender's importer reads) and 1-based `f a b c`."""
    v, f, c = mesh_arrays(vertices, faces, colors)

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="ascii", newline="\n") as fh:
            fh.write("# written by ngp_engine\n")
            # %.9g round-trips every float32 exactly.
            if c is None:
                np.savetxt(fh, v, fmt="v %.9g %.9g %.9g")
            else:
                rows = np.concatenate([v.astype(np.float64), c / 255.0], axis=1)
                np.savetxt(fh, rows, fmt="v %.9g %.9g %.9g %.6g %.6g %.6g")
            np.savetxt(fh, f.astype(np.int64) + 1, fmt="f %d %d %d")

    atomic_write(Path(path), write)


def save_mesh(mesh: dict[str, Any], out_dir: Path, stem: str = "mesh") -> list[Path]:
    """Write `<stem>.ply` (binary, with colours when `mesh` has "colors") and `<stem>.obj`
    from a dict with "vertices" [V, 3] and "faces" [F, 3]; returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ply, obj = out_dir / f"{stem}.ply", out_dir / f"{stem}.obj"
    write_ply(ply, mesh["vertices"], mesh["faces"], mesh.get("colors"))
    write_obj(obj, mesh["vertices"], mesh["faces"], mesh.get("colors"))
    return [ply, obj]


# ----------------------------------------------------------------------------- reading

def read_mesh(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Read a .ply or .obj triangle mesh (polygons fan-triangulated).

    Returns vertices float64 [V, 3], faces int64 [F, 3], colours uint8 [V, 3] or None.
    Raises UserError naming the file when it is missing, empty, not a mesh in a known
    format, has no faces, has a face index out of range, or has a NaN/infinite vertex.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such mesh file")
    if not path.is_file():
        raise UserError(f"{path}: is not a file")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: the file is empty")
    suffix = path.suffix.lower()
    if suffix == ".ply":
        return read_ply(path)
    if suffix != ".obj":
        raise UserError(f"{path}: not a mesh file this engine reads (expected .ply or .obj)")
    vertices, flat, lengths, colors = _read_obj(path)
    return vertices, triangle_mesh(str(path), vertices, flat, lengths), colors


def _read_obj(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a mesh (not a text OBJ file)") from None
    positions: list[list[float]] = []
    rgb: list[list[float]] = []
    flat: list[int] = []
    lengths: list[int] = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens or tokens[0] not in ("v", "f"):
            continue  # comments, vt, vn, o, g, s, usemtl, mtllib, l, ...: not geometry we use
        try:
            if tokens[0] == "v":
                values = [float(t) for t in tokens[1:]]
                if len(values) not in (3, 4, 6, 7):
                    raise ValueError(f"{len(values)} numbers")
                positions.append(values[:3])
                if len(values) >= 6:                          # x y z r g b [w]
                    rgb.append(values[3:6])
            else:
                n_before = len(positions)
                corners = []
                for t in tokens[1:]:
                    i = int(t.split("/")[0])                  # a/b/c: position index first
                    if i == 0:
                        raise ValueError("index 0 (OBJ indices start at 1)")
                    # Negative indices count back from the latest vertex; store 0-based.
                    corners.append(i - 1 if i > 0 else n_before + i)
                flat.extend(corners)
                lengths.append(len(corners))
        except ValueError as e:
            raise UserError(f"{path}: line {line_no}: bad '{tokens[0]}' line ({e})") from None
    if not positions and not lengths:
        raise UserError(f"{path}: not a mesh (no OBJ 'v' or 'f' lines)")
    colors = None
    if rgb and len(rgb) == len(positions):          # colours only when every vertex has one
        c = np.asarray(rgb, dtype=np.float64)
        if np.isfinite(c).all():
            # The extension's colours are in [0, 1]; a few writers use 0..255 instead.
            scale = 1.0 if c.max() > 1.0 else 255.0
            colors = np.round(np.clip(c * scale, 0.0, 255.0)).astype(np.uint8)
    vertices = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    return vertices, np.asarray(flat, dtype=np.int64), np.asarray(lengths, dtype=np.int64), colors
