"""`python -m ngp_engine nerf train|render|eval|mesh ...` (argparse wiring and file outputs).

Heavy imports (torch, the engine) happen inside the commands so that `--help` stays fast.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path
from typing import Any

from . import config as cfgmod
from .config import NERF_PRESETS, NerfConfig
from .cli_common import (add_common_options, check_budget, config_from_args, refuse_config_on_resume,
                         train_with_progress)
from .errors import UserError

log = logging.getLogger(__name__)
DEFAULT_PRESET = "cpu-fast"
PASS_NAMES = ("rgb", "depth", "opacity", "normals")


def add_parser(sub: argparse._SubParsersAction) -> None:
    nerf = sub.add_parser("nerf", help="neural radiance fields from posed images",
                          description="Train a NeRF on a NeRF-synthetic folder or an instant-ngp "
                                      "transforms.json, then render, evaluate or mesh it.")
    cmds = nerf.add_subparsers(dest="nerf_command", required=True)

    tr = cmds.add_parser(
        "train", help="train on a dataset",
        description="Train a NeRF. Writes checkpoint.pt, config.json and metrics.json to --out; "
                    "with a test split, also test-set PSNR/SSIM (see `eval`).")
    tr.add_argument("data", nargs="?", help="dataset folder (transforms_train.json or transforms.json) "
                                            "or a transforms json file; not needed with --resume")
    tr.add_argument("--out", required=True, help="run folder (created if missing)")
    tr.add_argument("--preset", choices=sorted(NERF_PRESETS),
                    help=f"named configuration (default {DEFAULT_PRESET}; instant-ngp is the "
                         "paper's GPU-sized one)")
    tr.add_argument("--config", metavar="JSON", help="JSON file with a full NerfConfig, instead of --preset")
    budget = tr.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, help="training steps (default 1000)")
    budget.add_argument("--seconds", type=float, help="training time budget in seconds")
    tr.add_argument("--resume", metavar="CHECKPOINT",
                    help="continue from a checkpoint.pt (same configuration); trains --steps/--seconds more")
    tr.add_argument("--seed", type=int, help="override the configuration's random seed")
    tr.add_argument("--eval-split", default="test",
                    help="split evaluated after training when the dataset has it (default test)")
    tr.add_argument("--no-eval", action="store_true", help="skip the evaluation after training")
    tr.add_argument("--mesh", action="store_true", help="also extract mesh.ply / mesh.obj (see `mesh`)")
    tr.add_argument("--mesh-resolution", type=int, default=256, help="marching-cubes grid per side (default 256)")
    tr.add_argument("--keep-hidden", action="store_true",
                    help="mesh the raw density (see `mesh --keep-hidden`)")
    add_common_options(tr)

    rd = cmds.add_parser(
        "render", help="render passes from a trained checkpoint",
        description="Render cameras to passes: <name>_rgb, _depth (z-depth, world units), _opacity, "
                    "_normals, each as float32 .npy and a viewable .png.")
    rd.add_argument("checkpoint", help="checkpoint.pt from `nerf train`")
    rd.add_argument("--out", required=True, help="output folder")
    src = rd.add_mutually_exclusive_group()
    src.add_argument("--camera", metavar="JSON",
                     help="camera file: transform_matrix (4x4 camera-to-world, world units), w, h and "
                          "fl_x [fl_y, cx, cy] or camera_angle_x")
    src.add_argument("--data", help="dataset to take cameras from (default: the training dataset)")
    rd.add_argument("--split", default="test", help="split of --data (default test)")
    rd.add_argument("--frames", default="0", help="frame indices, e.g. 0,3,5 or all (default 0)")
    rd.add_argument("--passes", default=",".join(PASS_NAMES),
                    help=f"comma-separated passes (default {','.join(PASS_NAMES)})")
    rd.add_argument("--background", choices=["white", "black"], default="white",
                    help="colour behind the field in the rgb pass (default white)")
    add_common_options(rd)

    ev = cmds.add_parser(
        "eval", help="PSNR and SSIM on a split",
        description="Render every camera of a split and compare: metrics.json with psnr (mean, RGBA "
                    "ground truth on white), ssim, psnr_black, ssim_black and per-image values; "
                    "renders in <out>/renders/.")
    ev.add_argument("checkpoint", help="checkpoint.pt from `nerf train`")
    ev.add_argument("--out", required=True, help="output folder")
    ev.add_argument("--data", help="dataset (default: the training dataset)")
    ev.add_argument("--split", default="test", help="split to evaluate (default test)")
    add_common_options(ev)

    me = cmds.add_parser(
        "mesh", help="marching-cubes mesh with vertex colours",
        description="Extract the density level set in the scene box: mesh.ply (binary, colours) and "
                    "mesh.obj, vertices in the dataset's world units, plus mesh.json.")
    me.add_argument("checkpoint", help="checkpoint.pt from `nerf train`")
    me.add_argument("--out", required=True, help="output folder")
    me.add_argument("--resolution", type=int, default=256, help="grid points per side (default 256)")
    me.add_argument("--threshold", type=float, default=2.5,
                    help="density level (per unit-cube length; instant-ngp's default 2.5)")
    me.add_argument("--min-component", type=float, default=0.05,
                    help="drop pieces with fewer faces than this fraction of the largest (default 0.05)")
    me.add_argument("--keep-floaters", action="store_true", help="keep every connected piece")
    me.add_argument("--data", help="dataset whose training cameras decide what was seen "
                                   "(default: the training dataset)")
    me.add_argument("--keep-hidden", action="store_true",
                    help="mesh the raw density: do not fill the space that the training cameras "
                         "saw only from behind a surface (inside objects, under them)")
    add_common_options(me)


def run(args: argparse.Namespace) -> int:
    # Each command checks its inputs first and only then creates --out (`_out`): a mistake
    # leaves no empty folder behind.
    return {"train": _train, "render": _render, "eval": _eval, "mesh": _mesh}[args.nerf_command](args)


# ---------------------------------------------------------------------- train
def _out(args: argparse.Namespace) -> Path:
    """--out, created and checked writable (after the inputs are known to be good)."""
    from .files import check_writable_dir  # noqa: PLC0415

    out = Path(args.out)
    check_writable_dir(out, "--out")
    return out


def _train(args: argparse.Namespace) -> int:
    from .data.transforms import dataset_splits, load_nerf_dataset
    from .device import pick_device
    from .files import atomic_write, save_torch, write_json
    from .nerf.trainer import NerfTrainer, config_of, load_checkpoint

    check_budget(args)
    if args.mesh_resolution < 8:
        raise UserError(f"--mesh-resolution: {args.mesh_resolution} must be >= 8")
    device = pick_device(args.device)
    out = Path(args.out)
    ckpt = None
    if args.resume:
        refuse_config_on_resume(args)
        ckpt = load_checkpoint(args.resume)
        cfg = config_of(ckpt, args.resume, args.backend)
        data = args.data or ckpt["dataset"]
    else:
        if not args.data:
            raise UserError("nerf train: give a dataset (or --resume CHECKPOINT)")
        cfg = config_from_args(args, NerfConfig, NERF_PRESETS, DEFAULT_PRESET)
        data = args.data
    dataset = load_nerf_dataset(data, "train")
    trainer = NerfTrainer(dataset, cfg, device, dataset_path=str(Path(data).resolve()))
    if ckpt is not None:
        if ckpt["image_size"] != [trainer.width, trainer.height]:
            raise UserError(f"{args.resume}: trained on {ckpt['image_size']} images, "
                            f"{data} has {[trainer.width, trainer.height]}")
        trainer.load_state_dict(ckpt, where=args.resume)
    _out(args)
    log.info("NeRF: %d images %dx%d, %s on %s, backend %s, %d parameters", trainer.n_images,
             trainer.width, trainer.height, "RGBA" if trainer.has_alpha else "RGB", device,
             trainer.model.backend, trainer.model.field.n_params)

    train_with_progress(trainer, args, 1000, lambda p: {
        "step": p.step, "loss": p.loss, "psnr": p.psnr, "spr": p.samples_per_ray,
        "rays_s": int(p.rays_per_second)})

    save_torch(out / "checkpoint.pt", trainer.state_dict())
    atomic_write(out / "config.json", lambda tmp: Path(tmp).write_text(cfgmod.to_json(trainer.cfg) + "\n"))
    metrics: dict[str, Any] = {
        "steps": trainer.steps_done, "seconds": round(trainer.seconds, 3),
        "rays_per_second": round(trainer.rays_seen / max(trainer.seconds, 1e-9), 1),
        "backend": trainer.model.backend, "device": str(device),
        "n_params": trainer.model.field.n_params, "n_train_images": trainer.n_images,
        "occupancy": trainer.model.grid.occupancy_fraction, "dataset": trainer.dataset_path,
    }
    if not args.no_eval and args.eval_split in dataset_splits(data) and args.eval_split != "train":
        test = load_nerf_dataset(data, args.eval_split)
        metrics["eval"] = _evaluate(trainer.model, test, out, args.quiet)
        metrics["psnr"] = metrics["eval"]["psnr"]
    if args.mesh:
        from .mesh.io import save_mesh
        from .nerf.export import nerf_mesh

        mesh = nerf_mesh(trainer.model, resolution=args.mesh_resolution,
                         cameras=None if args.keep_hidden else trainer.cameras)
        save_mesh(mesh, out)
        metrics["mesh"] = mesh["info"]
    write_json(out / "metrics.json", metrics)
    if not args.quiet:
        print(json.dumps({k: metrics[k] for k in ("psnr", "steps", "seconds", "backend") if k in metrics}))
    return 0


def _evaluate(model, dataset, out: Path, quiet: bool) -> dict[str, Any]:
    from .data.image import save_png
    from .nerf.evaluate import evaluate
    from .progress import ProgressBar

    renders = out / "renders"
    renders.mkdir(parents=True, exist_ok=True)
    with ProgressBar(total=len(dataset.cameras), unit="image", disable=quiet) as bar:
        def on_image(i: int, r: dict) -> None:
            save_png(renders / f"{dataset.file_paths[i].stem}.png", r["white"])
            bar.update_to(i + 1)

        return evaluate(model, dataset, on_image=on_image)


# ---------------------------------------------------------------------- render / eval / mesh
def _load_model(args: argparse.Namespace):
    from .device import pick_device
    from .nerf.trainer import model_from_checkpoint

    return model_from_checkpoint(args.checkpoint, pick_device(args.device), backend=args.backend)


def _dataset_path(args: argparse.Namespace, ckpt: dict) -> str:
    data = args.data or ckpt["dataset"]
    if not data:
        raise UserError(f"{args.checkpoint}: records no dataset; give --data")
    return data


def _eval(args: argparse.Namespace) -> int:
    from .data.transforms import load_nerf_dataset
    from .files import write_json

    model, ckpt = _load_model(args)
    dataset = load_nerf_dataset(_dataset_path(args, ckpt), args.split)
    metrics = _evaluate(model, dataset, _out(args), args.quiet)
    metrics["split"] = args.split
    metrics["checkpoint"] = str(Path(args.checkpoint).resolve())
    write_json(Path(args.out) / "metrics.json", metrics)
    if not args.quiet:
        print(json.dumps({k: metrics[k] for k in ("psnr", "ssim", "psnr_black", "n_images")}))
    return 0


def _render(args: argparse.Namespace) -> int:
    import numpy as np

    from .nerf.export import save_passes

    passes = tuple(p.strip() for p in args.passes.split(",") if p.strip())
    bad = [p for p in passes if p not in PASS_NAMES]
    if bad or not passes:
        raise UserError(f"--passes: {bad[0] if bad else args.passes!r} is not one of {', '.join(PASS_NAMES)}")
    model, ckpt = _load_model(args)
    background = (1.0, 1.0, 1.0) if args.background == "white" else (0.0, 0.0, 0.0)
    jobs: list[tuple[str, tuple]] = []
    if args.camera:
        jobs.append((Path(args.camera).stem, read_camera_file(Path(args.camera))))
    else:
        from .data.transforms import load_nerf_dataset

        ds = load_nerf_dataset(_dataset_path(args, ckpt), args.split)
        cams = ds.cameras
        for i in _frames(args.frames, len(cams)):
            jobs.append((f"{args.split}_{i:03d}", (cams.c2w[i], cams.fx[i], cams.fy[i], cams.cx[i],
                                                    cams.cy[i], cams.width, cams.height)))
    _out(args)
    written = []
    for stem, cam in jobs:
        result = model.render_camera(*cam, passes=passes, background=background)
        written += save_passes(result, Path(args.out), stem)
    if not args.quiet:
        print(json.dumps({"written": [str(p) for p in written if p.suffix == ".png"],
                          "mean_opacity": float(np.mean(result.get("opacity", np.zeros(1))))}))
    return 0


def _frames(spec: str, n: int) -> list[int]:
    if spec == "all":
        return list(range(n))
    try:
        frames = [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--frames: {spec!r} is not a list of integers or 'all'") from None
    bad = [f for f in frames if not 0 <= f < n]
    if bad or not frames:
        raise UserError(f"--frames: {bad[0] if bad else spec!r} is out of range (the split has {n} frames)")
    return frames


def read_camera_file(path: Path) -> tuple:
    """A single camera from JSON: transform_matrix, w, h, and fl_x [fl_y, cx, cy] or
    camera_angle_x -> (c2w [4, 4], fx, fy, cx, cy, w, h)."""
    import numpy as np

    if not path.is_file():
        raise UserError(f"{path}: no such camera file")
    try:
        cam = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(cam, dict):
        raise UserError(f"{path}: expected a JSON object")
    allowed = {"transform_matrix", "w", "h", "fl_x", "fl_y", "cx", "cy", "camera_angle_x"}
    unknown = sorted(set(cam) - allowed)
    if unknown:
        raise UserError(f"{path}: unknown key '{unknown[0]}' (known: {', '.join(sorted(allowed))})")
    for key in ("transform_matrix", "w", "h"):
        if key not in cam:
            raise UserError(f"{path}: missing key '{key}'")
    try:
        c2w = np.asarray(cam["transform_matrix"], dtype=np.float64)
    except (TypeError, ValueError):
        raise UserError(f"{path}: transform_matrix must be a 4x4 list of numbers") from None
    if c2w.shape != (4, 4) or not np.isfinite(c2w).all():
        raise UserError(f"{path}: transform_matrix must be a finite 4x4 matrix")
    w, h = cam["w"], cam["h"]
    if not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 16384 for v in (w, h)):
        raise UserError(f"{path}: w and h must be whole numbers of pixels in 1..16384")

    def num(key: str, default: float | None = None) -> float | None:
        v = cam.get(key, default)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise UserError(f"{path}: {key} must be a positive number, got {v!r}")
        return float(v)

    fx = num("fl_x")
    if fx is None:
        angle = num("camera_angle_x")
        if angle is None:
            raise UserError(f"{path}: give fl_x or camera_angle_x")
        if angle >= math.pi:
            raise UserError(f"{path}: camera_angle_x must be below pi, got {angle}")
        fx = 0.5 * w / math.tan(0.5 * angle)
    fy = num("fl_y", fx)
    rot = c2w[:3, :3] / np.linalg.norm(c2w[:3, :3], axis=0, keepdims=True)
    c2w = c2w.copy()
    c2w[:3, :3] = rot
    return c2w, fx, fy, num("cx", w / 2), num("cy", h / 2), w, h


def _mesh(args: argparse.Namespace) -> int:
    from .files import write_json
    from .mesh.io import save_mesh
    from .nerf.export import nerf_mesh

    if args.resolution < 8 or args.resolution > 2048:
        raise UserError(f"--resolution: {args.resolution} must be in 8..2048")
    if not 0 <= args.min_component <= 1:
        raise UserError(f"--min-component: {args.min_component} must be in [0, 1]")
    model, ckpt = _load_model(args)
    cameras = None
    if not args.keep_hidden:
        from .data.transforms import load_nerf_dataset

        cameras = load_nerf_dataset(_dataset_path(args, ckpt), "train").cameras
    out = _out(args)
    mesh = nerf_mesh(model, resolution=args.resolution, threshold=args.threshold,
                     min_component_fraction=None if args.keep_floaters else args.min_component,
                     cameras=cameras)
    if not len(mesh["faces"]):
        raise UserError(f"{args.checkpoint}: no surface at density {args.threshold} "
                        "(train longer or lower --threshold)")
    paths = save_mesh(mesh, out)
    lo, hi = model.scene_box_world()
    info = {**mesh["info"], "box_min": lo.tolist(), "box_max": hi.tolist(),
            "files": [str(p) for p in paths]}
    write_json(Path(args.out) / "mesh.json", info)
    if not args.quiet:
        print(json.dumps({k: info[k] for k in ("n_vertices", "n_faces", "threshold", "resolution")}))
    return 0
