"""PLY triangle meshes with numpy alone (Blender ships no PLY library, and neither need we).

Reader (`read_ply`): what other tools write. `format ascii 1.0`, `binary_little_endian 1.0`
or `binary_big_endian 1.0`; scalar types char uchar short ushort int uint float double (or
int8 uint8 int16 uint16 int32 uint32 float32 float64); element `vertex` with x, y, z and
optional red, green, blue (uchar, or float in [0, 1]); element `face` with a list property
`vertex_indices` or `vertex_index` of any count and index types, polygons of any length
(fan-triangulated). Every other element and property is stepped over. A file that is not
such a mesh is a one-line UserError naming it.

Point clouds (`read_points`): the same reader for a file whose faces do not matter or do not
exist (structure from motion's sparse points): vertices and colours only.

Writer (`write_ply`): binary little endian, vertex float x y z (+ uchar red green blue),
face `vertex_indices` as a list with uchar count and int indices: the layout Blender,
MeshLab and Open3D all read. Written atomically.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np

from ..errors import UserError
from .atomic import atomic_write
from .triangles import colors_uint8, mesh_arrays, triangle_mesh

# PLY type name -> numpy type code (byte order added per file).
TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
         "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
         "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
         "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}
_STRUCT = {"i1": "b", "u1": "B", "i2": "h", "u2": "H", "i4": "i", "u4": "I"}  # list lengths
_BYTE_ORDER = {"ascii": None, "binary_little_endian": "<", "binary_big_endian": ">"}
RGB = ("red", "green", "blue")
INDEX_NAMES = ("vertex_indices", "vertex_index")
_WANTED = {"vertex": ("x", "y", "z", *RGB), "face": INDEX_NAMES}

# A property's values: [n] for a scalar; (flat values [sum(lengths)], lengths int64 [n]) for a list.
Values = Union[np.ndarray, tuple[np.ndarray, np.ndarray]]


class _Malformed(Exception):
    """The file is not valid PLY; `read_ply` reports it as one UserError naming the file."""


@dataclass(frozen=True)
class _Property:
    name: str
    type: str                       # numpy type code of the value(s), e.g. "f4"
    count_type: str | None = None   # numpy type code of a list's length; None for a scalar


@dataclass(frozen=True)
class _Element:
    name: str
    count: int
    properties: tuple[_Property, ...]


# ----------------------------------------------------------------------------- reading

def read_ply(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Read a PLY mesh: vertices float64 [V, 3], faces int64 [F, 3] (polygons
    fan-triangulated), colours uint8 [V, 3] or None. UserError naming the file when it is
    not readable PLY, not a mesh, has no faces, a face index out of range or a NaN vertex."""
    path = Path(path)
    return _mesh(str(path), *_read(path))


def _read(path: Path) -> tuple[list[_Element], dict[str, dict[str, Values]]]:
    """The elements of a PLY file and the values of the properties the readers want."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        order, elements, body = _parse_header(data)
        return elements, _read_elements(data, body, order, elements)
    except _Malformed as e:
        raise UserError(f"{path}: not a readable PLY file ({e})") from None


def _parse_header(data: bytes) -> tuple[str | None, list[_Element], int]:
    """(byte order "<" or ">", None for ASCII; the elements; offset of the body)."""
    if data[:3] != b"ply" or data[3:4] not in (b"\n", b"\r"):
        raise _Malformed("it does not start with 'ply'")
    end = data.find(b"\nend_header") + 1                   # 0: not found
    stop = data.find(b"\n", end + len("end_header")) if end else -1
    if stop < 0 or data[end:stop].rstrip(b"\r") != b"end_header":
        raise _Malformed("no end_header line")
    try:
        lines = data[:end].decode("ascii").splitlines()[1:]
    except UnicodeDecodeError:
        raise _Malformed("the header is not ASCII text") from None
    order: str | None = None
    fmt_seen = False
    elements: list[_Element] = []
    props: list[_Property] = []
    for line in lines:
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format" and len(words) == 3 and words[1] in _BYTE_ORDER and words[2] == "1.0":
            order, fmt_seen = _BYTE_ORDER[words[1]], True
        elif words[0] == "element" and len(words) == 3 and words[2].isdigit():
            _close(elements, props)
            elements.append(_Element(words[1], int(words[2]), ()))
        elif words[0] == "property" and elements:
            props.append(_property(words, line))
        else:
            raise _Malformed(f"unexpected header line {line.strip()[:60]!r}")
    if not fmt_seen:
        raise _Malformed("no 'format' line")
    _close(elements, props)
    return order, elements, stop + 1


def _property(words: list[str], line: str) -> _Property:
    if words[1:2] == ["list"] and len(words) == 5:
        count, value, name = words[2:]
        if TYPES.get(count) not in _STRUCT or value not in TYPES:
            raise _Malformed(f"bad list types in {line.strip()[:60]!r}")
        return _Property(name, TYPES[value], TYPES[count])
    if len(words) != 3 or words[1] not in TYPES:
        raise _Malformed(f"bad property line {line.strip()[:60]!r}")
    return _Property(words[2], TYPES[words[1]])


def _close(elements: list[_Element], props: list[_Property]) -> None:
    """Give the last element the properties read since its 'element' line."""
    if elements:
        names = [p.name for p in props]
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup is not None:
            raise _Malformed(f"property '{dup}' appears twice in element '{elements[-1].name}'")
        elements[-1] = _Element(elements[-1].name, elements[-1].count, tuple(props))
    props.clear()


def _read_elements(data: bytes, body: int, order: str | None, elements: list[_Element]
                   ) -> dict[str, dict[str, Values]]:
    """The wanted properties of the first `vertex` and `face` elements; the bytes (or ASCII
    tokens) of everything before them are stepped over."""
    out: dict[str, dict[str, Values]] = {}
    source: bytes | list[bytes] = data[body:].split() if order is None else data
    pos = 0 if order is None else body
    for el in elements:
        if "vertex" in out and "face" in out:
            break
        want = () if el.name in out else _WANTED.get(el.name, ())
        if order is None:
            values, pos = _ascii_element(source, pos, el, want)
        else:
            values, pos = _binary_element(source, pos, el, want, order)
        out.setdefault(el.name, values)
    return out


def _ranks(lengths: np.ndarray) -> np.ndarray:
    """Position of each value within its list: lengths [2, 3] -> [0, 1, 0, 1, 2]."""
    return np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)


def _empty(el: _Element, want: tuple[str, ...]) -> dict[str, Values]:
    return {p.name: (np.zeros(0, p.type), np.zeros(0, np.int64)) if p.count_type
            else np.zeros(0, p.type) for p in el.properties if p.name in want}


# -- binary: one numpy record per row when every list has the first row's length, else a walk

def _binary_element(buf: bytes, pos: int, el: _Element, want: tuple[str, ...], order: str
                    ) -> tuple[dict[str, Values], int]:
    if el.count == 0:
        return _empty(el, want), pos
    has_lists = any(p.count_type for p in el.properties)
    first = _walk_binary(buf, pos, el, order, 1)[1] if has_lists else {}
    fields: list[tuple] = []
    for i, p in enumerate(el.properties):
        if p.count_type:
            fields += [(f"n{i}", order + p.count_type), (f"p{i}", order + p.type, (int(first[i][0]),))]
        else:
            fields.append((f"p{i}", order + p.type))
    rowtype = np.dtype(fields)
    end = pos + el.count * rowtype.itemsize
    if end <= len(buf):
        rows = np.frombuffer(buf, rowtype, el.count, pos)
        if all((rows[f"n{i}"] == first[i][0]).all() for i in first):
            return {p.name: _record_values(rows, i, p) for i, p in enumerate(el.properties)
                    if p.name in want}, end
    if not has_lists:
        raise _Malformed(f"the file ends inside element '{el.name}'")
    starts, lengths, end = _walk_binary(buf, pos, el, order, el.count)
    u8 = np.frombuffer(buf, np.uint8)
    return {p.name: _gather_binary(u8, starts[i], lengths.get(i), np.dtype(order + p.type))
            for i, p in enumerate(el.properties) if p.name in want}, end


def _record_values(rows: np.ndarray, i: int, p: _Property) -> Values:
    values = rows[f"p{i}"].astype(p.type)                  # native byte order, a copy
    if p.count_type is None:
        return values
    return values.reshape(-1), np.full(len(rows), values.shape[1], np.int64)


def _walk_binary(buf: bytes, pos: int, el: _Element, order: str, n_rows: int
                 ) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray], int]:
    """Row by row (lists of mixed lengths): byte offset of each property's first value per
    row {i: int64 [n_rows]}, list lengths {i: int64 [n_rows]} and the element's end offset."""
    size = [np.dtype(p.type).itemsize for p in el.properties]
    count = {i: struct.Struct(order + _STRUCT[p.count_type])
             for i, p in enumerate(el.properties) if p.count_type}
    starts: dict[int, list[int]] = {i: [] for i in range(len(el.properties))}
    lengths: dict[int, list[int]] = {i: [] for i in count}
    for _ in range(n_rows):
        for i in range(len(size)):
            if i in count:
                if pos + count[i].size > len(buf):
                    raise _Malformed(f"the file ends inside element '{el.name}'")
                n = count[i].unpack_from(buf, pos)[0]
                if n < 0:
                    raise _Malformed(f"negative list length in element '{el.name}'")
                pos += count[i].size
                lengths[i].append(n)
                starts[i].append(pos)
                pos += n * size[i]
            else:
                starts[i].append(pos)
                pos += size[i]
    if pos > len(buf):
        raise _Malformed(f"the file ends inside element '{el.name}'")
    return ({i: np.asarray(s, np.int64) for i, s in starts.items()},
            {i: np.asarray(n, np.int64) for i, n in lengths.items()}, pos)


def _gather_binary(u8: np.ndarray, starts: np.ndarray, lengths: np.ndarray | None,
                   dtype: np.dtype) -> Values:
    """Values at byte offsets `starts` [n] (lists: `lengths` [n] values from each)."""
    offsets = starts if lengths is None else np.repeat(starts, lengths) + _ranks(lengths) * dtype.itemsize
    raw = u8[offsets[:, None] + np.arange(dtype.itemsize)]         # [N, itemsize] bytes
    values = raw.reshape(-1).view(dtype).astype(dtype.newbyteorder("="))
    return values if lengths is None else (values, lengths)


# -- ASCII: a table when every list has the first row's length, else a walk over the tokens

def _ascii_element(tokens: list[bytes], pos: int, el: _Element, want: tuple[str, ...]
                   ) -> tuple[dict[str, Values], int]:
    if el.count == 0:
        return _empty(el, want), pos
    starts, first, width = _walk_ascii(tokens, pos, el, 1)     # row 0: columns, list lengths
    width -= pos
    col = {i: int(s[0]) - pos for i, s in starts.items()}       # first value of each property
    end = pos + el.count * width
    if end <= len(tokens):
        try:
            table = _numbers(tokens[pos:end], el).reshape(el.count, width)
        except _Malformed:
            table = None                                    # e.g. a wrong guess ran into text
        if table is not None and all((table[:, col[i] - 1] == n[0]).all() for i, n in first.items()):
            out: dict[str, Values] = {}
            for i, p in enumerate(el.properties):
                if p.name in want and p.count_type:
                    k = int(first[i][0])
                    out[p.name] = (table[:, col[i]:col[i] + k].reshape(-1).astype(p.type),
                                   np.full(el.count, k, np.int64))
                elif p.name in want:
                    out[p.name] = table[:, col[i]].astype(p.type)
            return out, end
    starts, lengths, end = _walk_ascii(tokens, pos, el, el.count)
    numbers = _numbers(tokens[pos:end], el)
    out = {}
    for i, p in enumerate(el.properties):
        if p.name in want:
            n = lengths.get(i)
            idx = starts[i] - pos if n is None else np.repeat(starts[i] - pos, n) + _ranks(n)
            out[p.name] = numbers[idx].astype(p.type) if n is None else (numbers[idx].astype(p.type), n)
    return out, end


def _walk_ascii(tokens: list[bytes], pos: int, el: _Element, n_rows: int
                ) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray], int]:
    """As `_walk_binary`, in token positions: each property's first value per row, the
    list lengths, and the position after the element."""
    starts: dict[int, list[int]] = {i: [] for i in range(len(el.properties))}
    lengths: dict[int, list[int]] = {i: [] for i, p in enumerate(el.properties) if p.count_type}
    for _ in range(n_rows):
        for i, p in enumerate(el.properties):
            if p.count_type:
                try:
                    n = int(tokens[pos])
                except (IndexError, ValueError):
                    raise _Malformed(f"bad or missing list length in element '{el.name}'") from None
                if n < 0:
                    raise _Malformed(f"negative list length in element '{el.name}'")
                lengths[i].append(n)
                pos += 1
            starts[i].append(pos)
            pos += lengths[i][-1] if p.count_type else 1
    if pos > len(tokens):
        raise _Malformed(f"the file ends inside element '{el.name}'")
    return ({i: np.asarray(s, np.int64) for i, s in starts.items()},
            {i: np.asarray(n, np.int64) for i, n in lengths.items()}, pos)


def _numbers(tokens: list[bytes], el: _Element) -> np.ndarray:
    try:
        return np.array(tokens, dtype=np.float64)
    except ValueError:
        raise _Malformed(f"a value of element '{el.name}' is not a number") from None


# -- values -> mesh

def read_points(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None]:
    """Read the vertices of a PLY file, faces or not: points float64 [N, 3] (rows with a
    NaN or infinite coordinate dropped) and colours uint8 [N, 3] or None. UserError naming
    the file when it is not readable PLY or its vertices have no x, y, z."""
    path = Path(path)
    points, colors = _vertices(str(path), *_read(path), "point cloud")
    keep = np.isfinite(points).all(axis=1)
    return points[keep], None if colors is None else colors[keep]


def _vertices(where: str, elements: list[_Element], values: dict[str, dict[str, Values]], what: str
              ) -> tuple[np.ndarray, np.ndarray | None]:
    """Vertices float64 [V, 3] and colours uint8 [V, 3] or None of the `vertex` element."""
    found = {}
    for el in elements:
        found.setdefault(el.name, el)
    if "vertex" not in found:
        raise UserError(f"{where}: not a {what} (PLY has no 'vertex' element)")
    scalars = {p.name for p in found["vertex"].properties if p.count_type is None}
    if not {"x", "y", "z"} <= scalars:
        raise UserError(f"{where}: not a {what} (PLY vertices have no x, y, z)")
    vertex = values["vertex"]
    vertices = np.stack([vertex[a].astype(np.float64) for a in "xyz"], axis=1)    # [V, 3]
    colors = None
    if set(RGB) <= scalars:
        rgb = np.stack([vertex[c] for c in RGB], axis=1)                        # [V, 3]
        colors = (colors_uint8(rgb.astype(np.float64), len(rgb)) if rgb.dtype.kind == "f"
                  else np.clip(rgb, 0, 255).astype(np.uint8))
    return vertices, colors


def _mesh(where: str, elements: list[_Element], values: dict[str, dict[str, Values]]
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    vertices, colors = _vertices(where, elements, values, "mesh")
    found = {}
    for el in elements:
        found.setdefault(el.name, el)
    face = found.get("face")
    name = next((p.name for p in face.properties if p.count_type and p.name in INDEX_NAMES),
                None) if face is not None else None
    flat, lengths = values["face"][name] if name else (np.zeros(0, np.int64), np.zeros(0, np.int64))
    return vertices, triangle_mesh(where, vertices, flat, lengths), colors


# ----------------------------------------------------------------------------- writing

def write_ply(path: str | os.PathLike, vertices: np.ndarray, faces: np.ndarray,
              colors: np.ndarray | None = None) -> None:
    """Binary little-endian PLY of vertices [V, 3] (stored float32), faces [F, 3] (int32)
    and optional colours [V, 3] (uint8, or float in [0, 1]); written beside `path` and
    renamed into place. ValueError on wrong shapes or indices (see `mesh_arrays`)."""
    v, f, c = mesh_arrays(vertices, faces, colors)
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    fields += [(name, "u1") for name in RGB] if c is not None else []
    vertex = np.empty(len(v), fields)                        # packed rows, as PLY stores them
    vertex["x"], vertex["y"], vertex["z"] = v.T
    if c is not None:
        vertex["red"], vertex["green"], vertex["blue"] = c.T
    face = np.empty(len(f), [("n", "u1"), ("i", "<i4", (3,))])
    face["n"], face["i"] = 3, f
    header = ("ply\nformat binary_little_endian 1.0\ncomment written by ngp_engine\n"
              f"element vertex {len(v)}\nproperty float x\nproperty float y\nproperty float z\n"
              + "".join(f"property uchar {name}\n" for name in RGB if c is not None)
              + f"element face {len(f)}\nproperty list uchar int vertex_indices\nend_header\n")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: _write_file(tmp, header.encode("ascii"), vertex.tobytes(),
                                               face.tobytes()))


def _write_file(path: str, *chunks: bytes) -> None:
    with open(path, "wb") as fh:
        for chunk in chunks:
            fh.write(chunk)
