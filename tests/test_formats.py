"""ngp_engine.formats: the numpy-only PLY reader and writer and the transforms.json reader and
writer that the engine and the add-on share. PLY files are written by hand (text, or bytes
with struct), and the expected triangles are worked out by hand in the comments."""
from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest

from ngp_engine.errors import UserError
from ngp_engine.formats.camera import Camera
from ngp_engine.formats.ply import read_ply, write_ply
from ngp_engine.formats.transforms import read_transforms, transforms_document, write_transforms
from ngp_engine.formats.unit_cube import UnitCube


def _no_image_reads(path: Path) -> tuple[int, int]:
    raise AssertionError(f"image_size called for {path}, but every frame has w and h")


# ----------------------------------------------------------------------------- PLY reading

def test_ascii_ply_polygons_float_colours_and_extra_property(tmp_path):
    path = tmp_path / "hand.ply"
    lines = ["ply", "format ascii 1.0", "comment made by hand", "element vertex 6",
             "property float x", "property float y", "property float z", "property float nx",
             "property float red", "property float green", "property float blue",
             "element face 3", "property list uchar int vertex_indices", "end_header",
             "0 0 0 9 0 0.5 1", "1 0 0 9 1 1 1", "1 1 0 9 0.2 0 0", "0 1 0 9 0 0 0",
             "0.5 1.5 0 9 2 -1 0.25", "0 0 1 9 0 0 0",
             "4 0 1 2 3",          # quad     -> (0 1 2) (0 2 3)
             "5 0 1 2 4 3",        # pentagon -> (0 1 2) (0 2 4) (0 4 3)
             "3 5 0 1"]            # triangle -> (5 0 1)
    path.write_bytes("\r\n".join(lines).encode() + b"\r\n")      # Windows line ends too
    v, f, c = read_ply(path)
    assert v.dtype == np.float64 and f.dtype == np.int64 and c.dtype == np.uint8
    np.testing.assert_array_equal(v[4], [0.5, 1.5, 0])
    np.testing.assert_array_equal(f, [[0, 1, 2], [0, 2, 3], [0, 1, 2], [0, 2, 4], [0, 4, 3],
                                      [5, 0, 1]])
    # Float colours * 255, rounded, clipped to [0, 1] first: 0.5 -> 127.5 -> 128 (half to
    # even), 0.2 -> 51, 2 -> 1 -> 255, -1 -> 0, 0.25 -> 63.75 -> 64.
    np.testing.assert_array_equal(c, [[0, 128, 255], [255, 255, 255], [51, 0, 0], [0, 0, 0],
                                      [255, 0, 64], [0, 0, 0]])


def test_big_endian_ply_skips_other_elements_and_list_properties(tmp_path):
    header = ("ply\nformat binary_big_endian 1.0\n"
              "element material 2\nproperty uchar id\nproperty list ushort float weights\n"
              "element vertex 5\nproperty double x\nproperty float y\nproperty short z\n"
              "property uchar red\nproperty uchar green\nproperty uchar blue\n"
              "element face 2\nproperty uchar flags\nproperty list ushort uint vertex_index\n"
              "property list uint8 float32 texcoord\n"
              "element edge 1\nproperty int a\nproperty int b\nend_header\n")
    # Material lists of 2 and 0 values: their rows have different lengths (12 and 3 bytes).
    material = struct.pack(">BHff", 1, 2, 0.5, 0.25) + struct.pack(">BH", 2, 0)
    points = [(0.125, 0.0, 0), (1.0, 0.0, 0), (1.0, 1.0, 0), (0.0, 1.0, 0), (2.0, 0.5, -3)]
    vertex = b"".join(struct.pack(">dfhBBB", x, y, z, 10 * i, 20 * i, 250) for i, (x, y, z)
                      in enumerate(points))
    face = (struct.pack(">BH4IB2f", 7, 4, 0, 1, 2, 3, 2, 0.0, 1.0)        # -> (0 1 2) (0 2 3)
            + struct.pack(">BH4IB2f", 7, 4, 1, 4, 2, 0, 2, 1.0, 0.0))     # -> (1 4 2) (1 2 0)
    edge = struct.pack(">ii", 0, 1)
    path = tmp_path / "big.ply"
    path.write_bytes(header.encode() + material + vertex + face + edge)
    v, f, c = read_ply(path)
    np.testing.assert_array_equal(v, points)
    np.testing.assert_array_equal(f, [[0, 1, 2], [0, 2, 3], [1, 4, 2], [1, 2, 0]])
    np.testing.assert_array_equal(c, [[10 * i, 20 * i, 250] for i in range(5)])


def test_little_endian_ply_with_mixed_polygon_lengths(tmp_path):
    header = ("ply\nformat binary_little_endian 1.0\nelement vertex 5\n"
              "property float32 x\nproperty float32 y\nproperty float32 z\n"
              "element face 3\nproperty list uint8 int16 corner_ids\n"
              "property list uint8 int32 vertex_indices\nend_header\n")
    vertex = np.arange(15, dtype="<f4").tobytes()
    face = (struct.pack("<BB3i", 0, 3, 0, 1, 2)                  # triangle -> (0 1 2)
            + struct.pack("<B2hB5i", 2, 7, 7, 5, 0, 1, 2, 3, 4)  # pentagon -> (0 1 2) (0 2 3) (0 3 4)
            + struct.pack("<BB2i", 0, 2, 4, 3))                 # 2 corners: no area, dropped
    path = tmp_path / "mixed.ply"
    path.write_bytes(header.encode() + vertex + face)
    v, f, c = read_ply(path)
    np.testing.assert_array_equal(v, np.arange(15).reshape(5, 3))
    np.testing.assert_array_equal(f, [[0, 1, 2], [0, 1, 2], [0, 2, 3], [0, 3, 4]])
    assert c is None


# ----------------------------------------------------------------------------- PLY writing

def test_writer_layout_and_bit_exact_round_trip(tmp_path):
    v = np.array([[0.0, -0.0, 1e-45],                       # -0 and the smallest denormal
                  [3.4028235e38, -1.17549435e-38, 0.1],
                  [np.pi, -np.e, 65504.0]], np.float32)
    f = np.array([[0, 1, 2], [2, 1, 0]])
    c = np.array([[0, 1, 2], [253, 254, 255], [7, 8, 9]], np.uint8)
    path = tmp_path / "m.ply"
    write_ply(path, v, f, c)
    data = path.read_bytes()
    header = (b"ply\nformat binary_little_endian 1.0\ncomment written by ngp_engine\n"
              b"element vertex 3\nproperty float x\nproperty float y\nproperty float z\n"
              b"property uchar red\nproperty uchar green\nproperty uchar blue\n"
              b"element face 2\nproperty list uchar int vertex_indices\nend_header\n")
    assert data.startswith(header)
    body = data[len(header):]
    assert len(body) == 3 * (12 + 3) + 2 * (1 + 12)           # packed rows, nothing else
    assert body[:15] == v[0].tobytes() + c[0].tobytes()
    assert body[45:] == b"\x03" + struct.pack("<3i", 0, 1, 2) + b"\x03" + struct.pack("<3i", 2, 1, 0)
    rv, rf, rc = read_ply(path)
    assert rv.dtype == np.float64
    np.testing.assert_array_equal(rv.astype(np.float32).view(np.uint32), v.view(np.uint32))
    np.testing.assert_array_equal(rf, f)
    np.testing.assert_array_equal(rc, c)
    write_ply(path, v, f)                                     # no colours: no colour properties
    assert b"red" not in path.read_bytes()[:300] and read_ply(path)[2] is None
    assert list(tmp_path.iterdir()) == [path]                 # no temporary file left


def test_writer_refuses_bad_arrays():
    with pytest.raises(ValueError, match="out of range"):
        write_ply("never.ply", np.zeros((3, 3)), np.array([[0, 1, 3]]))
    with pytest.raises(ValueError, match=r"expected vertices \[V, 3\]"):
        write_ply("never.ply", np.zeros((3, 2)), np.array([[0, 1, 2]]))


# ----------------------------------------------------------------------------- PLY bad input

_XYZ = b"property float x\nproperty float y\nproperty float z\n"
_FACE = b"element face 1\nproperty list uchar int vertex_indices\n"
BAD_PLY = {
    "not ply": (b"solid cube\n", "not a readable PLY file (it does not start with 'ply')"),
    "no end_header": (b"ply\nformat ascii 1.0\nelement vertex 0\n", "(no end_header line)"),
    "no format": (b"ply\nelement vertex 0\n" + _XYZ + b"end_header\n", "(no 'format' line)"),
    "format 2.0": (b"ply\nformat ascii 2.0\nend_header\n", "unexpected header line 'format ascii 2.0'"),
    "property first": (b"ply\nformat ascii 1.0\nproperty float x\nend_header\n",
                       "unexpected header line 'property float x'"),
    "float count": (b"ply\nformat ascii 1.0\nelement face 1\nproperty list float int v\nend_header\n",
                    "bad list types in 'property list float int v'"),
    "unknown type": (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty quad x\nend_header\n",
                     "bad property line 'property quad x'"),
    "twice": (b"ply\nformat ascii 1.0\nelement vertex 1\n" + _XYZ + b"property float y\nend_header\n",
              "property 'y' appears twice in element 'vertex'"),
    "not ascii": (b"ply\nformat ascii 1.0\ncomment \xff\nend_header\n", "the header is not ASCII text"),
    "short binary": (b"ply\nformat binary_little_endian 1.0\nelement vertex 2\n" + _XYZ
                     + b"end_header\n" + bytes(20), "the file ends inside element 'vertex'"),
    "short list": (b"ply\nformat binary_little_endian 1.0\nelement vertex 3\n" + _XYZ + _FACE
                   + b"end_header\n" + bytes(36) + b"\x03" + bytes(8),
                   "the file ends inside element 'face'"),
    "negative count": (b"ply\nformat binary_little_endian 1.0\nelement vertex 0\n" + _XYZ
                       + b"element face 1\nproperty list char int vertex_indices\nend_header\n\xff",
                       "negative list length in element 'face'"),
    "ascii count": (b"ply\nformat ascii 1.0\nelement vertex 0\n" + _XYZ + _FACE
                    + b"end_header\n3.5 0 1 2\n", "bad or missing list length in element 'face'"),
    "ascii word": (b"ply\nformat ascii 1.0\nelement vertex 1\n" + _XYZ + b"end_header\n0 zero 0\n",
                   "a value of element 'vertex' is not a number"),
    "ascii short": (b"ply\nformat ascii 1.0\nelement vertex 2\n" + _XYZ + b"end_header\n0 0 0\n1 1\n",
                    "the file ends inside element 'vertex'"),
    "no xyz": (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nend_header\n0\n",
               "not a mesh (PLY vertices have no x, y, z)"),
    "no vertex": (b"ply\nformat ascii 1.0\nelement point 1\n" + _XYZ + b"end_header\n0 0 0\n",
                  "not a mesh (PLY has no 'vertex' element)"),
    "no faces": (b"ply\nformat ascii 1.0\nelement vertex 1\n" + _XYZ + b"end_header\n0 0 0\n",
                 "the mesh has no faces"),
    "index range": (b"ply\nformat ascii 1.0\nelement vertex 3\n" + _XYZ + _FACE
                    + b"end_header\n0 0 0\n1 0 0\n0 1 0\n3 0 1 3\n",
                    "face index out of range (4 for 3 vertices, 1-based)"),
    "nan": (b"ply\nformat ascii 1.0\nelement vertex 3\n" + _XYZ + _FACE
            + b"end_header\n0 0 0\n1 nan 0\n0 1 0\n3 0 1 2\n", "vertex 2 is NaN or infinite"),
}


@pytest.mark.parametrize("case", list(BAD_PLY))
def test_bad_ply_is_one_line_user_error_naming_the_file(tmp_path, case):
    content, needle = BAD_PLY[case]
    path = tmp_path / "bad.ply"
    path.write_bytes(content)
    with pytest.raises(UserError) as err:
        read_ply(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: ") and needle in msg and "\n" not in msg, msg


def test_unreadable_ply_path(tmp_path):
    with pytest.raises(UserError, match=r"folder.ply: cannot read \("):
        read_ply(_mk_dir(tmp_path / "folder.ply"))


def _mk_dir(path: Path) -> Path:
    path.mkdir()
    return path


# ----------------------------------------------------------------------------- transforms

# Camera 2 carries object scale 2 in its matrix (as Blender's matrix_world may).
M0 = [[1.0, 0.0, 0.0, 0.5], [0.0, 1.0, 0.0, -1.0], [0.0, 0.0, 1.0, 4.0], [0.0, 0.0, 0.0, 1.0]]
M1 = [[0.0, 0.0, 1.0, 4.0], [1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.1], [0.0, 0.0, 0.0, 1.0]]
M2 = [[0.0, -2.0, 0.0, 1.0], [2.0, 0.0, 0.0, 2.0], [0.0, 0.0, 2.0, 3.0], [0.0, 0.0, 0.0, 1.0]]


def test_transforms_round_trip(tmp_path):
    cams = [Camera(M0, 40, 30, 40.0, 40.0, 20.0, 15.0),
            Camera(M1, 40, 30, 50.0, 40.0, 21.5, 15.0),      # own fl_x and cx
            Camera(M2, 80, 60, 40.0, 40.0, 20.0, 15.0)]      # own w, h
    names = ["images/0.png", "images/1.png", "images/2.png"]
    cube = UnitCube(0.25, (0.1, 0.2, 0.3), 4.0)
    doc = transforms_document(list(zip(cams, names)), cube)
    # Top level = camera 0: angle_x = 2 atan(0.5 * 40 / 40), angle_y = 2 atan(0.5 * 30 / 40).
    assert doc["camera_angle_x"] == 2 * math.atan(0.5) and doc["camera_angle_y"] == 2 * math.atan(0.375)
    assert {k: doc[k] for k in ("fl_x", "fl_y", "cx", "cy", "w", "h")} == dict(
        fl_x=40.0, fl_y=40.0, cx=20.0, cy=15.0, w=40, h=30)
    assert (doc["scale"], doc["offset"], doc["aabb_scale"]) == (0.25, [0.1, 0.2, 0.3], 4)
    assert [sorted(set(fr) - {"file_path", "transform_matrix"}) for fr in doc["frames"]] == [
        [], ["cx", "fl_x"], ["h", "w"]]

    path = tmp_path / "ds" / "transforms.json"
    write_transforms(path, doc)
    assert json.loads(path.read_text()) == doc and list(path.parent.iterdir()) == [path]
    for name in names:
        (path.parent / name).parent.mkdir(exist_ok=True)
        (path.parent / name).write_bytes(b"")                 # only found, never opened
    read = read_transforms(path.parent, image_size=_no_image_reads)
    assert [fr.camera for fr in read.frames] == cams
    assert read.transform == cube and read.source == path.resolve()
    assert [fr.file_path for fr in read.frames] == names
    assert [fr.image for fr in read.frames] == [(path.parent / n).resolve() for n in names]
    assert read.frames[1].where == f"{path.resolve()}: frame 1 ('images/1.png')"
    np.testing.assert_allclose(read.frames[2].camera.c2w[:3, :3], np.array(M2)[:3, :3] / 2)


def test_image_size_is_asked_only_where_needed(tmp_path):
    for name in ("a.png", "b.png"):
        (tmp_path / name).write_bytes(b"")
    eye = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"fl_x": 10, "frames": [
        {"file_path": "a.png", "transform_matrix": eye, "w": 12, "h": 8},
        {"file_path": "b.png", "transform_matrix": eye}]}))
    asked: list[str] = []

    def size(p: Path) -> tuple[int, int]:
        asked.append(p.name)
        return 10, 8

    frames = read_transforms(path, image_size=size).frames
    assert asked == ["b.png"] and [(f.camera.w, f.camera.h) for f in frames] == [(12, 8), (10, 8)]
    assert frames[1].camera.principal_point == (5.0, 4.0)          # the image centre
    with pytest.raises(UserError, match=r"frame 0 \('a.png'\): image a.png is 10x8 but w, h say 12x8"):
        read_transforms(path, image_size=size, check_sizes=True)


def test_transforms_new_error_paths(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    eye = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"fl_x": 10, "frames": [{"file_path": "a.png", "transform_matrix": eye}]}))

    def broken(p: Path) -> tuple[int, int]:
        raise OSError("cannot identify image file")

    with pytest.raises(UserError, match=r"frame 0 \('a.png'\): cannot read image .*a.png "
                                        r"\(cannot identify image file\)$"):
        read_transforms(path, image_size=broken)
    path.write_text(json.dumps({"fl_x": 10, "w": 20000, "h": 10,
                                "frames": [{"file_path": "a.png", "transform_matrix": eye}]}))
    with pytest.raises(UserError, match=r"t.json: frame 0 \('a.png'\): w: 20000 must be in 1..16384$"):
        read_transforms(path, image_size=_no_image_reads)
    with pytest.raises(UserError, match="no cameras to export"):
        transforms_document([], UnitCube(1.0, (0.5, 0.5, 0.5)))


def test_cameras_only_import_needs_no_images_where_w_and_h_are_given(tmp_path):
    eye = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"fl_x": 10, "w": 12, "h": 8, "frames": [
        {"file_path": "shots\\a", "transform_matrix": eye}]}))
    with pytest.raises(UserError, match=r"frame 0 \('shots\\a'\): image not found"):
        read_transforms(path, image_size=_no_image_reads)              # a dataset needs its images
    frame = read_transforms(path, image_size=_no_image_reads, images_required=False).frames[0]
    assert (frame.camera.w, frame.camera.h, frame.camera.fx) == (12, 8, 10.0)
    assert frame.image == tmp_path / "shots" / "a" and frame.file_path == "shots\\a"
    # Without w and h the size must come from the image, so it must be there.
    path.write_text(json.dumps({"fl_x": 10, "frames": [{"file_path": "a.png", "transform_matrix": eye}]}))
    with pytest.raises(UserError, match="image not found"):
        read_transforms(path, image_size=_no_image_reads, images_required=False)


# ----------------------------------------------------------------------------- lenses in transforms.json

OPENCV_LENS = dict(camera_model="OPENCV", k1=-0.12, k2=0.03, p1=1e-3, p2=-5e-4)
FISHEYE_LENS = dict(camera_model="OPENCV_FISHEYE", k1=0.05, k2=-0.01, k3=0.002, k4=-5e-4)


@pytest.mark.parametrize("first", [OPENCV_LENS, {}], ids=["distorted first", "pinhole first"])
def test_transforms_round_trip_with_lenses(tmp_path, first):
    cams = [Camera(M0, 40, 30, 40.0, 40.0, 20.0, 15.0, **first),
            Camera(M1, 40, 30, 40.0, 40.0, 20.0, 15.0, **dict(OPENCV_LENS, k1=-0.1)),   # own k1
            Camera(M2, 40, 30, 40.0, 40.0, 20.0, 15.0, **FISHEYE_LENS),
            Camera(M0, 40, 30, 40.0, 40.0, 20.0, 15.0)]                                # a pinhole
    names = [f"images/{i}.png" for i in range(len(cams))]
    doc = transforms_document(list(zip(cams, names)), UnitCube(0.25, (0.1, 0.2, 0.3), 4.0))
    if first:
        assert {k: doc[k] for k in ("camera_model", "k1", "k2", "p1", "p2", "is_fisheye")} == dict(
            camera_model="OPENCV", k1=-0.12, k2=0.03, p1=1e-3, p2=-5e-4, is_fisheye=False)
        assert sorted(set(doc["frames"][1]) - {"file_path", "transform_matrix"}) == ["k1"]
    else:
        assert "camera_model" not in doc and "k1" not in doc
    path = tmp_path / "transforms.json"
    write_transforms(path, doc)
    for name in names:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    read = read_transforms(path, image_size=_no_image_reads)
    assert [fr.camera for fr in read.frames] == cams
    # ... and again: what is written from what was read is the same document.
    assert transforms_document([(fr.camera, fr.file_path) for fr in read.frames],
                               read.transform) == doc


def _lens_doc(tmp_path: Path, top: dict, frames: list[dict]) -> Path:
    eye = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
    for i in range(len(frames)):
        (tmp_path / f"{i}.png").write_bytes(b"")
    path = tmp_path / "transforms.json"
    path.write_text(json.dumps({"fl_x": 500, "w": 640, "h": 480, **top, "frames": [
        {"file_path": f"{i}.png", "transform_matrix": eye, **f} for i, f in enumerate(frames)]}))
    return path


def test_lens_keys_are_read_at_the_top_level_and_per_frame(tmp_path):
    # instant-ngp's colmap2nerf: k1 k2 p1 p2 and is_fisheye, no camera_model -> OPENCV.
    path = _lens_doc(tmp_path, {"k1": -0.1, "k2": 0.02, "p1": 0.0, "p2": 0.001, "is_fisheye": False},
                     [{}, {"k1": -0.05}, {"is_fisheye": True, "p2": 0.0}, {"camera_model": "PINHOLE", "k1": 0,
                                                                            "k2": 0, "p2": 0}])
    cams = [fr.camera for fr in read_transforms(path, image_size=_no_image_reads).frames]
    assert [(c.camera_model, c.k1, c.k2, c.p2) for c in cams] == [
        ("OPENCV", -0.1, 0.02, 0.001), ("OPENCV", -0.05, 0.02, 0.001),
        ("OPENCV_FISHEYE", -0.1, 0.02, 0.0), ("PINHOLE", 0.0, 0.0, 0.0)]
    # nerfstudio / COLMAP names.
    for name, model in (("SIMPLE_RADIAL", "OPENCV"), ("RADIAL", "OPENCV"), ("SIMPLE_PINHOLE", "PINHOLE"),
                        ("OPENCV_FISHEYE", "OPENCV_FISHEYE")):
        path = _lens_doc(tmp_path, {"camera_model": name, "k1": 0.01 if model != "PINHOLE" else 0}, [{}])
        assert read_transforms(path, image_size=_no_image_reads).frames[0].camera.camera_model == model


@pytest.mark.parametrize("top, frame, message", [
    ({"camera_model": "FOV"}, {}, r"transforms.json: camera_model 'FOV' is not supported \(supported: PINHOLE, "
                                  r"SIMPLE_PINHOLE, OPENCV, SIMPLE_RADIAL, RADIAL, OPENCV_FISHEYE"),
    ({"k4": 0.01}, {}, r"frame 0 \('0.png'\): 'k4' = 0.01 is a fisheye coefficient"),
    ({"camera_model": "OPENCV_FISHEYE", "is_fisheye": False}, {}, r"contradicts 'is_fisheye' = false"),
    ({"is_fisheye": "yes"}, {}, r"'is_fisheye' must be true or false, got 'yes'"),
    ({}, {"k1": -0.9}, r"frame 0 \('0.png'\): k1 = -0.9 folds the image at \d+% of the way to the corner"),
    ({"k2": float("inf")}, {}, r"transforms.json: 'k2' must be a finite number, got inf"),
])
def test_bad_lens_keys(tmp_path, top, frame, message):
    path = _lens_doc(tmp_path, top, [frame])
    with pytest.raises(UserError, match=message) as err:
        read_transforms(path, image_size=_no_image_reads)
    assert "\n" not in str(err.value)


def test_frames_with_missing_images_are_skipped_on_request(tmp_path):
    path = _lens_doc(tmp_path, {}, [{}, {}, {}])
    (tmp_path / "1.png").unlink()
    (tmp_path / "2.png").unlink()
    with pytest.raises(UserError, match=r"frame 1 \('1.png'\): image not found"):
        read_transforms(path, image_size=_no_image_reads)
    read = read_transforms(path, image_size=_no_image_reads, skip_missing=True)
    assert [fr.file_path for fr in read.frames] == ["0.png"]
    assert read.skipped == ("1.png", "2.png") and read.n_listed == 3
    (tmp_path / "0.png").unlink()
    with pytest.raises(UserError, match=r"transforms.json: none of its 3 frames has its image file "
                                        r"\(first missing: 0.png\)$"):
        read_transforms(path, image_size=_no_image_reads, skip_missing=True)
