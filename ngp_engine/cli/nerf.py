"""`python -m ngp_engine nerf train|render|eval|mesh ...`: argparse wiring and file outputs;
training goes through the Session (service/session.py), the rest loads a checkpoint's task.

Heavy imports (torch, the engine) happen inside the commands so that `--help` stays fast.
Each command checks its inputs first and only then creates --out.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path
from typing import Any

from ..config import NERF_PRESETS
from ..errors import UserError
from ..service.protocol import PASSES
from .common import add_common_options, check_resolution, open_training, out_dir, train_with_progress

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """`nerf train|render|eval|mesh` and their options (declarations only, one per line)."""
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
    tr.add_argument("--eval-split",
                    help="split evaluated after training when the dataset has it (default: "
                         "holdout with --holdout-every, else test)")
    tr.add_argument("--no-eval", action="store_true", help="skip the evaluation after training")
    tr.add_argument("--mesh", action="store_true", help="also extract mesh.ply / mesh.obj (see `mesh`)")
    tr.add_argument("--mesh-resolution", type=int, default=256, help="marching-cubes grid per side (default 256)")
    tr.add_argument("--keep-hidden", action="store_true",
                    help="mesh the raw density (see `mesh --keep-hidden`)")
    tr.add_argument("--mesh-box", metavar="X0,Y0,Z0,X1,Y1,Z1",
                    help="mesh only inside this world box (default: the object box, i.e. the unit cube "
                         "of the scene transform; the whole scene box when aabb_scale is 1)")
    tr.add_argument("--max-image-size", type=int, metavar="N",
                    help="downscale images whose longer side exceeds N pixels on load (cameras "
                         "resized to match; the evaluation split too)")
    tr.add_argument("--holdout-every", type=int, metavar="N",
                    help="hold frames 0, N, 2N, ... of the training file out of training and "
                         "evaluate on them after it (split 'holdout'; 8 is the LLFF convention), "
                         "for captures without a test split")
    add_common_options(tr, NERF_PRESETS, "cpu-fast", 1000,
                       "; instant-ngp is the paper's GPU-sized one")

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
    rd.add_argument("--passes", default=",".join(PASSES),
                    help=f"comma-separated passes (default {','.join(PASSES)})")
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
    me.add_argument("--mesh-box", metavar="X0,Y0,Z0,X1,Y1,Z1",
                    help="mesh only inside this world box (default: the object box, i.e. the unit cube "
                         "of the scene transform; the whole scene box when aabb_scale is 1)")
    me.add_argument("--keep-hidden", action="store_true",
                    help="mesh the raw density: do not fill the space that the training cameras "
                         "saw only from behind a surface (inside objects, under them)")
    add_common_options(me)


def run(args: argparse.Namespace) -> int:
    return {"train": _train, "render": _render, "eval": _eval, "mesh": _mesh}[args.nerf_command](args)


# ---------------------------------------------------------------------- train
def _train(args: argparse.Namespace) -> int:
    from ..data.transforms import HOLDOUT  # noqa: PLC0415
    from ..files import write_json  # noqa: PLC0415
    from ..formats.transforms import dataset_splits  # noqa: PLC0415

    if args.mesh_resolution < 8:
        raise UserError(f"--mesh-resolution: {args.mesh_resolution} must be >= 8")
    mesh_box = _mesh_box(args.mesh_box)
    if args.mesh:
        from ..mesh.marching_cubes import require_mcubes  # noqa: PLC0415

        require_mcubes()          # before training, not after it
    session = open_training(args, "nerf", args.data, max_image_size=args.max_image_size,
                            holdout_every=args.holdout_every)
    task = session.task
    log.info("NeRF: %d images %dx%d, %s", task.n_images, task.width, task.height,
             "RGBA" if task.has_alpha else "RGB")
    if not train_with_progress(session, args, lambda p: {
            "step": p.step, "loss": p.loss, "psnr": p.psnr, "spr": p.samples_per_ray,
            "rays_s": int(p.rays_per_second)}):
        return 0          # a data-parallel rank other than 0: rank 0 writes the run

    out = session.run_dir
    session.save_checkpoint()
    metrics: dict[str, Any] = {**session.summary(), "n_train_images": task.n_images}
    data = task.dataset_path
    split = args.eval_split or (HOLDOUT if task.cfg.holdout_every else "test")
    splits = dataset_splits(data) + ([HOLDOUT] if task.cfg.holdout_every else [])
    if args.eval_split and not args.no_eval and split not in splits:
        log.warning("--eval-split %s: %s has no such split (it has %s); not evaluated", split,
                    data, ", ".join(splits))
    if not args.no_eval and split in splits and split != "train":
        metrics["eval"] = _evaluate(task.model, task.load_data(data, task.cfg, split), out, args.quiet)
        metrics["eval"]["split"] = split
        metrics["psnr"] = metrics["eval"]["psnr"]
    if args.mesh:
        paths, metrics["mesh"] = session.export_mesh(args.mesh_resolution, None,
                                                     fill_hidden=not args.keep_hidden, box=mesh_box)
    write_json(out / "metrics.json", metrics)
    if not args.quiet:
        print(json.dumps({k: metrics[k] for k in ("psnr", "steps", "seconds", "backend") if k in metrics}))
    return 0


def _evaluate(model, dataset, out: Path, quiet: bool) -> dict[str, Any]:
    from ..data.image import save_png  # noqa: PLC0415
    from .progress import ProgressBar  # noqa: PLC0415
    from ..tasks.nerf.evaluate import evaluate  # noqa: PLC0415

    renders = out / "renders"
    renders.mkdir(parents=True, exist_ok=True)
    with ProgressBar(total=len(dataset.cameras), unit="image", disable=quiet) as bar:
        def on_image(i: int, r: dict) -> None:
            save_png(renders / f"{dataset.file_paths[i].stem}.png", r["white"])
            bar.update_to(i + 1)

        return evaluate(model, dataset, on_image=on_image)


# ---------------------------------------------------------------------- render / eval / mesh
def _load_task(args: argparse.Namespace):
    """The checkpoint's NeRF, without its training images (rendering needs the model only)."""
    from ..device import pick_device  # noqa: PLC0415
    from ..tasks.nerf.task import NerfTask  # noqa: PLC0415

    return NerfTask.from_checkpoint(args.checkpoint, pick_device(args.device), backend=args.backend,
                                    for_training=False)


def _dataset_path(args: argparse.Namespace, task) -> str:
    data = args.data or task.dataset_path
    if not data:
        raise UserError(f"{args.checkpoint}: records no dataset; give --data")
    return data


def _eval(args: argparse.Namespace) -> int:
    from ..files import write_json  # noqa: PLC0415

    task = _load_task(args)
    dataset = task.load_data(_dataset_path(args, task), task.cfg, args.split)
    metrics = _evaluate(task.model, dataset, out_dir(args), args.quiet)
    metrics["split"] = args.split
    metrics["checkpoint"] = str(Path(args.checkpoint).resolve())
    write_json(Path(args.out) / "metrics.json", metrics)
    if not args.quiet:
        print(json.dumps({k: metrics[k] for k in ("psnr", "ssim", "psnr_black", "n_images")}))
    return 0


def _render(args: argparse.Namespace) -> int:
    import numpy as np  # noqa: PLC0415

    from ..formats.camera import read_camera_file  # noqa: PLC0415
    from ..render.passes import save_passes  # noqa: PLC0415

    passes = tuple(p.strip() for p in args.passes.split(",") if p.strip())
    bad = [p for p in passes if p not in PASSES]
    if bad or not passes:
        raise UserError(f"--passes: {bad[0] if bad else args.passes!r} is not one of {', '.join(PASSES)}")
    task = _load_task(args)
    background = (1.0, 1.0, 1.0) if args.background == "white" else (0.0, 0.0, 0.0)
    if args.camera:
        jobs = [(Path(args.camera).stem, read_camera_file(Path(args.camera)))]
    else:
        cams = task.load_data(_dataset_path(args, task), task.cfg, args.split).cameras
        jobs = [(f"{args.split}_{i:03d}", cams[i]) for i in _frames(args.frames, len(cams))]
    out = out_dir(args)
    written = []
    for stem, camera in jobs:
        result = task.render(camera, passes, background=background)
        written += save_passes(result, out, stem)
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


def _mesh_box(text: str | None) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """--mesh-box "x0,y0,z0,x1,y1,z1" -> ((x0, y0, z0), (x1, y1, z1)), or None when not given."""
    if text is None:
        return None
    try:
        v = [float(p) for p in text.split(",")]
    except ValueError:
        v = []
    if len(v) != 6 or not all(math.isfinite(x) for x in v):
        raise UserError(f"--mesh-box: {text!r} must be 6 comma-separated numbers x0,y0,z0,x1,y1,z1")
    if not all(a < b for a, b in zip(v[:3], v[3:])):
        raise UserError(f"--mesh-box: {text!r} must have x0 < x1, y0 < y1 and z0 < z1")
    return tuple(v[:3]), tuple(v[3:])


def _mesh(args: argparse.Namespace) -> int:
    from ..files import write_json  # noqa: PLC0415
    from ..mesh.marching_cubes import require_mcubes  # noqa: PLC0415
    from ..mesh.io import save_mesh  # noqa: PLC0415

    check_resolution(args.resolution, "--resolution")
    mesh_box = _mesh_box(args.mesh_box)
    require_mcubes()
    if not 0 <= args.min_component <= 1:
        raise UserError(f"--min-component: {args.min_component} must be in [0, 1]")
    task = _load_task(args)
    if not args.keep_hidden:
        task.cameras = task.load_data(_dataset_path(args, task), task.cfg).cameras
    out = out_dir(args)
    try:
        mesh = task.extract_mesh(args.resolution, args.threshold,
                                 min_component_fraction=None if args.keep_floaters else args.min_component,
                                 fill_hidden=not args.keep_hidden, box=mesh_box)
    except UserError as e:
        if "no surface" not in str(e):
            raise
        raise UserError(f"{args.checkpoint}: no surface at density {args.threshold} "
                        "(train longer or lower --threshold)") from None
    paths = save_mesh(mesh, out)
    info = {**mesh["info"],                  # with box_min / box_max: the box that was meshed
            "files": [str(p) for p in paths]}
    write_json(Path(args.out) / "mesh.json", info)
    if not args.quiet:
        print(json.dumps({k: info[k] for k in ("n_vertices", "n_faces", "threshold", "resolution")}))
    return 0
