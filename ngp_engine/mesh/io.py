"""Triangle meshes to and from PLY and OBJ files.

Writers take vertices [V, 3], faces [F, 3] and optional per-vertex colours [V, 3] (uint8, or
float in [0, 1]), store positions as float32 (what Blender keeps anyway) and write
atomically (`ngp_engine.files.atomic_write`), so a crash never leaves a half-written mesh
for Blender to import. `read_mesh` accepts what other tools
write (ASCII or binary PLY with any list types, OBJ with `a/b/c` face entries and negative
indices), fan-triangulates polygons, and reports bad input as a one-line UserError that
names the file.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import plyfile

from ..errors import UserError
from ..files import atomic_write


# ----------------------------------------------------------------------------- writing

def _check_mesh(vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray | None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Validated vertices float32 [V, 3], faces int32 [F, 3], colours uint8 [V, 3] or None."""
    v = np.asarray(vertices)
    f = np.asarray(faces)
    if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(f"expected vertices [V, 3] and faces [F, 3]; got {v.shape}, {f.shape}")
    if len(f) and (f.min() < 0 or f.max() >= len(v)):
        raise ValueError(f"face index out of range for {len(v)} vertices")
    if len(v) >= 2**31:
        raise ValueError("too many vertices for int32 face indices")
    return v.astype(np.float32), f.astype(np.int32), _colors_uint8(colors, len(v))


def _colors_uint8(colors: np.ndarray | None, n_vertices: int) -> np.ndarray | None:
    """uint8 [V, 3] from uint8 [V, 3] (as is) or float [V, 3] in [0, 1] (scaled, rounded)."""
    if colors is None:
        return None
    c = np.asarray(colors)
    if c.shape != (n_vertices, 3):
        raise ValueError(f"colors must be [{n_vertices}, 3]; got {c.shape}")
    if c.dtype == np.uint8:
        return c
    if np.issubdtype(c.dtype, np.floating):
        return np.round(np.clip(np.nan_to_num(c), 0.0, 1.0) * 255.0).astype(np.uint8)
    raise ValueError(f"colors must be uint8 or float in [0, 1]; got {c.dtype}")


def write_ply(path: str | os.PathLike, vertices: np.ndarray, faces: np.ndarray,
              colors: np.ndarray | None = None) -> None:
    """Binary little-endian PLY: vertex float x, y, z (+ uchar red, green, blue), face
    `vertex_indices` as a list with uchar count and int indices (the layout Blender,
    MeshLab and Open3D all read)."""
    v, f, c = _check_mesh(vertices, faces, colors)
    vertex_fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if c is not None:
        vertex_fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    vertex = np.empty(len(v), dtype=vertex_fields)
    vertex["x"], vertex["y"], vertex["z"] = v[:, 0], v[:, 1], v[:, 2]
    if c is not None:
        vertex["red"], vertex["green"], vertex["blue"] = c[:, 0], c[:, 1], c[:, 2]
    # A fixed-size [3] field is written by plyfile as a list property of length 3, without
    # building one Python object per face.
    face = np.empty(len(f), dtype=[("vertex_indices", "<i4", (3,))])
    face["vertex_indices"] = f
    data = plyfile.PlyData(
        [plyfile.PlyElement.describe(vertex, "vertex"),
         plyfile.PlyElement.describe(face, "face", len_types={"vertex_indices": "u1"},
                                     val_types={"vertex_indices": "i4"})],
        text=False, byte_order="<", comments=["written by ngp_engine"])
    atomic_write(Path(path), lambda tmp: data.write(str(tmp)))


def write_obj(path: str | os.PathLike, vertices: np.ndarray, faces: np.ndarray,
              colors: np.ndarray | None = None) -> None:
    """Text OBJ: `v x y z [r g b]` (colour floats in [0, 1], the vertex-colour extension that
    Blender's importer reads) and 1-based `f a b c`."""
    v, f, c = _check_mesh(vertices, faces, colors)

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
        vertices, flat, lengths, colors = _read_ply(path)
    elif suffix == ".obj":
        vertices, flat, lengths, colors = _read_obj(path)
    else:
        raise UserError(f"{path}: not a mesh file this engine reads (expected .ply or .obj)")
    faces = _fan_triangulate(flat, lengths)
    if len(faces) == 0:
        raise UserError(f"{path}: the mesh has no faces")
    if faces.min() < 0 or faces.max() >= len(vertices):
        bad = faces[(faces < 0) | (faces >= len(vertices))][0]
        raise UserError(f"{path}: face index out of range ({bad + 1} for "
                        f"{len(vertices)} vertices, 1-based)")
    if not np.isfinite(vertices).all():
        row = int(np.flatnonzero(~np.isfinite(vertices).all(axis=1))[0])
        raise UserError(f"{path}: vertex {row + 1} is NaN or infinite")
    return vertices, faces, colors


def _fan_triangulate(flat: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Triangles int64 [T, 3] from polygons stored as flat indices int64 [sum(lengths)] and
    corner counts int64 [P]: polygon (a, b, c, d, ...) -> (a, b, c), (a, c, d), ...
    Polygons with fewer than 3 corners have no area and are dropped."""
    n_tri = np.maximum(lengths - 2, 0)                          # [P]
    start = np.cumsum(lengths) - lengths                        # [P] first corner in flat
    poly = np.repeat(np.arange(len(lengths)), n_tri)            # [T] polygon of each triangle
    k = np.arange(len(poly)) - np.repeat(np.cumsum(n_tri) - n_tri, n_tri) + 1  # 1..L-2
    first = start[poly]
    return np.stack([flat[first], flat[first + k], flat[first + k + 1]], axis=1).astype(np.int64)


def _read_ply(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    try:
        ply = plyfile.PlyData.read(str(path))
    except Exception as e:  # plyfile raises many types (PlyParseError, ValueError, ...)
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{path}: not a readable PLY file ({reason})") from None
    elements = {el.name: el for el in ply.elements}
    if "vertex" not in elements:
        raise UserError(f"{path}: not a mesh (PLY has no 'vertex' element)")
    vertex = elements["vertex"]
    props = {p.name for p in vertex.properties}
    if not {"x", "y", "z"} <= props:
        raise UserError(f"{path}: not a mesh (PLY vertices have no x, y, z)")
    vertices = np.stack([np.asarray(vertex[a], dtype=np.float64) for a in "xyz"], axis=1)
    colors = None
    if {"red", "green", "blue"} <= props:
        rgb = np.stack([np.asarray(vertex[a]) for a in ("red", "green", "blue")], axis=1)
        colors = (np.round(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)
                  if np.issubdtype(rgb.dtype, np.floating)
                  else np.clip(rgb, 0, 255).astype(np.uint8))

    face = elements.get("face")
    face_props = {p.name for p in face.properties} if face is not None else set()
    name = next((n for n in ("vertex_indices", "vertex_index") if n in face_props), None)
    if name is None or face.count == 0:
        raise UserError(f"{path}: the mesh has no faces")
    data = face[name]
    if data.dtype == object:                                     # one array per face
        lengths = np.fromiter((len(p) for p in data), dtype=np.int64, count=len(data))
        flat = (np.concatenate([np.asarray(p, dtype=np.int64).reshape(-1) for p in data])
                if lengths.sum() else np.zeros(0, np.int64))
    else:                                                        # fixed-length [F, n]
        data = np.asarray(data, dtype=np.int64).reshape(len(data), -1)
        lengths = np.full(len(data), data.shape[1], dtype=np.int64)
        flat = data.reshape(-1)
    return vertices, flat, lengths, colors


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
