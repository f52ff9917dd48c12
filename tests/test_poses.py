"""`ngp_engine.poses`: camera poses from photos, a video or a COLMAP model, with real
pycolmap on a capture rendered by real Blender (scripts/make_capture.py, in a subprocess:
bpy is never imported into pytest). The SfM run is shared by the tests of this file.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ngp_engine.errors import UserError
from ngp_engine.poses import PosesCancelled, PosesSpec, find_poses
from ngp_engine.poses.convention import (colmap_to_nerf_c2w, estimate_up, normalising_similarity,
                                         umeyama)
from ngp_engine.poses.evaluate import compare_dataset
from ngp_engine.poses.images import prepare_photos

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def capture(photo_capture) -> Path:
    """The session's rendered capture (tests/conftest.py)."""
    return photo_capture


@pytest.fixture(scope="module")
def sfm_run(capture, tmp_path_factory):
    """find_poses on the photos: (result, progress reports, dataset folder)."""
    out = tmp_path_factory.mktemp("poses") / "dataset"
    reports = []
    result = find_poses(PosesSpec(capture / "photos", out), progress=reports.append)
    return result, reports, out


def _frames(dataset: Path) -> dict[str, np.ndarray]:
    doc = json.loads((dataset / "transforms.json").read_text())
    return {Path(f["file_path"]).stem: np.array(f["transform_matrix"]) for f in doc["frames"]}


def _read_points(path: Path) -> np.ndarray:
    """Vertices [M, 3] of the face-less binary PLY that dataset.write_points writes."""
    data = path.read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode()
    n = int(next(l.split()[2] for l in header.splitlines() if l.startswith("element vertex")))
    rows = np.frombuffer(data[end:end + n * 15], [("xyz", "<f4", 3), ("rgb", "u1", 3)])
    return rows["xyz"].astype(np.float64)


# ----------------------------------------------------------------------------- SfM on photos

def test_all_registered_and_close_to_truth(sfm_run, capture):
    result, _, out = sfm_run
    assert (result.n_images, result.n_registered, result.rejected) == (24, 24, ())
    assert result.reprojection_error < 1.0
    e = compare_dataset(out, capture / "truth.json")
    assert e["n_compared"] == 24
    assert e["rotation_error_deg_median"] < 1.5, e
    assert e["position_error_rel_median"] < 0.02, e      # of the 2 m scene
    # Both worlds have +Z up, so the aligning rotation must be (nearly) a turn about Z.
    assert e["alignment_tilt_deg"] < 3.0, e


def test_normalised_world(sfm_run):
    result, _, out = sfm_run
    frames = _frames(out)
    centres = np.array([m[:3, 3] for m in frames.values()])
    assert (centres[:, 2] > 0).all()               # every camera above the object's centre
    pts = _read_points(out / "points.ply")
    assert len(pts) == result.n_points > 100
    inside = (np.abs(pts) <= 1).all(axis=1).mean()
    assert inside > 0.85, inside                    # the points that matter are in [-1, 1]^3
    doc = json.loads((out / "transforms.json").read_text())
    assert doc["scale"] == 0.5 and doc["offset"] == [0.5, 0.5, 0.5] and doc["aabb_scale"] == 16
    assert doc["camera_model"] == "SIMPLE_RADIAL" and {"k1", "k2", "p1", "p2", "w", "h"} <= set(doc)
    report = json.loads((out / "poses.json").read_text())
    assert report["registered"] == 24 and report["images_found"] == 24
    sim = report["similarity"]
    assert np.allclose(np.array(sim["rotation"]) @ np.array(sim["rotation"]).T, np.eye(3), atol=1e-9)
    assert {"features", "matching", "mapping", "total"} <= set(report["timings_s"])


def test_dataset_loads_for_training(sfm_run):
    from ngp_engine.data.transforms import load_nerf_dataset

    _, _, out = sfm_run
    data = load_nerf_dataset(out)
    assert data.images.shape == (24, 320, 320, 3)
    assert len(data.cameras) == 24 and data.transform.world_to_unit == 0.5


def test_progress_reports(sfm_run):
    _, reports, _ = sfm_run
    stages = [r.stage for r in reports]
    order = [s for i, s in enumerate(stages) if i == 0 or stages[i - 1] != s]
    assert order == ["reading", "features", "matching", "mapping", "writing"]
    for stage in set(stages):
        done = [r.done for r in reports if r.stage == stage]
        assert done == sorted(done), stage
    assert [r.done for r in reports if r.stage == "features"][-24:] == list(range(1, 25))
    mapping = [r for r in reports if r.stage == "mapping"]
    assert len(mapping) >= 23 and mapping[-1].registered == 24


def test_existing_colmap_model_bin_and_txt(sfm_run, tmp_path):
    import pycolmap

    _, _, out = sfm_run
    txt = tmp_path / "project" / "sparse" / "0"
    txt.mkdir(parents=True)
    pycolmap.Reconstruction(out / "sparse" / "0").write_text(txt)
    assert (txt / "images.txt").is_file() and not (txt / "images.bin").exists()
    (tmp_path / "project" / "images").symlink_to(out / "images")
    want = _frames(out)
    for src, images in ((out / "sparse" / "0", out / "images"), (tmp_path / "project", None)):
        dest = tmp_path / f"from_{src.name}"
        r = find_poses(PosesSpec(src, dest, images=images))
        assert r.n_registered == 24
        got = _frames(dest)
        assert got.keys() == want.keys()
        for k in want:
            np.testing.assert_allclose(got[k], want[k], atol=1e-5)


# ----------------------------------------------------------------------------- video

def test_video_input(capture, tmp_path):
    import av

    video = tmp_path / "walk.mp4"
    with av.open(str(video), "w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width = stream.height = 320
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18"}
        for f in sorted((capture / "photos").glob("*.png")):
            frame = av.VideoFrame.from_ndarray(np.asarray(Image.open(f).convert("RGB")), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    out = tmp_path / "from_video"
    r = find_poses(PosesSpec(video, out, video_frames=24))
    report = json.loads((out / "poses.json").read_text())
    assert report["kind"] == "video" and report["matching"] == "sequential"
    assert r.n_images == 24 and r.n_registered >= 16        # 22 degrees between frames: sparse
    e = compare_dataset(out, capture / "truth.json",
                        name_of=lambda p: f"img_{int(Path(p).stem.split('_')[1]):03d}")
    assert e["rotation_error_deg_median"] < 2.0, e


# ----------------------------------------------------------------------------- inputs

def test_exif_orientation_is_honoured(tmp_path):
    img = Image.new("RGB", (200, 100), (0, 0, 255))
    img.putpixel((0, 0), (255, 0, 0))                     # red top-left as stored
    exif = Image.Exif()
    exif[0x0112] = 6                                       # display rotated 90 degrees clockwise
    src = tmp_path / "in"
    src.mkdir()
    img.save(src / "a.jpg", exif=exif, quality=100, subsampling=0)
    photos = prepare_photos([src / "a.jpg"], tmp_path / "sfm", tmp_path / "out", 1600, None)
    assert photos[0].original_size == (100, 200) and photos[0].sfm_size == (100, 200)
    upright = np.asarray(Image.open(tmp_path / "sfm" / "a.jpg"))
    assert upright.shape == (200, 100, 3)
    assert upright[0, -1, 0] > 200 and upright[0, -1, 2] < 80      # now at the top-right


def test_mixed_sizes_share_one_long_side(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    for name, size in (("a.png", (400, 300)), ("b.png", (300, 400)), ("c.png", (800, 600))):
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), np.uint8)).save(src / name)
    photos = prepare_photos(sorted(src.iterdir()), None, tmp_path / "out", 1600, 1600)
    assert [p.out_size for p in photos] == [(400, 300), (300, 400), (400, 300)]


def _expect_error(spec: PosesSpec, *words: str) -> None:
    with pytest.raises(UserError) as info:
        find_poses(spec)
    msg = str(info.value)
    assert "\n" not in msg and all(w in msg for w in words), msg
    assert not spec.output.exists()
    assert not [p for p in spec.output.parent.iterdir() if p.name.startswith(f".{spec.output.name}")]


def test_bad_inputs(tmp_path, sfm_run):
    _, _, dataset = sfm_run
    empty = tmp_path / "empty"
    empty.mkdir()
    _expect_error(PosesSpec(empty, tmp_path / "o1"), "no images found", str(empty))
    bad = tmp_path / "bad"
    bad.mkdir()
    Image.new("RGB", (128, 128)).save(bad / "ok.png")
    (bad / "broken.jpg").write_bytes(b"not a jpeg at all")
    _expect_error(PosesSpec(bad, tmp_path / "o2"), "cannot read image", "broken.jpg")
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    Image.new("RGB", (20, 20)).save(tiny / "t.png")
    _expect_error(PosesSpec(tiny, tmp_path / "o3"), "too small", "t.png")
    (tmp_path / "junk.mp4").write_bytes(b"\x00\x01garbage" * 100)
    _expect_error(PosesSpec(tmp_path / "junk.mp4", tmp_path / "o4"), "cannot decode video", "junk.mp4")
    model = tmp_path / "model"
    model.mkdir()
    for name in ("cameras.bin", "points3D.bin"):
        (model / name).write_bytes((dataset / "sparse" / "0" / name).read_bytes())
    _expect_error(PosesSpec(model, tmp_path / "o5"), "missing images.bin", str(model))
    _expect_error(PosesSpec(tmp_path / "nowhere", tmp_path / "o6"), "no such file or folder")
    before = sorted(p.name for p in dataset.iterdir())
    with pytest.raises(UserError, match="not empty.*--overwrite"):
        find_poses(PosesSpec(empty, dataset))
    assert sorted(p.name for p in dataset.iterdir()) == before             # left as it was


def test_too_few_registered(tmp_path):
    noise = tmp_path / "noise"
    noise.mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (128, 128, 3), np.uint8)).save(noise / f"n{i}.png")
    _expect_error(PosesSpec(noise, tmp_path / "out"), "of 3 images registered", "overlap")


def test_cancel_leaves_nothing(capture, tmp_path):
    photos = tmp_path / "few"
    photos.mkdir()
    for f in sorted((capture / "photos").glob("*.png"))[:6]:
        (photos / f.name).symlink_to(f)
    stop = {"now": False}

    def progress(p):
        if p.stage == "features":
            stop["now"] = True

    out = tmp_path / "out"
    with pytest.raises(PosesCancelled):
        find_poses(PosesSpec(photos, out), progress=progress, should_stop=lambda: stop["now"])
    assert list(tmp_path.iterdir()) == [photos]


def test_cli_error_is_one_line(tmp_path):
    from conftest import run_cli

    (tmp_path / "empty").mkdir()
    proc = run_cli("poses", str(tmp_path / "empty"), "--out", str(tmp_path / "o"), "--quiet")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {tmp_path / 'empty'}: no images found "
                                                "(looked for .png, .jpg, .jpeg, .tif, .tiff, .bmp, .webp)"]
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- convention

def test_colmap_camera_conversion():
    # An OpenCV camera at the origin with R = I looks down world +Z with image-down = +Y:
    # as a NeRF camera, -Z (its view direction) is world +Z and +Y (up) is world -Y.
    c2w = colmap_to_nerf_c2w(np.eye(3), np.zeros(3))
    np.testing.assert_allclose(c2w[:3, 2], [0, 0, -1])
    np.testing.assert_allclose(c2w[:3, 1], [0, -1, 0])
    # Translation: w2c t = -R C, so the centre comes back as C.
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    rot = q * np.sign(np.linalg.det(q))
    centre = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(colmap_to_nerf_c2w(rot, -rot @ centre)[:3, 3], centre)


def _look_at(pos: np.ndarray, target: np.ndarray) -> np.ndarray:
    """NeRF camera-to-world [4, 4] at pos looking at target, +Z world up, no roll."""
    back = (pos - target) / np.linalg.norm(pos - target)
    right = np.cross([0, 0, 1.0], back)
    right /= np.linalg.norm(right)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, np.cross(back, right), back, pos
    return m


def test_up_and_centre_on_an_uneven_ring():
    # Cameras on 3/4 of a ring, tilted down 40 degrees at (1, 2, 0.5): the mean camera up
    # is pulled over by the tilt; the right vectors are not.
    target = np.array([1.0, 2.0, 0.5])
    az = np.radians(np.linspace(0, 270, 30))
    pos = target + 4 * np.stack([np.cos(az) * np.cos(0.7), np.sin(az) * np.cos(0.7),
                                 np.full_like(az, np.sin(0.7))], 1)
    c2w = np.stack([_look_at(p, target) for p in pos])
    mean_up = c2w[:, :3, 1].mean(0)
    assert np.degrees(np.arccos(mean_up[2] / np.linalg.norm(mean_up))) > 5
    np.testing.assert_allclose(estimate_up(c2w), [0, 0, 1], atol=1e-9)
    points = target + np.random.default_rng(0).uniform(-1, 1, (500, 3))
    sim, how = normalising_similarity(c2w, points)
    assert how == "optical axes"
    np.testing.assert_allclose(sim.scale * np.asarray(sim.rotation) @ target + sim.translation,
                               0, atol=1e-9)
    assert 0.75 < sim.scale < 0.85                     # points span +-1 -> +-0.8 (2..98 %)


def test_umeyama_recovers_a_similarity():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(20, 3))
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    s, r, t = umeyama(x, 2.5 * x @ q.T + [1, 2, 3])
    assert abs(s - 2.5) < 1e-9
    np.testing.assert_allclose(r, q, atol=1e-9)
    np.testing.assert_allclose(t, [1, 2, 3], atol=1e-9)
