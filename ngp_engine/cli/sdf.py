"""`python -m ngp_engine sdf train|mesh ...`: neural signed distance fields from meshes.
Training goes through the Session (service/session.py); `mesh` loads a checkpoint's task.

Heavy imports (torch, libigl) happen inside the commands so that `--help` stays fast.
Inputs are checked before anything is written to --out.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from ..config import SDF_PRESETS
from .common import add_common_options, check_resolution, open_training, out_dir, train_with_progress

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    sdf = sub.add_parser("sdf", help="neural signed distance fields from triangle meshes",
                         description="Learn a hash-encoded signed distance field of a mesh "
                                     "(.ply or .obj) and extract a clean marching-cubes mesh.")
    cmds = sdf.add_subparsers(dest="sdf_command", required=True)

    tr = cmds.add_parser(
        "train", help="train on a mesh",
        description="Train an SDF. Writes checkpoint.pt, config.json, mesh.ply / mesh.obj (the zero "
                    "level set, in the input's coordinates) and metrics.json (Chamfer distance "
                    "relative to the bounding-box diagonal, normal consistency, volumetric IoU).")
    tr.add_argument("mesh", nargs="?", help="input mesh (.ply or .obj); not needed with --resume")
    tr.add_argument("--out", required=True, help="run folder (created if missing)")
    tr.add_argument("--resolution", type=int, default=256,
                    help="marching-cubes lattice points along the longest side (default 256)")
    tr.add_argument("--no-mesh", action="store_true", help="do not extract a mesh after training")
    tr.add_argument("--no-eval", action="store_true", help="skip the metrics against the input")
    add_common_options(tr, SDF_PRESETS, "cpu-fast", 2000,
                       "; instant-ngp is the paper's GPU-sized one")

    me = cmds.add_parser(
        "mesh", help="marching-cubes mesh of a trained SDF",
        description="Extract a level set of a trained SDF: mesh.ply and mesh.obj in the input's "
                    "coordinates, plus mesh.json (and the metrics against the input mesh).")
    me.add_argument("checkpoint", help="checkpoint.pt from `sdf train`")
    me.add_argument("--out", required=True, help="output folder")
    me.add_argument("--resolution", type=int, default=256,
                    help="lattice points along the longest side (default 256)")
    me.add_argument("--threshold", type=float, default=0.0,
                    help="level to extract, in the mesh's units (0: the surface; > 0 grows it)")
    me.add_argument("--mesh", help="input mesh to compare with (default: the one trained on)")
    me.add_argument("--no-eval", action="store_true", help="skip the metrics against the input")
    add_common_options(me)


def run(args: argparse.Namespace) -> int:
    check_resolution(args.resolution, "--resolution")
    if args.sdf_command == "mesh" or not args.no_mesh:
        from ..mesh.marching_cubes import require_mcubes  # noqa: PLC0415

        require_mcubes()          # before training or sampling, not after
    if args.sdf_command == "mesh" and not args.no_eval:
        from ..packages import require  # noqa: PLC0415

        require("libigl", "Comparing with the input mesh")   # before the mesh is written
    return {"train": _train, "mesh": _mesh}[args.sdf_command](args)


def _train(args: argparse.Namespace) -> int:
    from ..files import write_json  # noqa: PLC0415

    session = open_training(args, "sdf", args.mesh)
    if not train_with_progress(session, args, lambda p: {"step": p.step, "loss": p.loss}):
        return 0      # a data-parallel rank other than 0: rank 0 writes the run
    task, out = session.task, session.run_dir
    session.save_checkpoint()
    metrics = session.summary()
    if not args.no_mesh:
        metrics.update(_extract(task, out, args.resolution, 0.0, not args.no_eval, args.quiet))
    write_json(out / "metrics.json", metrics)
    if not args.quiet:
        keys = ("steps", "seconds", "chamfer", "iou", "normal_consistency", "n_faces")
        print(json.dumps({k: metrics[k] for k in keys if k in metrics}))
    return 0


def _extract(task, out: Path, resolution: int, threshold: float, evaluate: bool, quiet: bool,
             reference=None) -> dict[str, Any]:
    """Mesh the field into out/mesh.ply + mesh.obj; with `evaluate`, compare with the input."""
    from ..eval.mesh import compare_meshes  # noqa: PLC0415
    from ..mesh.io import save_mesh  # noqa: PLC0415

    t0 = time.perf_counter()
    mesh = task.extract_mesh(resolution, threshold)
    info: dict[str, Any] = {**mesh["info"], "extract_seconds": round(time.perf_counter() - t0, 3)}
    info["files"] = [str(p) for p in save_mesh(mesh, out)]
    if evaluate:
        if not quiet:
            log.info("comparing with the input mesh...")
        ref = reference or task.mesh
        info.update(compare_meshes(mesh["vertices"], mesh["faces"], ref.vertices, ref.faces))
    return info


def _mesh(args: argparse.Namespace) -> int:
    from ..data.mesh import load_sdf_mesh  # noqa: PLC0415
    from ..device import pick_device  # noqa: PLC0415
    from ..files import write_json  # noqa: PLC0415
    from ..tasks.sdf.task import SdfTask  # noqa: PLC0415

    device = pick_device(args.device)
    reference = load_sdf_mesh(args.mesh) if args.mesh else None
    task = SdfTask.from_checkpoint(args.checkpoint, device, backend=args.backend, for_training=False)
    evaluate = not args.no_eval
    if evaluate and reference is None and not len(task.mesh.faces):
        log.warning("%s is gone: no metrics (give --mesh to compare with a mesh)", task.mesh.path)
        evaluate = False
    out = out_dir(args)
    info = _extract(task, out, args.resolution, args.threshold, evaluate, args.quiet, reference)
    write_json(out / "mesh.json", info)
    if not args.quiet:
        print(json.dumps({k: info[k] for k in ("n_vertices", "n_faces", "chamfer", "iou") if k in info}))
    return 0
