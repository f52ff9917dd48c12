"""ngp_engine.mesh: marching cubes (placement, orientation, closedness), cleanup, PLY/OBJ
files, and mesh distances, checked against shapes whose answers are known in closed form."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ngp_engine.errors import UserError
from ngp_engine.formats import ply as ply_format
from ngp_engine.mesh import (extract_mesh, marching_cubes, mesh_to_mesh_distance,
                             point_to_mesh_distance, read_mesh, remove_floaters, sample_grid,
                             sample_surface, write_obj, write_ply)


# ----------------------------------------------------------------------------- helpers

def face_normals(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    """[F, 3] right-hand-rule normals (not normalised)."""
    v = v.astype(np.float64)
    return np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])


def edge_use_counts(f: np.ndarray) -> np.ndarray:
    """How many faces use each undirected edge."""
    edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    return np.unique(edges, axis=0, return_counts=True)[1]


def sphere_density(center, radius):
    """Density 1 - |x - c| / r: positive inside, 0 on the sphere."""
    c = torch.tensor(center, dtype=torch.float32)

    def fn(p: torch.Tensor) -> torch.Tensor:
        return 1.0 - (p - c.to(p.device)).norm(dim=-1) / radius
    return fn


def icosphere(subdivisions: int, radius: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Sphere mesh: an icosahedron split `subdivisions` times, projected to the radius."""
    t = (1.0 + 5 ** 0.5) / 2
    v = np.array([[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t],
                  [0, -1, -t], [0, 1, -t], [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]],
                 dtype=np.float64)
    f = np.array([[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9],
                  [5, 11, 4], [11, 10, 2], [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2],
                  [3, 2, 6], [3, 6, 8], [3, 8, 9], [4, 9, 5], [2, 4, 11], [6, 2, 10],
                  [8, 6, 7], [9, 8, 1]])
    for _ in range(subdivisions):
        edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
        uniq, inv = np.unique(edges, axis=0, return_inverse=True)
        mid = len(v) + inv.reshape(3, -1).T                      # [F, 3]: ab, bc, ca
        v = np.concatenate([v, 0.5 * (v[uniq[:, 0]] + v[uniq[:, 1]])])
        a, b, c = f.T
        ab, bc, ca = mid.T
        f = np.concatenate([np.stack(s, 1) for s in
                            ((a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca))])
    return radius * v / np.linalg.norm(v, axis=1, keepdims=True), f


CUBE_V = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])
CUBE_F = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                   [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])


@pytest.fixture(scope="module")
def sphere_mesh():
    """Radius 0.6 sphere on [-1, 1]^3 at resolution 64."""
    v, f = extract_mesh(sphere_density((0, 0, 0), 0.6), (-1, -1, -1), (1, 1, 1), 64, 0.0)
    return v, f


# ----------------------------------------------------------------------------- sampling

def test_sample_grid_places_lattice_points_and_chunks():
    box_min, box_max, res = (-1.0, 0.0, 2.0), (2.0, 1.0, 3.0), (7, 5, 4)
    seen = []

    def fn(p: torch.Tensor) -> torch.Tensor:
        assert not torch.is_grad_enabled() and p.dtype == torch.float32 and p.shape[1] == 3
        seen.append(p.shape[0])
        return p[:, 0] * 100 + p[:, 1] * 10 + p[:, 2]            # encodes x, y, z

    grid = sample_grid(fn, box_min, box_max, res, chunk_size=23, device="cpu")
    assert grid.shape == res and grid.dtype == np.float32
    assert sum(seen) == 7 * 5 * 4 and max(seen) == 23            # chunked, nothing missed
    x = np.linspace(-1, 2, 7)[:, None, None]                     # x along axis 0 ...
    y = np.linspace(0, 1, 5)[None, :, None]
    z = np.linspace(2, 3, 4)[None, None, :]
    np.testing.assert_allclose(grid, x * 100 + y * 10 + z, atol=1e-4)


def test_sample_grid_accepts_n_by_1_output():
    grid = sample_grid(lambda p: p[:, :1], (0, 0, 0), (1, 1, 1), 3)
    np.testing.assert_allclose(grid[:, 1, 2], [0, 0.5, 1])


# ----------------------------------------------------------------------------- marching cubes

def test_sphere_vertices_lie_on_the_radius(sphere_mesh):
    v, f = sphere_mesh
    assert v.dtype == np.float32 and f.dtype == np.int32 and v.shape[1] == f.shape[1] == 3
    assert len(f) > 1000
    half_cell = 0.5 * 2.0 / 63
    assert np.abs(np.linalg.norm(v, axis=1) - 0.6).max() < half_cell


def test_sphere_normals_point_outward(sphere_mesh):
    v, f = sphere_mesh
    centroids = v[f].astype(np.float64).mean(axis=1)
    outward = (face_normals(v, f) * centroids).sum(axis=1)
    assert (outward > 0).all()


def test_sphere_is_closed_and_welded(sphere_mesh):
    v, f = sphere_mesh
    assert (edge_use_counts(f) == 2).all()                       # watertight, by index
    assert len(np.unique(v, axis=0)) == len(v)                   # no duplicate positions
    assert len(np.unique(f.reshape(-1))) == len(v)               # no unreferenced vertex
    assert len(v) - len(edge_use_counts(f)) + len(f) == 2       # Euler: a sphere


def test_non_cubic_off_centre_box_maps_to_world():
    center, r = np.array([0.3, -0.2, 0.1]), 0.5
    box_min, box_max, res = (-1, -2, -1), (2, 1, 1), (61, 57, 41)
    v, f = extract_mesh(sphere_density(tuple(center), r), box_min, box_max, res, 0.0,
                        chunk_size=10_000)
    cell = (np.array(box_max) - np.array(box_min)) / (np.array(res) - 1)
    assert np.abs(np.linalg.norm(v - center, axis=1) - r).max() < 0.5 * cell.max()
    # Extent per axis catches swapped axes, which the radius check alone would miss.
    np.testing.assert_allclose(v.min(axis=0), center - r, atol=cell.max())
    np.testing.assert_allclose(v.max(axis=0), center + r, atol=cell.max())
    # Some lattice points lie exactly on this sphere (e.g. (-0.1, -0.5, 0.1)), which gives a
    # few zero-area faces (see the next test); every face with an area points outward.
    normals = face_normals(v, f)
    area2 = np.linalg.norm(normals, axis=1)
    assert 0 < (area2 == 0).sum() < 20
    assert ((normals * (v[f].mean(axis=1) - center)).sum(axis=1)[area2 > 0] > 0).all()
    assert (edge_use_counts(f) == 2).all()


def test_samples_exactly_at_threshold_stay_closed_by_index():
    # Octahedron |x| + |y| + |z| = 5 on an integer lattice: many samples are exactly 0.
    x = np.arange(-8.0, 9.0)
    vol = 5.0 - np.abs(x[:, None, None]) - np.abs(x[None, :, None]) - np.abs(x[None, None, :])
    v, f = marching_cubes(vol, 0.0, (-8, -8, -8), (8, 8, 8))
    normals = face_normals(v, f)
    area2 = np.linalg.norm(normals, axis=1)
    assert (edge_use_counts(f) == 2).all()                       # closed by index
    assert len(np.unique(v, axis=0)) < len(v)                    # but coincident vertices
    assert (area2 == 0).any()                                    # and zero-area slivers
    assert ((normals * v[f].mean(axis=1)).sum(axis=1)[area2 > 0] > 0).all()
    np.testing.assert_allclose(np.abs(v).sum(axis=1), 5.0, atol=1e-5)


def test_sdf_inside_below_gives_same_surface_outward(sphere_mesh):
    def sdf(p: torch.Tensor) -> torch.Tensor:
        return p.norm(dim=-1) - 0.6                              # negative inside

    v, f = extract_mesh(sdf, (-1, -1, -1), (1, 1, 1), 64, 0.0, inside="below")
    dv, df = sphere_mesh
    assert len(f) == len(df)
    np.testing.assert_allclose(v, dv, atol=1e-5)                 # same zero set
    assert ((face_normals(v, f) * v[f].mean(axis=1)).sum(axis=1) > 0).all()
    # Same SDF with the default inside="above" is inside out: the flag is what fixes it.
    v2, f2 = extract_mesh(sdf, (-1, -1, -1), (1, 1, 1), 16, 0.0)
    assert ((face_normals(v2, f2) * v2[f2].mean(axis=1)).sum(axis=1) < 0).all()


def test_no_crossing_gives_empty_arrays():
    v, f = marching_cubes(np.ones((8, 8, 8), np.float32), 2.0, (0, 0, 0), (1, 1, 1))
    assert v.shape == (0, 3) and v.dtype == np.float32
    assert f.shape == (0, 3) and f.dtype == np.int32


# ----------------------------------------------------------------------------- cleanup

def test_remove_floaters_drops_far_tetrahedron(sphere_mesh):
    sv, sf = sphere_mesh
    tet_v = np.array([[5, 5, 5], [5.1, 5, 5], [5, 5.1, 5], [5, 5, 5.1]], np.float32)
    tet_f = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]], np.int32) + len(sv)
    v, f, info = remove_floaters(np.concatenate([sv, tet_v]), np.concatenate([sf, tet_f]))
    assert info == dict(components_before=2, components_after=1, faces_removed=4,
                        vertices_removed=4)
    np.testing.assert_array_equal(v, sv)                         # sphere intact, in order
    np.testing.assert_array_equal(f, sf)
    assert f.min() >= 0 and f.max() < len(v)


def test_remove_floaters_reindexes_when_floater_comes_first(sphere_mesh):
    sv, sf = sphere_mesh
    tet_v = np.array([[5, 5, 5], [5.1, 5, 5], [5, 5.1, 5], [5, 5, 5.1], [9, 9, 9]], np.float32)
    tet_f = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]], np.int32)
    v, f, info = remove_floaters(np.concatenate([tet_v, sv]),   # vertex 4 is unreferenced
                                 np.concatenate([tet_f, sf + len(tet_v)]))
    np.testing.assert_array_equal(v, sv)
    np.testing.assert_array_equal(f, sf)
    assert info["vertices_removed"] == 5


# ----------------------------------------------------------------------------- files

def test_ply_round_trip_exact_and_binary(tmp_path, sphere_mesh):
    v, f = sphere_mesh
    colors = np.random.default_rng(0).integers(0, 256, (len(v), 3), dtype=np.uint8)
    path = tmp_path / "sphere.ply"
    write_ply(path, v, f, colors)
    header = path.read_bytes().split(b"end_header")[0]
    assert b"format binary_little_endian 1.0" in header
    assert b"property list uchar int vertex_indices" in header
    rv, rf, rc = read_mesh(path)
    assert rv.dtype == np.float64 and rf.dtype == np.int64 and rc.dtype == np.uint8
    np.testing.assert_array_equal(rv, v.astype(np.float64))
    np.testing.assert_array_equal(rf, f)
    np.testing.assert_array_equal(rc, colors)
    assert list(tmp_path.iterdir()) == [path]                    # no temp file left


def test_ply_float_colours_and_no_colours(tmp_path):
    path = tmp_path / "c.ply"
    write_ply(path, CUBE_V, CUBE_F, np.tile([[0.0, 0.5, 1.0]], (8, 1)))
    assert (read_mesh(path)[2] == [0, 128, 255]).all()
    write_ply(path, CUBE_V, CUBE_F)
    assert read_mesh(path)[2] is None and b"red" not in path.read_bytes()[:300]


def test_obj_round_trip(tmp_path, sphere_mesh):
    v, f = sphere_mesh
    colors = np.random.default_rng(1).integers(0, 256, (len(v), 3), dtype=np.uint8)
    path = tmp_path / "sphere.obj"
    write_obj(path, v, f, colors)
    first_v = next(line for line in path.read_text().splitlines() if line.startswith("v "))
    assert all(0 <= float(t) <= 1 for t in first_v.split()[4:7])  # colour floats in [0, 1]
    rv, rf, rc = read_mesh(path)
    np.testing.assert_allclose(rv, v, atol=1e-6)
    np.testing.assert_array_equal(rf, f)
    np.testing.assert_array_equal(rc, colors)
    write_obj(path, v, f)
    assert read_mesh(path)[2] is None


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    def write_half_then_fail(path, *chunks):
        Path(path).write_bytes(b"ply\nformat binary_little_endian 1.0\n")
        raise OSError("disk full")

    monkeypatch.setattr(ply_format, "_write_file", write_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_ply(tmp_path / "half.ply", CUBE_V, CUBE_F)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "m.obj"
    write_obj(path, CUBE_V, CUBE_F)
    before = path.read_bytes()
    with pytest.raises(ValueError):
        write_obj(path, CUBE_V, CUBE_F, colors=np.zeros((8, 3), np.int64))  # bad dtype
    assert path.read_bytes() == before and list(tmp_path.iterdir()) == [path]


def test_read_ascii_ply_with_polygons_and_other_list_types(tmp_path):
    path = tmp_path / "quad.ply"
    path.write_text("ply\nformat ascii 1.0\nelement vertex 5\n"
                    "property double x\nproperty double y\nproperty double z\n"
                    "element face 2\nproperty list uint int vertex_index\nend_header\n"
                    "0 0 0\n1 0 0\n1 1 0\n0 1 0\n0 0 1\n"
                    "4 0 1 2 3\n3 0 1 4\n")
    v, f, c = read_mesh(path)
    assert v.shape == (5, 3) and c is None
    np.testing.assert_array_equal(f, [[0, 1, 2], [0, 2, 3], [0, 1, 4]])


def test_read_obj_slashes_negative_indices_and_polygons(tmp_path):
    path = tmp_path / "quad.OBJ"
    path.write_text("# comment\nmtllib x.mtl\no quad\n"
                    "v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\n"
                    "vt 0 0\nvn 0 0 1\ns off\nusemtl m\n"
                    "f 1/1/1 2/1/1 3/1/1 4/1/1\n"
                    "v 0 0 1\n"
                    "f -5//1 -4//1 -1//1\n"
                    "l 1 2\n")
    v, f, c = read_mesh(path)
    assert v.shape == (5, 3) and c is None
    np.testing.assert_array_equal(f, [[0, 1, 2], [0, 2, 3], [0, 1, 4]])


@pytest.mark.parametrize("name, content, needle", [
    ("missing.ply", None, "no such"),
    ("empty.obj", b"", "empty"),
    ("notes.ply", b"these are my notes, not a mesh\n", "not a readable PLY"),
    ("notes.obj", b"hello world\n", "not a mesh"),
    ("binary.obj", bytes(range(256)) * 4, "not a mesh"),
    ("mesh.stl", b"solid x\nendsolid x\n", "expected .ply or .obj"),
    ("nan.obj", b"v 0 0 0\nv 1 nan 0\nv 0 1 0\nf 1 2 3\n", "NaN"),
    ("inf.obj", b"v 0 0 0\nv 1 0 0\nv 0 1 inf\nf 1 2 3\n", "NaN or infinite"),
    ("range.obj", b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 4\n", "out of range"),
    ("points.obj", b"v 0 0 0\nv 1 0 0\nv 0 1 0\n", "no faces"),
    ("garbled.obj", b"v 0 0 zero\n", "line 1"),
    ("range.ply", b"ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\n"
                  b"property float y\nproperty float z\nelement face 1\n"
                  b"property list uchar int vertex_indices\nend_header\n"
                  b"0 0 0\n1 0 0\n0 1 0\n3 0 1 3\n", "out of range"),
    ("points.ply", b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\n"
                   b"property float y\nproperty float z\nend_header\n0 0 0\n", "no faces"),
])
def test_read_mesh_errors_name_the_file(tmp_path, name, content, needle):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError) as err:
        read_mesh(path)
    message = str(err.value)
    assert name in message and needle in message and "\n" not in message


# ----------------------------------------------------------------------------- distances

def test_point_to_cube_distances():
    points = np.array([[2, 0, 0], [0, -3, 0], [1, 1, 1], [0.5, 0.1, -0.2], [0, 0, 0.5],
                       [0, 0, 0]])
    expected = [1.5, 2.5, np.sqrt(3 * 0.25), 0, 0, 0.5]           # unsigned: centre is 0.5
    np.testing.assert_allclose(point_to_mesh_distance(points, CUBE_V, CUBE_F), expected,
                               atol=1e-12)


def test_sample_surface_is_area_weighted_on_surface_and_seeded():
    # Two triangles in the z=0 plane: areas 0.5 and 1.5, so 3/4 of the samples in the second.
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [2, 0, 0], [5, 0, 0], [2, 1, 0]], float)
    f = np.array([[0, 1, 2], [3, 4, 5]])
    p = sample_surface(v, f, 20_000, seed=3)
    assert p.shape == (20_000, 3) and p.dtype == np.float64
    assert np.abs(point_to_mesh_distance(p, v, f)).max() < 1e-12
    assert abs((p[:, 0] >= 2).mean() - 0.75) < 0.02
    # Uniform inside the triangle: the centroid of the samples is the triangle's centroid.
    np.testing.assert_allclose(p[p[:, 0] < 2].mean(axis=0), [1 / 3, 1 / 3, 0], atol=0.01)
    np.testing.assert_array_equal(p, sample_surface(v, f, 20_000, seed=3))
    assert not np.array_equal(p, sample_surface(v, f, 20_000, seed=4))
    cube_pts = sample_surface(CUBE_V, CUBE_F, 1000)
    assert point_to_mesh_distance(cube_pts, CUBE_V, CUBE_F).max() < 1e-12


def test_mesh_to_mesh_distance_of_spheres():
    v1, f1 = icosphere(5, 1.0)                                   # 20480 faces
    same = mesh_to_mesh_distance(v1, f1, v1, f1, n=20_000)
    assert same["max"] < 1e-9 and same["chamfer"] < 1e-9
    v2, f2 = icosphere(5, 1.1)
    d = mesh_to_mesh_distance(v1, f1, v2, f2, n=20_000)
    assert set(d) == {"mean", "median", "p95", "max", "chamfer"}
    for key in ("mean", "median", "p95", "max", "chamfer"):
        assert d[key] == pytest.approx(0.1, rel=0.03), key
    assert d["median"] <= d["p95"] <= d["max"]


@pytest.mark.parametrize("v, f, needle", [
    (CUBE_V, np.zeros((0, 3), int), "no faces"),
    (np.zeros((3, 3)), np.array([[0, 1, 2]]), "zero area"),
    (np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0]], float), np.array([[0, 1, 2]]), "zero area"),
])
def test_degenerate_meshes_raise_user_error(v, f, needle):
    with pytest.raises(UserError, match=needle):
        mesh_to_mesh_distance(v, f, CUBE_V, CUBE_F, n=100)
    with pytest.raises(UserError, match=needle):
        mesh_to_mesh_distance(CUBE_V, CUBE_F, v, f, n=100)
