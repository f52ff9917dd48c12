"""NeRF end to end on a tiny scene rendered with real Blender (the `nerf_scene` fixture).

- Quality against the ground truth the renderer knows: test PSNR over a trivial predictor,
  the marching-cubes mesh against geometry.ply, the depth pass against ray casts of it.
- Checkpoints: training N steps in one go equals N/2, save, load into a new trainer, N/2.
- The `python -m ngp_engine nerf ...` commands: their files, and one-line errors (exit 2, no
  checkpoint or metrics written) for bad input.

Training budgets are steps, never seconds, so every number here is reproducible; the whole
file runs in 70-90 s on two CPU cores.
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import NERF_SCENE_ARGS, run_cli
from ngp_engine import config as cfgmod
from ngp_engine.cli import build_parser
from ngp_engine.config import NERF_PRESETS, NerfConfig
from ngp_engine.data.transforms import load_nerf_dataset
from ngp_engine.formats.camera import Camera
from ngp_engine.files import save_torch
from ngp_engine.mesh import point_to_mesh_distance, read_mesh
from ngp_engine.eval.image import psnr
from ngp_engine.tasks.nerf.evaluate import composite, evaluate
from ngp_engine.tasks.nerf.mesh import nerf_mesh
from ngp_engine.tasks.nerf.task import NerfTask

load_checkpoint = NerfTask.read_checkpoint

CPU = torch.device("cpu")
PRESET = "cpu-fast"
CFG = NERF_PRESETS[PRESET]
SIZE, N_TEST = NERF_SCENE_ARGS["size"], NERF_SCENE_ARGS["n_test"]
TRAIN_STEPS = 100      # Python-API run: ~22 dB test PSNR on this scene, ~20 s
RESUME_STEPS = 40      # N of the resume check: N in one go == N/2, checkpoint, N/2
CLI_STEPS = 60


# ---------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def trained(nerf_scene):
    """One cpu-fast run of TRAIN_STEPS steps through the Python API."""
    train = load_nerf_dataset(nerf_scene, "train")
    trainer = NerfTask(train, CFG, CPU)
    trainer.train(steps=TRAIN_STEPS)
    return SimpleNamespace(trainer=trainer, model=trainer.model, train=train,
                           test=load_nerf_dataset(nerf_scene, "test"))


@pytest.fixture(scope="module")
def truth(nerf_scene):
    """Ground-truth triangles (world units), their bounding box and its diagonal."""
    v, f, _ = read_mesh(nerf_scene / "geometry.ply")
    meta = json.loads((nerf_scene / "scene.json").read_text())
    lo, hi = np.array(meta["bbox_min"]), np.array(meta["bbox_max"])
    # scene.json's box is the box of geometry.ply's vertices (float32 in the file).
    np.testing.assert_allclose(v.min(0), lo, atol=1e-5)
    np.testing.assert_allclose(v.max(0), hi, atol=1e-5)
    return SimpleNamespace(v=v, f=f, lo=lo, hi=hi, diag=float(np.linalg.norm(hi - lo)))


@pytest.fixture(scope="module")
def cli_run(nerf_scene, tmp_path_factory):
    """`nerf train` with a mesh: the run folder the other CLI tests read."""
    run = tmp_path_factory.mktemp("nerf_cli") / "run"
    proc = run_cli("nerf", "train", str(nerf_scene), "--out", str(run), "--steps", str(CLI_STEPS),
                   "--mesh", "--mesh-resolution", "64", "--quiet")
    assert proc.returncode == 0, proc.stderr
    return run


# ---------------------------------------------------------------------- helpers
def cast_rays(cam: Camera, u: np.ndarray, v: np.ndarray, truth) -> tuple[np.ndarray, ...]:
    """Ray-cast the ground-truth mesh through image points (u, v) of a camera.

    Returns z-depth [P] (NaN on a miss), hit face [P] (-1 on a miss) and the world ray
    directions [P, 3]. Each direction has camera-space z = -1, so a hit's ray parameter t
    is its z-depth (what the depth pass holds).
    """
    import igl  # here, not at import: test_hash_grid_triton imports this module on GPU machines

    c2w = cam.c2w
    fx, fy, cx, cy = cam.intrinsics
    d_cam = np.stack([(u - cx) / fx, -(v - cy) / fy, -np.ones_like(u)], axis=-1)
    dirs = d_cam @ c2w[:3, :3].T
    origin = np.ascontiguousarray(c2w[:3, 3], dtype=np.float64)
    depth = np.full(len(u), np.nan)
    face = np.full(len(u), -1)
    for k, d in enumerate(dirs):
        # libigl 2.6.3: with first=True a ray that misses comes back as one uninitialised hit
        # (t ~ 1e-310) instead of None, so ask for all hits (sorted by t; [] on a miss).
        hits = igl.ray_mesh_intersect(origin, np.ascontiguousarray(d), truth.v, truth.f, False)
        if hits:
            face[k], depth[k] = hits[0][0], hits[0][1]
    return depth, face, dirs


def face_normals(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    return n / np.linalg.norm(n, axis=1, keepdims=True)


def assert_identical(a, b, where: str = "state") -> None:
    """Nested dicts/lists of tensors and plain values are equal, tensors bit for bit."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            assert_identical(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for k, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{where}[{k}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def unit_where_covered(normals: np.ndarray, opacity: np.ndarray) -> None:
    """Normals are unit vectors where opacity >= 0.01 (the passes' 'covered') and 0 elsewhere."""
    covered = opacity >= 0.01
    assert covered.any()
    np.testing.assert_allclose(np.linalg.norm(normals[covered], axis=-1), 1.0, atol=1e-4)
    assert not normals[~covered].any()


# ---------------------------------------------------------------------- Python API, quality
def test_test_psnr_beats_the_mean_colour(trained):
    got = evaluate(trained.model, trained.test)
    assert got["n_images"] == N_TEST and len(got["per_image"]) == N_TEST
    # The trivial prediction: one colour, the mean of the training images on white, scored
    # the way evaluate scores (per-image PSNR on white, then the mean).
    mean = np.mean([composite(im, (1, 1, 1)) for im in trained.train.images], axis=(0, 1, 2))
    gts = [composite(im, (1, 1, 1)) for im in trained.test.images]
    trivial = float(np.mean([psnr(np.broadcast_to(mean, gt.shape), gt) for gt in gts]))
    assert got["psnr"] >= trivial + 5.0, (got["psnr"], trivial)
    assert 0 < got["ssim"] <= 1 and math.isfinite(got["psnr_black"])


def test_windowed_inference_matches_two_pass_rendering(trained):
    # render_camera shades a window of samples at a time and drops finished rays; the
    # training renderer finds the visible samples with density only, then shades them (two
    # passes). Both stop at transmittance 1e-4, so they agree to about that.
    from ngp_engine.render.rays import camera_rays, pixel_grid
    from ngp_engine.render.renderer import render_rays, render_rays_windowed

    model, cam = trained.model, trained.test.cameras[0]
    c2w = model.unit_c2w(cam.c2w)[0]
    u, v = pixel_grid(SIZE, SIZE, CPU)
    m = u.numel()
    o, d = camera_rays(c2w.expand(m, 4, 4), *(torch.full((m,), float(a)) for a in
                                              cam.intrinsics), u, v)
    bg = torch.ones(3)
    with torch.no_grad():
        two_pass = render_rays(model.field, model.grid, o, d, model.settings, background=bg, want_normals=True)
    windowed = render_rays_windowed(model.field, model.grid, o, d, model.settings, background=bg,
                                    want_normals=True, first_window=2, max_window=8)
    assert float(two_pass.opacity.max()) > 0.9
    for name in ("rgb", "opacity", "depth", "normals"):
        diff = (getattr(two_pass, name) - getattr(windowed, name)).abs().max()
        assert float(diff) < 1e-3, (name, float(diff))
    # Both march in windows: neither evaluates all that a march to the end would give.
    from ngp_engine.render.ray_marching import march_rays
    from ngp_engine.render.rays import ray_box_intersect

    st = model.settings
    t_near, t_far = ray_box_intersect(o, d, torch.tensor(st.box_min), torch.tensor(st.box_max))
    every = march_rays(o, d, t_near, t_far, model.grid, st.min_step, st.max_step, st.cone_angle,
                       st.max_samples)
    assert windowed.n_samples < every.n_samples and two_pass.n_marched < every.n_samples


class _NoEncodeHandOff:
    """The same field without `encode`: the renderer then encodes the visible samples again."""

    def __init__(self, field):
        self.field = field

    def density(self, x):
        return self.field.density(x)

    def __call__(self, x, d, ray_idx):
        return self.field(x, d, ray_idx)

    def parameters(self):
        return self.field.parameters()


def test_handing_the_search_encodings_to_the_training_pass_changes_nothing(trained):
    # A training step's render: the visible samples' hash encodings come from the
    # density-only search (no second forward of the grid) or are computed again; the
    # colours, and every parameter's gradient, must be the same.
    from ngp_engine.render.rays import camera_rays, pixel_grid
    from ngp_engine.render.renderer import render_rays

    model, cam = trained.model, trained.test.cameras[0]
    c2w = model.unit_c2w(cam.c2w)[0]
    u, v = pixel_grid(SIZE, SIZE, CPU)
    m = u.numel()
    o, d = camera_rays(c2w.expand(m, 4, 4), *(torch.full((m,), float(a)) for a in cam.intrinsics), u, v)
    jitter = torch.rand(m, generator=torch.Generator().manual_seed(0))
    grads = []
    for field in (model.field, _NoEncodeHandOff(model.field)):
        model.field.zero_grad(set_to_none=True)
        out = render_rays(field, model.grid, o, d, model.settings, background=torch.ones(3), jitter=jitter)
        (out.rgb ** 2).sum().backward()
        grads.append((out.rgb.detach(), out.n_marched, out.n_samples,
                      [p.grad.clone() for p in model.field.parameters()]))
    (rgb_a, marched_a, kept_a, ga), (rgb_b, marched_b, kept_b, gb) = grads
    assert marched_a == marched_b and kept_a == kept_b and kept_a < marched_a   # some were hidden
    assert torch.equal(rgb_a, rgb_b)
    for a, b in zip(ga, gb):
        assert torch.equal(a, b)
    assert float(ga[0].abs().max()) > 0                     # the table did get a gradient


def test_mesh_lies_on_the_true_surface(trained, truth):
    mesh = nerf_mesh(trained.model, resolution=96, cameras=trained.train.cameras)
    v, f = mesh["vertices"].astype(np.float64), mesh["faces"]
    assert len(f) > 1000 and mesh["info"]["n_faces"] == len(f)
    assert mesh["colors"].shape == (len(v), 3) and mesh["colors"].dtype == np.uint8
    assert f.min() >= 0 and f.max() < len(v)
    # How far each vertex is outside the true bounding box, in box diagonals (<= 0 inside).
    outside = np.maximum(truth.lo - v, v - truth.hi).max(axis=1) / truth.diag
    # The cameras sit on the upper hemisphere (elevation >= 10 degrees), so a thin slab under
    # the objects is seen by few or no views and a little density survives there after 100
    # steps: a few dozen vertices reach ~10.5% below the box. Everything else is inside 10%.
    assert outside.max() < 0.15, outside.max()
    assert np.mean(outside < 0.10) > 0.995, np.mean(outside < 0.10)
    dist = point_to_mesh_distance(v, truth.v, truth.f) / truth.diag
    assert np.median(dist) < 0.03, np.median(dist)          # grid cell: 1.2% of the diagonal
    assert np.percentile(dist, 90) < 0.06, np.percentile(dist, 90)


class _SolidSphere:
    """Exact depth and opacity of an opaque sphere, with the two methods hidden_space uses:
    the carving rule is checked against geometry known in closed form."""

    def __init__(self, centre, radius, box):
        self.c, self.r, self.box = np.asarray(centre, float), radius, box

    def scene_box_world(self):
        return np.asarray(self.box[0], float), np.asarray(self.box[1], float)

    def render_camera(self, camera, passes):
        c2w, (fx, fy, cx, cy), w, h = camera.c2w, camera.intrinsics, camera.w, camera.h
        u, v = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
        d_cam = np.stack([(u - cx) / fx, -(v - cy) / fy, -np.ones_like(u)], axis=-1)   # z-depth 1
        d = d_cam @ c2w[:3, :3].T
        o = c2w[:3, 3]
        # |o + s d - c|^2 = r^2 for s = z-depth (d has unit z-component in camera space).
        oc = o - self.c
        a, b, cc = (d * d).sum(-1), 2 * (d @ oc), oc @ oc - self.r ** 2
        disc = b * b - 4 * a * cc
        hit = disc > 0
        s = np.where(hit, (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a), 0.0)
        return {"depth": s.astype(np.float32), "opacity": hit.astype(np.float32)}


def test_hidden_space_is_the_inside_of_a_solid_and_the_shadow_under_it(trained):
    from ngp_engine.tasks.nerf.visibility import hidden_space, lattice_points

    sphere = _SolidSphere((0.2, -0.1, 0.0), 0.6, ((-1.5, -1.5, -1.5), (1.5, 1.5, 1.5)))
    cams = trained.train.cameras                    # upper hemisphere, radius 4, elevation >= 10
    res = 48
    hidden = hidden_space(sphere, cams, resolution=res, image_size=96).reshape(-1)
    p = lattice_points(*sphere.scene_box_world(), res).astype(np.float64)
    r = np.linalg.norm(p - sphere.c, axis=1)
    cell = 3.0 / (res - 1)
    margin = 3 * cell
    # Deep inside: every camera that sees the point sees it behind the surface.
    assert hidden[r < sphere.r - margin - 2 * cell].all()
    # Outside: some camera sees through every point, even under the sphere (a ray at 10
    # degrees elevation passes below a sphere at 1 / cos(10) = 1.015 radii from its centre).
    assert not hidden[r > sphere.r + cell].any()


def test_fill_hidden_maps_the_coarse_lattice_onto_the_fine_one():
    from ngp_engine.tasks.nerf.visibility import fill_hidden

    volume = np.zeros((5, 5, 5), np.float32)
    volume[0, 0, 0] = 9.0
    hidden = np.zeros((3, 3, 3), bool)
    hidden[1, 1, 1] = hidden[0, 0, 0] = True
    out = fill_hidden(volume, hidden, value=6.0)
    # Fine index i takes coarse index rint(i * 2 / 4) = 0, 0, 1, 2, 2 (round half to even).
    expected = np.zeros((5, 5, 5), np.float32)
    expected[:2, :2, :2] = 6.0
    expected[0, 0, 0] = 9.0                      # already above the fill value: kept
    expected[2, 2, 2] = 6.0
    np.testing.assert_array_equal(out, expected)


def test_depth_and_normal_passes_match_the_geometry(trained, truth, nerf_scene):
    cam = trained.test.cameras[0]
    h, w = cam.h, cam.w
    r = trained.model.render_camera(cam)
    assert {k: a.shape for k, a in r.items()} == {"rgb": (h, w, 3), "depth": (h, w),
                                                  "opacity": (h, w), "normals": (h, w, 3)}
    assert all(a.dtype == np.float32 for a in r.values())
    # Opacity against the true silhouette (the alpha channel Blender rendered).
    alpha = trained.test.images[0][..., 3] > 127
    solid = r["opacity"] > 0.5
    assert (alpha & solid).sum() / (alpha | solid).sum() > 0.8

    rows, cols = np.nonzero(r["opacity"] > 0.9)
    assert len(rows) > 0.1 * h * w
    true_depth, face, dirs = cast_rays(cam, cols + 0.5, rows + 0.5, truth)
    hit = face >= 0
    assert hit.mean() > 0.95            # misses: silhouette pixels the field covers a bit wider
    depth = r["depth"][rows, cols][hit]
    rel = np.abs(depth - true_depth[hit]) / true_depth[hit]
    assert np.median(rel) < 0.04 and np.percentile(rel, 90) < 0.10, (np.median(rel),
                                                                     np.percentile(rel, 90))
    # Coarse cross-check that needs no ray casting: every covered depth is within half the
    # box diagonal (plus 10% of it) of the camera's distance to the box centre.
    dist_to_centre = np.linalg.norm(cam.c2w[:3, 3] - 0.5 * (truth.lo + truth.hi))
    covered_depth = r["depth"][r["opacity"] >= 0.01]
    assert covered_depth.min() > dist_to_centre - 0.6 * truth.diag
    assert covered_depth.max() < dist_to_centre + 0.6 * truth.diag
    assert not r["depth"][r["opacity"] < 0.01].any()

    unit_where_covered(r["normals"], r["opacity"])
    n = r["normals"][rows, cols][hit].astype(np.float64)
    # Outward normals face the camera; a flipped sign would put this near 0.
    assert np.mean(np.einsum("pk,pk->p", n, -dirs[hit]) > 0) > 0.8
    # Early density gradients are noisy (median ~40 degrees here); random ones would be 90.
    cos = np.einsum("pk,pk->p", n, face_normals(truth.v, truth.f)[face[hit]])
    assert np.median(np.degrees(np.arccos(np.clip(cos, -1, 1)))) < 60


# ---------------------------------------------------------------------- checkpoints
def test_resume_from_a_checkpoint_is_exact(nerf_scene, tmp_path):
    # cpu-fast with a quarter of its samples per step: the same code paths, four times cheaper.
    cfg = cfgmod.replace(CFG, target_batch_samples=1 << 14, initial_rays=256)
    half = RESUME_STEPS // 2
    train = load_nerf_dataset(nerf_scene, "train")

    def trainer() -> NerfTask:
        return NerfTask(train, cfg, CPU)

    one_go = trainer()
    one_go.train(steps=RESUME_STEPS)
    first = trainer()
    first.train(steps=half)
    save_torch(tmp_path / "half.pt", first.state_dict())      # what `nerf train` writes
    del first
    second = trainer()
    second.load_state_dict(load_checkpoint(tmp_path / "half.pt"))
    assert second.steps_done == half
    second.train(steps=RESUME_STEPS - half)

    expected, resumed = one_go.state_dict(), second.state_dict()
    assert resumed["steps"] == expected["steps"] == RESUME_STEPS
    for name, value in expected["model"]["field"].items():
        assert torch.equal(resumed["model"]["field"][name], value), name
    # Everything else too: occupancy grid, Adam moments and step counts, sampler state, the
    # adapted ray count. Only the wall-clock seconds may differ.
    del expected["seconds"], resumed["seconds"]
    assert_identical(resumed, expected)


# ---------------------------------------------------------------------- CLI
def test_cli_train_writes_its_outputs(cli_run):
    names = {p.name for p in cli_run.iterdir()}
    assert {"checkpoint.pt", "config.json", "metrics.json", "mesh.ply", "mesh.obj",
            "renders"} <= names
    assert not [n for n in names if n.startswith(".tmp")]
    metrics = json.loads((cli_run / "metrics.json").read_text())
    assert metrics["steps"] == CLI_STEPS and metrics["n_train_images"] == NERF_SCENE_ARGS["n_train"]
    assert math.isfinite(metrics["psnr"]) and metrics["psnr"] == metrics["eval"]["psnr"]
    assert len(metrics["eval"]["per_image"]) == N_TEST and metrics["eval"]["n_images"] == N_TEST
    assert cfgmod.from_json(NerfConfig, (cli_run / "config.json").read_text()) == CFG
    renders = sorted((cli_run / "renders").glob("*.png"))
    assert [p.name for p in renders] == [f"r_{k}.png" for k in range(N_TEST)]
    assert all(Image.open(p).size == (SIZE, SIZE) for p in renders)
    for name in ("mesh.ply", "mesh.obj"):
        v, f, colors = read_mesh(cli_run / name)
        assert len(v) == metrics["mesh"]["n_vertices"] and len(f) == metrics["mesh"]["n_faces"] > 0
        assert colors is not None and colors.shape == (len(v), 3)
    assert metrics["mesh"]["resolution"] == 64
    # The preset's mlp_precision auto, as it ran here: bfloat16 on a CPU with bfloat16 units.
    from ngp_engine.nn.mlp import resolve_precision
    assert CFG.mlp_precision == "auto"
    assert metrics["mlp_precision"] == resolve_precision("auto", CPU)
    ckpt = load_checkpoint(cli_run / "checkpoint.pt")
    assert ckpt["steps"] == CLI_STEPS and ckpt["image_size"] == [SIZE, SIZE]


def test_cli_float32_and_bfloat16_mlps_train_about_as_well(trained, tmp_path):
    # The MLPs' products in bfloat16 (float32 weights) and in float32: the `trained` run
    # used the preset's auto (bfloat16 on a CPU with bfloat16 units, else float32); the CLI
    # runs the same steps in the other precision (--mlp-precision) and lands within 1 dB of
    # its test PSNR.
    from ngp_engine.nn.mlp import resolve_precision

    reference = evaluate(trained.model, trained.test)["psnr"]
    other = "float32" if resolve_precision("auto", CPU) == "bfloat16" else "bfloat16"
    run = tmp_path / other
    proc = run_cli("nerf", "train", str(trained.train.path), "--out", str(run), "--steps",
                   str(TRAIN_STEPS), "--mlp-precision", other, "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((run / "config.json").read_text())["mlp_precision"] == other
    assert json.loads((run / "metrics.json").read_text())["mlp_precision"] == other
    got = json.loads((run / "metrics.json").read_text())["psnr"]
    assert abs(got - reference) < 1.0, (got, reference)


def test_cli_eval_reproduces_the_train_psnr(cli_run, tmp_path):
    out = tmp_path / "eval"
    proc = run_cli("nerf", "eval", str(cli_run / "checkpoint.pt"), "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    got = json.loads((out / "metrics.json").read_text())
    train = json.loads((cli_run / "metrics.json").read_text())["eval"]
    assert got["psnr"] == pytest.approx(train["psnr"], abs=1e-6)
    assert [r["psnr"] for r in got["per_image"]] == pytest.approx(
        [r["psnr"] for r in train["per_image"]], abs=1e-6)
    assert got["split"] == "test" and got["n_images"] == N_TEST
    assert len(list((out / "renders").glob("*.png"))) == N_TEST


def test_cli_render_dataset_frames(cli_run, tmp_path):
    out = tmp_path / "render"
    proc = run_cli("nerf", "render", str(cli_run / "checkpoint.pt"), "--out", str(out),
                   "--frames", "0,1", "--quiet")
    assert proc.returncode == 0, proc.stderr
    shapes = {"rgb": (SIZE, SIZE, 3), "depth": (SIZE, SIZE), "opacity": (SIZE, SIZE),
              "normals": (SIZE, SIZE, 3)}
    expected = {f"test_{k:03d}_{p}.{ext}" for k in (0, 1) for p in shapes for ext in ("npy", "png")}
    assert {p.name for p in out.iterdir()} == expected
    for k in (0, 1):
        a = {p: np.load(out / f"test_{k:03d}_{p}.npy") for p in shapes}
        for p, shape in shapes.items():
            assert a[p].shape == shape and a[p].dtype == np.float32, p
            assert Image.open(out / f"test_{k:03d}_{p}.png").size == (SIZE, SIZE)
        assert 0 <= a["rgb"].min() and a["rgb"].max() <= 1
        assert 0 <= a["opacity"].min() and a["opacity"].max() <= 1 + 1e-6
        assert (a["depth"] >= 0).all() and not a["depth"][a["opacity"] < 0.01].any()
        unit_where_covered(a["normals"], a["opacity"])


def test_cli_render_camera_file(cli_run, tmp_path, truth):
    # Looking straight down from 4 units above the origin; a 24x16 image.
    cam = {"transform_matrix": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 4], [0, 0, 0, 1]],
           "w": 24, "h": 16, "fl_x": 30.0, "fl_y": 30.0, "cx": 12.0, "cy": 8.0}
    path = tmp_path / "top.json"
    path.write_text(json.dumps(cam))
    out = tmp_path / "render"
    proc = run_cli("nerf", "render", str(cli_run / "checkpoint.pt"), "--camera", str(path),
                   "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    rgb, depth, opacity, normals = (np.load(out / f"top_{p}.npy")
                                    for p in ("rgb", "depth", "opacity", "normals"))
    assert rgb.shape == (16, 24, 3) and depth.shape == opacity.shape == (16, 24)
    assert normals.shape == (16, 24, 3)
    assert Image.open(out / "top_rgb.png").size == (24, 16)
    # Depth in world units: what is seen lies between the box's top and bottom faces.
    seen = depth[opacity > 0.9]
    assert len(seen) > 10
    assert 4 - truth.hi[2] - 0.1 * truth.diag < np.median(seen) < 4 - truth.lo[2] + 0.1 * truth.diag


def test_cli_mesh(cli_run, tmp_path):
    out = tmp_path / "mesh"
    proc = run_cli("nerf", "mesh", str(cli_run / "checkpoint.pt"), "--out", str(out),
                   "--resolution", "48", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert {p.name for p in out.iterdir()} == {"mesh.ply", "mesh.obj", "mesh.json"}
    info = json.loads((out / "mesh.json").read_text())
    v, f, _ = read_mesh(out / "mesh.ply")
    assert info["resolution"] == 48 and info["n_vertices"] == len(v) and info["n_faces"] == len(f) > 0
    assert (v >= np.array(info["box_min"]) - 1e-4).all() and (v <= np.array(info["box_max"]) + 1e-4).all()


def test_cli_resume_continues_the_run(cli_run, tmp_path):
    out = tmp_path / "run2"
    proc = run_cli("nerf", "train", "--resume", str(cli_run / "checkpoint.pt"), "--steps", "10",
                   "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == CLI_STEPS + 10 and math.isfinite(metrics["psnr"])
    assert load_checkpoint(out / "checkpoint.pt")["steps"] == CLI_STEPS + 10


def test_cli_holdout_every_trains_without_and_evaluates_on_held_out_frames(nerf_scene, tmp_path):
    """A capture as one transforms.json (no test split): --holdout-every 8 trains on 21 of
    its 24 frames and evaluates frames 0, 8 and 16; eval, resume and the config keep it."""
    ds = tmp_path / "capture"
    shutil.copytree(nerf_scene / "train", ds / "train")
    shutil.copy(nerf_scene / "transforms_train.json", ds / "transforms.json")
    run = tmp_path / "run"
    proc = run_cli("nerf", "train", str(ds), "--out", str(run), "--steps", "5", "--holdout-every", "8",
                   "--quiet")
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n_train_images"] == 21 and json.loads((run / "config.json").read_text())["holdout_every"] == 8
    assert metrics["eval"]["split"] == "holdout" and metrics["eval"]["n_images"] == 3
    assert sorted(p.name for p in (run / "renders").glob("*.png")) == ["r_0.png", "r_16.png", "r_8.png"]
    assert math.isfinite(metrics["psnr"])
    out = tmp_path / "eval"
    proc = run_cli("nerf", "eval", str(run / "checkpoint.pt"), "--split", "holdout", "--out", str(out),
                   "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "metrics.json").read_text())["psnr"] == pytest.approx(metrics["psnr"], abs=1e-6)
    proc = run_cli("nerf", "render", str(run / "checkpoint.pt"), "--split", "holdout", "--frames", "all",
                   "--passes", "rgb", "--out", str(tmp_path / "passes"), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "passes").glob("*.png")) == [
        f"holdout_{i:03d}_rgb.png" for i in range(3)]
    proc = run_cli("nerf", "train", "--resume", str(run / "checkpoint.pt"), "--steps", "2",
                   "--out", str(tmp_path / "run2"), "--quiet")
    assert proc.returncode == 0, proc.stderr
    again = json.loads((tmp_path / "run2" / "metrics.json").read_text())
    assert again["n_train_images"] == 21 and again["eval"]["split"] == "holdout"
    # Without the option there is no held-out split to name.
    proc = run_cli("nerf", "train", str(ds), "--out", str(tmp_path / "run3"), "--steps", "1",
                   "--eval-split", "holdout", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "eval" not in json.loads((tmp_path / "run3" / "metrics.json").read_text())
    assert proc.stderr.strip().splitlines()[-1].endswith("--eval-split holdout: " + str(ds.resolve())
                                                         + " has no such split (it has train); not evaluated")
    proc = run_cli("nerf", "eval", str(tmp_path / "run3" / "checkpoint.pt"), "--split", "holdout",
                   "--out", str(tmp_path / "eval3"))
    assert proc.returncode != 0 and proc.stderr.strip().splitlines() == [
        "error: split 'holdout': this run held out no frames (train with --holdout-every N, config "
        "holdout_every)"]


def _nerf_parsers() -> dict[str, argparse.ArgumentParser]:
    def sub(parser):
        return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices

    nerf = sub(build_parser())["nerf"]
    return {"": nerf, **sub(nerf)}


@pytest.mark.parametrize("command", ["", "train", "render", "eval", "mesh"])
def test_help_mentions_every_option(command):
    proc = run_cli("nerf", *([command] if command else []), "--help")
    assert proc.returncode == 0, proc.stderr
    parser = _nerf_parsers()[command]
    words = [opt for a in parser._actions for opt in a.option_strings]
    words += [a.dest for a in parser._actions if not a.option_strings and a.dest != "nerf_command"]
    if not command:
        words += ["train", "render", "eval", "mesh"]
    assert len(words) > 3
    missing = [word for word in words if word not in proc.stdout]
    assert not missing, missing


# ---------------------------------------------------------------------- CLI errors
def _edit_json(path: Path, edit) -> None:
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))   # NaN is written as the bare NaN that json.loads reads


def _drop_images(ds: Path) -> None:
    # One missing image is skipped with a warning (tests/test_nerf_data.py); all missing is
    # an error.
    for png in (ds / "train").glob("r_*.png"):
        png.unlink()


def _resize_image(ds: Path) -> None:
    Image.new("RGBA", (32, 40), (255, 0, 0, 255)).save(ds / "train" / "r_3.png")


def _nan_matrix(ds: Path) -> None:
    _edit_json(ds / "transforms_train.json",
               lambda d: d["frames"][2]["transform_matrix"][0].__setitem__(1, float("nan")))


def _no_frames(ds: Path) -> None:
    _edit_json(ds / "transforms_train.json", lambda d: d.__setitem__("frames", []))


def _unknown_key(ds: Path) -> None:
    _edit_json(ds / "transforms_train.json", lambda d: d["frames"][1].__setitem__("exposure", 1.0))


def _escaping_path(ds: Path) -> None:
    shutil.copy(ds / "train" / "r_4.png", ds.parent / "outside.png")    # exists, but outside
    _edit_json(ds / "transforms_train.json",
               lambda d: d["frames"][4].__setitem__("file_path", "../outside.png"))


def _train(ds: Path, out: Path, ckpt: Path) -> list[str]:
    return ["nerf", "train", str(ds), "--out", str(out), "--steps", "5"]


def _eval_not_a_checkpoint(ds: Path, out: Path, ckpt: Path) -> list[str]:
    return ["nerf", "eval", str(ds / "train" / "r_0.png"), "--out", str(out)]


def _render_bad_camera(ds: Path, out: Path, ckpt: Path) -> list[str]:
    cam = ds.parent / "cam.json"
    cam.write_text(json.dumps({"w": 24, "h": 16, "fl_x": 30.0}))
    return ["nerf", "render", str(ckpt), "--camera", str(cam), "--out", str(out)]


def _render(*extra: str):
    return lambda ds, out, ckpt: ["nerf", "render", str(ckpt), "--out", str(out), *extra]


# name: (change to a fresh copy of the dataset, command line, words the error line must hold)
BAD_INPUT = {
    "every image missing": (_drop_images, _train, ["transforms_train.json", "none of its 24 frames",
                                                   "image file"]),
    "wrong image size": (_resize_image, _train, ["transforms_train.json", "frame 3", "32x40"]),
    "NaN in transform_matrix": (_nan_matrix, _train,
                                ["transforms_train.json", "frame 2", "transform_matrix", "NaN"]),
    "empty frame list": (_no_frames, _train, ["transforms_train.json", "frames", "empty"]),
    "unknown key": (_unknown_key, _train, ["transforms_train.json", "frame 1", "'exposure'"]),
    "file_path escaping": (_escaping_path, _train,
                           ["transforms_train.json", "frame 4", "../outside.png", "escapes"]),
    "not a checkpoint": (None, _eval_not_a_checkpoint, ["r_0.png", "checkpoint"]),
    "camera file without transform_matrix": (None, _render_bad_camera, ["cam.json", "transform_matrix"]),
    "frame out of range": (None, _render("--frames", "99"), ["--frames", "99", "3 frames"]),
    "unknown pass": (None, _render("--passes", "foo"), ["--passes", "'foo'"]),
}


@pytest.fixture(scope="module")
def bad_input_runs(nerf_scene, cli_run, tmp_path_factory):
    """Every BAD_INPUT case, each on its own copy of the dataset, run two at a time (most of
    each run is importing torch)."""
    root = tmp_path_factory.mktemp("nerf_bad_input")
    jobs = {}
    for k, (name, (change, argv, _)) in enumerate(BAD_INPUT.items()):
        ds = root / f"case{k}" / "scene"
        shutil.copytree(nerf_scene, ds)
        if change is not None:
            change(ds)
        out = root / f"case{k}" / "out"
        jobs[name] = (argv(ds, out, cli_run / "checkpoint.pt"), out)
    with ThreadPoolExecutor(max_workers=2) as pool:
        procs = dict(zip(jobs, pool.map(lambda job: run_cli(*job[0]), jobs.values())))
    return {name: (procs[name], jobs[name][1]) for name in jobs}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_one_error_line(bad_input_runs, case):
    proc, out = bad_input_runs[case]
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for word in BAD_INPUT[case][2]:
        assert word in lines[0], (word, lines[0])
    assert not out.exists()            # inputs are checked before --out is created
