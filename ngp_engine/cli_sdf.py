"""`python -m ngp_engine sdf train|mesh ...`: neural signed distance fields from meshes.

Heavy imports (torch, libigl) happen inside the commands so that `--help` stays fast.
Inputs are checked before anything is written to --out.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from . import config as cfgmod
from .config import SDF_PRESETS, SdfConfig
from .cli_common import (add_common_options, check_budget, config_from_args, refuse_config_on_resume,
                         train_with_progress)
from .errors import UserError

log = logging.getLogger(__name__)
DEFAULT_PRESET = "cpu-fast"


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
    tr.add_argument("--preset", choices=sorted(SDF_PRESETS),
                    help=f"named configuration (default {DEFAULT_PRESET}; instant-ngp is the "
                         "paper's GPU-sized one)")
    tr.add_argument("--config", metavar="JSON", help="JSON file with a full SdfConfig, instead of --preset")
    budget = tr.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, help="training steps (default 2000)")
    budget.add_argument("--seconds", type=float, help="training time budget in seconds")
    tr.add_argument("--resume", metavar="CHECKPOINT",
                    help="continue from a checkpoint.pt (same configuration); trains --steps/--seconds more")
    tr.add_argument("--seed", type=int, help="override the configuration's random seed")
    tr.add_argument("--resolution", type=int, default=256,
                    help="marching-cubes lattice points along the longest side (default 256)")
    tr.add_argument("--no-mesh", action="store_true", help="do not extract a mesh after training")
    tr.add_argument("--no-eval", action="store_true", help="skip the metrics against the input")
    add_common_options(tr)

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
    if not 8 <= args.resolution <= 2048:
        raise UserError(f"--resolution: {args.resolution} must be in 8..2048")
    return {"train": _train, "mesh": _mesh}[args.sdf_command](args)


def _train(args: argparse.Namespace) -> int:
    from .data.mesh import load_sdf_mesh
    from .device import pick_device
    from .files import check_writable_dir, save_torch, write_json
    from .sdf.trainer import SdfTrainer

    check_budget(args)
    device = pick_device(args.device)
    if args.resume:
        refuse_config_on_resume(args)
        mesh = load_sdf_mesh(args.mesh) if args.mesh else None
        trainer = SdfTrainer.from_checkpoint(args.resume, device, mesh=mesh, backend=args.backend)
    else:
        if not args.mesh:
            raise UserError("sdf train: give a mesh file (or --resume CHECKPOINT)")
        cfg = config_from_args(args, SdfConfig, SDF_PRESETS, DEFAULT_PRESET)
        trainer = SdfTrainer(load_sdf_mesh(args.mesh), cfg, device)
    out = Path(args.out)
    check_writable_dir(out, "--out")
    log.info("SDF: %s, %d triangles, on %s, backend %s, %d parameters; ground truth for %d "
             "samples...", Path(trainer.mesh.path).name, len(trainer.mesh.faces), device,
             trainer.model.backend, trainer.model.n_params, trainer.cfg.ground_truth_pool)
    trainer.samples  # noqa: B018  (computed here, before the progress bar starts)

    train_with_progress(trainer, args, 2000, lambda p: {"step": p.step, "loss": p.loss})

    save_torch(out / "checkpoint.pt", trainer.state_dict())
    write_json(out / "config.json", cfgmod.to_dict(trainer.cfg))
    metrics = trainer.metrics()
    if trainer.mesh.note:
        metrics["note"] = trainer.mesh.note
    if not args.no_mesh:
        metrics.update(_extract(trainer, out, args.resolution, 0.0, not args.no_eval, args.quiet))
    write_json(out / "metrics.json", metrics)
    if not args.quiet:
        keys = ("steps", "seconds", "chamfer", "iou", "normal_consistency", "n_faces")
        print(json.dumps({k: metrics[k] for k in keys if k in metrics}))
    return 0


def _extract(trainer, out: Path, resolution: int, threshold: float, evaluate: bool, quiet: bool,
             reference=None) -> dict[str, Any]:
    """Mesh the field into out/mesh.ply + mesh.obj; with `evaluate`, compare with the input."""
    import time

    from .mesh.io import save_mesh
    from .sdf.evaluate import compare_meshes

    t0 = time.perf_counter()
    vertices, faces = trainer.extract(resolution, threshold)
    info: dict[str, Any] = {"resolution": resolution, "threshold": threshold,
                            "n_vertices": int(len(vertices)), "n_faces": int(len(faces)),
                            "extract_seconds": round(time.perf_counter() - t0, 3)}
    info["files"] = [str(p) for p in save_mesh({"vertices": vertices, "faces": faces}, out)]
    if evaluate:
        if not quiet:
            log.info("comparing with the input mesh...")
        ref = reference or trainer.mesh
        info.update(compare_meshes(vertices, faces, ref.vertices, ref.faces))
    return info


def _mesh(args: argparse.Namespace) -> int:
    from .data.mesh import load_sdf_mesh
    from .device import pick_device
    from .files import check_writable_dir, write_json
    from .sdf.trainer import SdfTrainer

    device = pick_device(args.device)
    reference = load_sdf_mesh(args.mesh) if args.mesh else None
    trainer = SdfTrainer.from_checkpoint(args.checkpoint, device, backend=args.backend)
    evaluate = not args.no_eval
    if evaluate and reference is None and not len(trainer.mesh.faces):
        log.warning("%s is gone: no metrics (give --mesh to compare with a mesh)", trainer.mesh.path)
        evaluate = False
    out = Path(args.out)
    check_writable_dir(out, "--out")
    info = _extract(trainer, out, args.resolution, args.threshold, evaluate, args.quiet, reference)
    write_json(out / "mesh.json", info)
    if not args.quiet:
        print(json.dumps({k: info[k] for k in ("n_vertices", "n_faces", "chamfer", "iou") if k in info}))
    return 0
