"""NeRF dataset reading: real files written with Pillow and json, numbers worked by hand."""
from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ngp_engine.formats.camera import stack_cameras
from ngp_engine.formats.unit_cube import UnitCube
from ngp_engine.render.occupancy_grid import n_cascades_for
from ngp_engine.data.transforms import load_nerf_dataset
from ngp_engine.formats.transforms import dataset_splits
from ngp_engine.errors import UserError

# tan(angle / 2) = 0.5, so fl = 0.5 * W / 0.5 = W exactly.
ANGLE_FL_EQUALS_W = 2 * math.atan(0.5)

# Camera at (4, 0, 0) looking at the origin (down world -X), +Z up: camera X = world +Y,
# camera Y = world +Z, camera Z = world +X (det = +1). Columns scaled by 2 (object scale).
EYE = [[0, 0, 2, 4], [2, 0, 0, 0], [0, 2, 0, 0], [0, 0, 0, 1]]


def _pattern(h: int, w: int, c: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)


def _write(path: Path, doc: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def _synthetic(root: Path, split: str = "train", n: int = 3, w: int = 40, h: int = 30) -> Path:
    """NeRF-synthetic style: RGBA PNGs, file paths without extension, camera_angle_x."""
    frames = []
    for i in range(n):
        Image.fromarray(_pattern(h, w, 4, i)).save(_mk(root / split / f"r_{i}.png"))
        frames.append({"file_path": f"./{split}/r_{i}", "rotation": 0.0125,
                       "transform_matrix": [[1, 0, 0, i], [0, 1, 0, 0], [0, 0, 1, 4], [0, 0, 0, 1]]})
    _write(root / f"transforms_{split}.json", {"camera_angle_x": ANGLE_FL_EQUALS_W, "frames": frames})
    return root


def _mk(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _ngp(root: Path, n: int = 3, w: int = 160, h: int = 100, **top) -> Path:
    """instant-ngp style transforms.json: JPG RGB images, explicit intrinsics and transform."""
    frames = []
    for i in range(n):
        Image.fromarray(_pattern(h, w, 3, i)).save(_mk(root / "images" / f"{i:04d}.jpg"), quality=95)
        frames.append({"file_path": f"images/{i:04d}.jpg", "sharpness": 100.0, "transform_matrix": EYE})
    doc = {"fl_x": 120.0, "fl_y": 90.0, "cx": 70.0, "cy": 45.0, "w": w, "h": h,
           "k1": 0, "k2": 0, "p1": 0, "p2": 0, "is_fisheye": False, "camera_model": "OPENCV",
           "aabb_scale": 4, "scale": 0.5, "offset": [0.1, 0.2, 0.3], "frames": frames, **top}
    return _write(root / "transforms.json", doc)


def test_nerf_synthetic_folder_loads(tmp_path):
    _synthetic(tmp_path, "train")
    _synthetic(tmp_path, "test", n=2)
    ds = load_nerf_dataset(tmp_path)
    assert ds.images.shape == (3, 30, 40, 4) and ds.images.dtype == np.uint8 and ds.has_alpha
    assert np.array_equal(ds.images[1], _pattern(30, 40, 4, 1))        # PNG, straight alpha
    cams = ds.cameras
    assert len(cams) == 3 and {(c.w, c.h) for c in cams} == {(40, 30)}
    c2w, k = stack_cameras(cams)
    assert c2w.shape == (3, 4, 4) and c2w.dtype == np.float64
    np.testing.assert_allclose(k[:, 0], 40.0)          # 0.5 * 40 / tan(atan(0.5)) = 40
    np.testing.assert_allclose(k[:, 1], 40.0)          # no camera_angle_y: square pixels
    np.testing.assert_allclose(k[:, 2], 20.0)          # W / 2
    np.testing.assert_allclose(k[:, 3], 15.0)          # H / 2
    np.testing.assert_allclose(c2w[2, :3, 3], [2, 0, 4])
    assert ds.file_paths[0] == (tmp_path / "train" / "r_0.png").resolve()
    assert ds.source == (tmp_path / "transforms_train.json").resolve()
    # Defaults: instant-ngp's scale 0.33, offset 0.5, aabb_scale 1.
    assert ds.transform == UnitCube(0.33, (0.5, 0.5, 0.5), 1.0)
    assert len(load_nerf_dataset(tmp_path, "test").cameras) == 2
    assert dataset_splits(tmp_path) == ["train", "test"]


def test_instant_ngp_transforms_json(tmp_path):
    src = _ngp(tmp_path)
    doc = json.loads(src.read_text())
    doc["frames"][1]["fl_x"] = 150.0                   # per-frame override of one intrinsic
    _write(src, doc)
    ds = load_nerf_dataset(src, split="ignored for a file")
    assert ds.images.shape == (3, 100, 160, 3) and not ds.has_alpha
    with Image.open(tmp_path / "images" / "0002.jpg") as jpg:              # decoded as Pillow does
        assert np.array_equal(ds.images[2], np.asarray(jpg))
    k = stack_cameras(ds.cameras)[1]
    np.testing.assert_allclose(k[:, 0], [120, 150, 120])
    np.testing.assert_allclose(k[:, 1], 90)
    np.testing.assert_allclose(k[:, 2], 70)
    np.testing.assert_allclose(k[:, 3], 45)
    assert load_nerf_dataset(tmp_path).source == src.resolve()     # folder -> transforms.json
    assert dataset_splits(tmp_path) == ["train"]

    t = ds.transform
    assert (t.world_to_unit, t.offset, t.aabb_scale) == (0.5, (0.1, 0.2, 0.3), 4.0)
    # instant-ngp: rv = pos * scale + offset, then axes cycled to (rv.y, rv.z, rv.x); the json
    # offset is added before the cycle, so it is in world order already:
    # world (1, 2, 3) -> (0.5 + 0.1, 1.0 + 0.2, 1.5 + 0.3) = (0.6, 1.2, 1.8);
    # instant-ngp's internal point would be (1.2, 1.8, 0.6).
    np.testing.assert_allclose(t.to_unit(np.array([1.0, 2.0, 3.0])), [0.6, 1.2, 1.8])
    pts = np.random.default_rng(0).normal(size=(5, 7, 3))
    np.testing.assert_allclose(t.to_world(t.to_unit(pts)), pts, atol=1e-12)
    # aabb_scale 4: unit box [0.5 - 2, 0.5 + 2] = [-1.5, 2.5] on every axis;
    # world = (u - offset) / 0.5: min (-3.2, -3.4, -3.6), max (4.8, 4.6, 4.4).
    np.testing.assert_allclose(t.box_unit()[0], -1.5)
    np.testing.assert_allclose(t.box_unit()[1], 2.5)
    np.testing.assert_allclose(t.box_world()[0], [-3.2, -3.4, -3.6])
    np.testing.assert_allclose(t.box_world()[1], [4.8, 4.6, 4.4])
    assert [n_cascades_for(a) for a in (1, 2, 16, 128)] == [1, 2, 5, 8]
    assert UnitCube.from_dict(json.loads(json.dumps(t.to_dict()))) == t
    with pytest.raises(UserError, match="unknown key 'shift'"):
        UnitCube.from_dict({**t.to_dict(), "shift": 1})
    with pytest.raises(UserError, match="power of two"):
        UnitCube.from_dict({**t.to_dict(), "aabb_scale": 3})


def test_camera_projection_and_ray_round_trip(tmp_path):
    cam = load_nerf_dataset(_ngp(tmp_path, n=1)).cameras[0]
    # Object scale (2) removed: rotation columns have unit length, position kept.
    np.testing.assert_allclose(cam.c2w, [[0, 0, 1, 4], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]])
    p = np.array([1.0, 0.5, -0.75])
    # p - eye = (-3, 0.5, -0.75); camera coords = (dot X, dot Y, dot Z) = (0.5, -0.75, -3).
    # u = cx + fx * 0.5 / 3 = 70 + 120 / 6 = 90; v = cy - fy * (-0.75) / 3 = 45 + 22.5 = 67.5.
    uv = cam.project(p[None])
    np.testing.assert_allclose(uv, [[90.0, 67.5]])
    # The renderer's ray: d_cam = ((u - cx) / fx, -(v - cy) / fy, -1) = (1/6, -0.25, -1);
    # d_world = R d_cam = (-1, 1/6, -0.25); eye + 3 * d_world = (1, 0.5, -0.75) = p.
    (u, v), c2w = uv[0], cam.c2w
    fx, fy, cx, cy = cam.intrinsics
    d_cam = np.array([(u - cx) / fx, -(v - cy) / fy, -1.0])
    d_world = c2w[:3, :3] @ d_cam
    np.testing.assert_allclose(d_world, [-1, 1 / 6, -0.25])
    to_p = p - c2w[:3, 3]
    np.testing.assert_allclose(np.cross(d_world, to_p), 0, atol=1e-12)   # p lies on the ray
    assert to_p @ d_world > 0                                             # in front of the camera
    assert np.isnan(cam.project(np.array([[8.0, 0, 0]]))).all()           # behind: no pixel
    # The camera's own rays (numpy) agree with the renderer's convention: the ray through
    # (u, v) passes through p.
    o, d = cam.rays(np.array([u]), np.array([v]))
    np.testing.assert_allclose(o[0], c2w[:3, 3])
    np.testing.assert_allclose(np.cross(d[0], to_p), 0, atol=1e-12)


def test_mixed_rgb_rgba_grey_and_16_bit_become_rgba(tmp_path):
    rgb, rgba = _pattern(8, 6, 3, 1), _pattern(8, 6, 4, 2)
    grey16 = (np.arange(48, dtype=np.uint16).reshape(8, 6) * 1365)       # up to 64155
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(rgba).save(tmp_path / "b.png")
    Image.fromarray(grey16).save(tmp_path / "c.png")                     # 16-bit grey PNG
    Image.fromarray(rgba[..., 0], "L").convert("P").save(tmp_path / "d.png")   # palette, no alpha
    eye = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
    ds = load_nerf_dataset(_write(tmp_path / "t.json", {"fl_x": 10, "frames": [
        {"file_path": n, "transform_matrix": eye} for n in ("a.png", "b", "c", "d")]}))
    assert ds.images.shape == (4, 8, 6, 4)
    assert np.array_equal(ds.images[0, ..., :3], rgb) and (ds.images[0, ..., 3] == 255).all()
    assert np.array_equal(ds.images[1], rgba)
    expect = np.rint(grey16 * (255 / 65535)).astype(np.uint8)             # 16 -> 8 bit
    assert np.array_equal(ds.images[2, ..., 1], expect) and (ds.images[2, ..., 3] == 255).all()
    assert np.array_equal(ds.images[3, ..., 0], rgba[..., 0])


def test_load_is_fast(tmp_path):
    n = 120
    img = _pattern(160, 160, 4, 0)
    for i in range(n):
        Image.fromarray(img).save(_mk(tmp_path / "train" / f"r_{i}.png"), compress_level=1)
    frames = [{"file_path": f"train/r_{i}", "transform_matrix": EYE} for i in range(n)]
    _write(tmp_path / "transforms_train.json", {"camera_angle_x": 0.69, "frames": frames})
    start = time.perf_counter()
    ds = load_nerf_dataset(tmp_path)
    elapsed = time.perf_counter() - start
    assert ds.images.shape == (n, 160, 160, 4) and ds.images.flags.c_contiguous
    assert elapsed < 3.0, elapsed


# -- bad input: one-line UserErrors naming the file and the frame ----------------------------

def _edit(doc: dict, case: str, root: Path) -> None:
    f = doc["frames"]
    if case == "wrong size":
        doc["w"] = 200
    elif case == "nan matrix":
        f[2]["transform_matrix"] = [[float("nan"), 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
    elif case == "empty frames":
        doc["frames"] = []
    elif case == "unknown top key":
        doc["xyz"] = 1
    elif case == "unknown frame key":
        f[2]["xyz"] = 1
    elif case == "escape":
        Image.fromarray(_pattern(100, 160, 3, 0)).save(root.parent / "outside.png")
        f[1]["file_path"] = "../outside.png"
    elif case == "k1 folds":
        doc["k1"] = -0.9
    elif case == "k1 nan":
        f[1]["k1"] = float("nan")
    elif case == "k4 on opencv":
        doc["k4"] = 0.01
    elif case == "k1 on a pinhole":
        doc["camera_model"] = "SIMPLE_PINHOLE"
        doc["k1"] = 0.01
    elif case == "p1 on a fisheye":
        doc["camera_model"] = "OPENCV_FISHEYE"
        doc["is_fisheye"] = True
        f[2]["p1"] = 0.01
    elif case == "string fl_x":
        f[1]["fl_x"] = "120"
    elif case == "matrix 3x4":
        f[0]["transform_matrix"] = EYE[:3]
    elif case == "aabb_scale 3":
        doc["aabb_scale"] = 3
    elif case == "fisheye contradicts":
        doc["is_fisheye"] = True
    elif case == "sizes differ":
        Image.fromarray(_pattern(50, 80, 3, 0)).save(root / "images" / "0001.jpg")
        del doc["w"], doc["h"]
    elif case == "camera model":
        doc["camera_model"] = "EQUIRECTANGULAR"


BAD = {  # case -> regex the message must match after the file name
    "wrong size": r"frame 0 .*is 160x100 but w, h say 200x100",
    "nan matrix": r"frame 2 .*'transform_matrix' has a non-finite value",
    "empty frames": r"'frames' is empty",
    "unknown top key": r": unknown key 'xyz' \(allowed: camera_angle_x",
    "unknown frame key": r"frame 2 \('images/0002.jpg'\): unknown key 'xyz'",
    "escape": r"frame 1 \('../outside.png'\): image path escapes the dataset folder",
    "k1 folds": r"frame 0 .*: k1 = -0.9 folds the image at \d+% of the way to the corner: not a valid lens",
    "k1 nan": r"frame 1 .*'k1' must be a finite number, got nan",
    "k4 on opencv": r"frame 0 .*'k4' = 0.01 is a fisheye coefficient",
    "k1 on a pinhole": r"frame 0 .*'k1' = 0.01 is a distortion coefficient but camera_model is a pinhole",
    "p1 on a fisheye": r"frame 2 .*p1: 0.01 is a tangential coefficient \(OPENCV_FISHEYE has k1..k4 only\)",
    "string fl_x": r"frame 1 .*'fl_x' must be a finite number, got '120'",
    "matrix 3x4": r"frame 0 .*'transform_matrix' must be a 4x4",
    "aabb_scale 3": r"'aabb_scale' must be a power of two",
    "fisheye contradicts": r"camera_model 'OPENCV' contradicts 'is_fisheye' = true",
    "sizes differ": r"frame 1 .*image is 80x50 but frame 0's is 160x100",
    "camera model": r"camera_model 'EQUIRECTANGULAR' is not supported \(supported: PINHOLE, SIMPLE_PINHOLE, OPENCV",
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_a_user_error_naming_file_and_frame(tmp_path, case):
    root = tmp_path / "ds"
    src = _ngp(root)
    doc = json.loads(src.read_text())
    _edit(doc, case, root)
    _write(src, doc)
    with pytest.raises(UserError) as err:
        load_nerf_dataset(root)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(str(src.resolve()) + ": "), msg
    assert re.search(BAD[case], msg), msg


def test_not_json_and_missing_split(tmp_path):
    bad = tmp_path / "transforms.json"
    bad.write_text('{"frames": [\n  {"file_path": "a",}\n]}')
    with pytest.raises(UserError, match=r"transforms.json: not valid JSON \(line 2, column"):
        load_nerf_dataset(bad)
    _synthetic(tmp_path / "syn")
    with pytest.raises(UserError, match=r"syn: no 'test' split: looked for transforms_test.json$"):
        load_nerf_dataset(tmp_path / "syn", "test")
    _ngp(tmp_path / "ngp")
    with pytest.raises(UserError, match=r"looked for transforms_test.json \(transforms.json holds"):
        load_nerf_dataset(tmp_path / "ngp", "test")
    with pytest.raises(UserError, match="no such file or folder"):
        load_nerf_dataset(tmp_path / "nowhere")


# -- real captures: lens keys, missing frames, downscaling on load ---------------------------

def _fox_like(root: Path) -> Path:
    """An instant-ngp colmap2nerf-style transforms.json: OPENCV coefficients at the top level
    (no camera_model), one frame with its own k1, and 2 of 5 frames without their image."""
    src = _ngp(root, n=5, k1=-0.08, k2=0.01, p1=5e-4, p2=-2e-4)
    del_ = [1, 3]
    doc = json.loads(src.read_text())
    del doc["camera_model"]
    doc["frames"][2]["k1"] = -0.05
    for i in del_:
        (root / doc["frames"][i]["file_path"]).unlink()
    return _write(src, doc)


def test_fox_like_capture_loads_with_its_lens_and_skips_missing_frames(tmp_path, caplog):
    src = _fox_like(tmp_path)
    with caplog.at_level("DEBUG", logger="ngp_engine.data.transforms"):
        ds = load_nerf_dataset(tmp_path)
    assert [p.name for p in ds.file_paths] == ["0000.jpg", "0002.jpg", "0004.jpg"]
    assert ds.skipped == ("images/0001.jpg", "images/0003.jpg")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [f"{src.resolve()}: 2 of 5 frames skipped: their image file is missing "
                        "(first: images/0001.jpg)"]
    infos = [r.getMessage() for r in caplog.records if r.levelname == "DEBUG"]
    assert infos == ["transforms.json: loaded 3 images 160x100 (0 MB)"]
    assert ds.nbytes == 3 * 100 * 160 * 3
    cams = ds.cameras
    assert [(c.camera_model, c.k1, c.k2, c.p1, c.p2) for c in cams] == [
        ("OPENCV", -0.08, 0.01, 5e-4, -2e-4), ("OPENCV", -0.05, 0.01, 5e-4, -2e-4),
        ("OPENCV", -0.08, 0.01, 5e-4, -2e-4)]
    # The add-on's reader call (no skipping) still names the first missing image.
    with pytest.raises(UserError, match=r"frame 1 \('images/0001.jpg'\): image not found"):
        load_nerf_dataset(tmp_path, skip_missing=False)


def test_no_image_left_is_an_error_naming_the_file(tmp_path):
    src = _ngp(tmp_path, n=2)
    for f in (tmp_path / "images").iterdir():
        f.unlink()
    with pytest.raises(UserError, match=re.escape(f"{src.resolve()}: none of its 2 frames has its image "
                                                  "file (first missing: images/0000.jpg)")):
        load_nerf_dataset(tmp_path)


def test_max_image_size_downscales_images_and_cameras(tmp_path, caplog):
    _fox_like(tmp_path)
    full = load_nerf_dataset(tmp_path)
    with caplog.at_level("DEBUG", logger="ngp_engine.data.transforms"):
        small = load_nerf_dataset(tmp_path, max_image_size=40)
    assert small.images.shape == (3, 25, 40, 3) and small.images.dtype == np.uint8
    assert "loaded 3 images 40x25" in caplog.text
    for a, b in zip(full.cameras, small.cameras):
        assert b == a.resized(40, 25)                     # intrinsics x 1/4, lens kept
        assert b.lens() == a.lens() and b.fx == a.fx / 4 and b.principal_point == (17.5, 11.25)
    # The decoded image is the full one averaged down (Lanczos of a JPEG draft): close to a
    # 4x4 box average of random noise, far from any single pixel.
    box = full.images[0].reshape(25, 4, 40, 4, 3).mean(axis=(1, 3))
    assert np.abs(small.images[0].astype(float) - box).mean() < 12
    assert load_nerf_dataset(tmp_path, max_image_size=400).images.shape == full.images.shape
    with pytest.raises(UserError, match="max_image_size: 0 must be >= 1"):
        load_nerf_dataset(tmp_path, max_image_size=0)


def test_holdout_every_splits_the_training_file(tmp_path):
    """Frames 0, n, 2n, ... of the json's list are the holdout split and training reads the
    others; both are the full load's images and cameras. A missing image counts in the
    list, so it moves no other frame across the split."""
    src = _ngp(tmp_path, n=10)
    doc = json.loads(src.read_text())
    for i, f in enumerate(doc["frames"]):          # tell the frames' cameras apart
        f["transform_matrix"] = [[1, 0, 0, i], [0, 1, 0, 0], [0, 0, 1, 4], [0, 0, 0, 1]]
    _write(src, doc)
    names = lambda ds: [p.name for p in ds.file_paths]          # noqa: E731
    before = load_nerf_dataset(tmp_path, "holdout", holdout_every=4)
    (tmp_path / "images" / "0003.jpg").unlink()   # 9 frames read: 0 1 2 4 5 6 7 8 9
    full = load_nerf_dataset(tmp_path)
    held = load_nerf_dataset(tmp_path, "holdout", holdout_every=4)
    train = load_nerf_dataset(tmp_path, holdout_every=4)
    assert names(before) == names(held) == ["0000.jpg", "0004.jpg", "0008.jpg"]
    assert names(train) == ["0001.jpg", "0002.jpg", "0005.jpg", "0006.jpg", "0007.jpg", "0009.jpg"]
    for part, rows in ((held, [0, 3, 7]), (train, [1, 2, 4, 5, 6, 8])):
        np.testing.assert_array_equal(part.images, full.images[rows])
        assert part.cameras == [full.cameras[r] for r in rows]
        assert part.source == full.source and part.skipped == full.skipped == ("images/0003.jpg",)
    # Without holdout_every the file trains on everything, and there is nothing held out.
    assert len(load_nerf_dataset(tmp_path, holdout_every=None).cameras) == 9
    with pytest.raises(UserError, match="split 'holdout': this run held out no frames .*--holdout-every"):
        load_nerf_dataset(tmp_path, "holdout")
    with pytest.raises(UserError, match="holdout_every: 1 must be >= 2"):
        load_nerf_dataset(tmp_path, holdout_every=1)
    one = _ngp(tmp_path / "one", n=1)
    with pytest.raises(UserError, match=re.escape(f"{one.resolve()}: holding out frames 0, 8, ... "
                                                  "(holdout_every 8) of its 1 frames leaves none to "
                                                  "train on")):
        load_nerf_dataset(one, holdout_every=8)
    (tmp_path / "images" / "0000.jpg").unlink()
    with pytest.raises(UserError, match=re.escape("(holdout_every 10) of its 10 frames leaves none to "
                                                  "evaluate on (2 without an image)")):
        load_nerf_dataset(tmp_path, "holdout", holdout_every=10)


def test_mixed_sizes_suggest_max_image_size(tmp_path):
    src = _ngp(tmp_path, n=2)
    doc = json.loads(src.read_text())
    Image.fromarray(_pattern(50, 80, 3, 0)).save(tmp_path / "images" / "0001.jpg")
    del doc["w"], doc["h"]
    _write(src, doc)
    with pytest.raises(UserError, match=r"image is 80x50 but frame 0's is 160x100; all images .* "
                                        r"--max-image-size"):
        load_nerf_dataset(tmp_path)
    # Same aspect: a max size brings both to 40x25.
    assert load_nerf_dataset(tmp_path, max_image_size=40).images.shape == (2, 25, 40, 3)


def test_max_image_size_reaches_the_loader_through_the_session(tmp_path):
    import torch

    from ngp_engine.cli import build_parser
    from ngp_engine.service.session import RunSpec, Session, cli_label

    _fox_like(tmp_path / "ds")
    spec = RunSpec(mode="nerf", run_dir=tmp_path / "run", data=str(tmp_path / "ds"), steps=0,
                   overrides={"max_image_size": 40}, device=torch.device("cpu"), label=cli_label)
    task = Session.open(spec).task
    assert (task.width, task.height, task.cfg.max_image_size) == (40, 25, 40)
    # Distorted photos: one direction map for the two lenses (k1 differs on one frame).
    assert task.direction_maps.shape == (2, 25, 40, 3) and task.lens_of_image.tolist() == [0, 1, 0]
    o, d, rgb, alpha, img = task._batch(64)
    assert o.shape == d.shape == rgb.shape == (64, 3) and img.shape == (64,) and int(img.max()) < 3
    torch.testing.assert_close(d.norm(dim=-1), torch.ones(64))
    args = build_parser().parse_args(["nerf", "train", "x", "--out", "y", "--max-image-size", "40"])
    assert args.max_image_size == 40
    with pytest.raises(UserError, match="max_image_size: 4 must be >= 8"):
        Session.open(RunSpec(**{**spec.__dict__, "overrides": {"max_image_size": 4}}))
