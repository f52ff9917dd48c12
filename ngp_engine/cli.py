"""Command line: `python -m ngp_engine image ...`, `... nerf ...` (cli_nerf), `... sdf ...`
(cli_sdf) and `... serve` (server); shared pieces in cli_common.

User mistakes (missing file, bad config value, unavailable backend) print one line
`error: ...` on stderr and exit with status 2; nothing is half-written.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

from . import cli_nerf, cli_sdf
from .cli_common import check_budget, config_from_args, refuse_config_on_resume, train_with_progress
from .config import IMAGE_PRESETS, ConfigError, ImageFitConfig
from .errors import UserError

EXIT_USER_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ngp_engine",
                                     description="Instant-NGP style neural fields.")
    sub = parser.add_subparsers(dest="command", required=True)
    img = sub.add_parser(
        "image", help="fit an image with a hash-encoded network",
        description="Train (x, y) -> colour on one image; write reconstruction.png, "
                    "comparison.png, metrics.json and checkpoint.pt to --out.")
    img.add_argument("path", nargs="?", help="image file (PNG, JPEG, ...); not needed with --resume")
    img.add_argument("--preset", choices=sorted(IMAGE_PRESETS),
                     help="named configuration (default: seed, the article's L=16, T=2^12 grid)")
    img.add_argument("--config", metavar="JSON",
                     help="JSON file with a full ImageFitConfig, instead of --preset")
    budget = img.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, help="training steps (default 1000)")
    budget.add_argument("--seconds", type=float, help="training time budget in seconds")
    img.add_argument("--out", required=True, help="output folder (created if missing)")
    img.add_argument("--resume", metavar="CHECKPOINT",
                     help="continue from a checkpoint.pt; trains --steps/--seconds more")
    img.add_argument("--backend", choices=["auto", "torch", "cpu", "tcnn"],
                     help="hash-grid implementation (default: the config's, normally auto)")
    img.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                     help="torch device (default: CUDA, then MPS, then CPU)")
    img.add_argument("--batch-size", type=int, help="override the config's batch size")
    img.add_argument("--seed", type=int, help="override the config's random seed")
    img.add_argument("--quiet", action="store_true", help="no progress bar, no log lines")
    cli_nerf.add_parser(sub)
    cli_sdf.add_parser(sub)
    sub.add_parser(
        "serve", help="run as a service for the Blender add-on (JSON lines on stdin/stdout)",
        description="Serve requests (hello, train, preview, stop, export_mesh, status, shutdown) "
                    "read as JSON lines on stdin; answer with events on stdout; log to stderr. "
                    "Exits when stdin closes. See ngp_engine/protocol.py.")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        from .server import main as serve  # noqa: PLC0415

        return serve()
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(message)s", stream=sys.stderr)
    from .encoding.backends import BackendUnavailable  # noqa: PLC0415 (imports torch)
    try:
        if args.command == "image":
            return run_image(args)
        if args.command == "nerf":
            return cli_nerf.run(args)
        if args.command == "sdf":
            return cli_sdf.run(args)
    except (UserError, ConfigError, BackendUnavailable) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 1


def run_image(args: argparse.Namespace) -> int:
    import numpy as np  # noqa: PLC0415 (keep `--help` fast)

    from .data.image import load_image, save_png
    from .device import pick_device
    from .fields.image import ImageFitter
    from .files import check_writable_dir, save_torch, write_json

    check_budget(args)
    device = pick_device(args.device)
    if args.resume:
        refuse_config_on_resume(args, "batch_size")
        image = load_image(args.path) if args.path else None
        fitter = ImageFitter.from_checkpoint(args.resume, device, image=image, backend=args.backend)
        if args.path:
            fitter.image_path = str(Path(args.path).resolve())
    else:
        if not args.path:
            raise UserError("image: give an image PATH (or --resume CHECKPOINT)")
        cfg = config_from_args(args, ImageFitConfig, IMAGE_PRESETS, "seed", batch_size=args.batch_size)
        image = load_image(args.path)
        fitter = ImageFitter(image, cfg, device, image_path=str(Path(args.path).resolve()))
    out = Path(args.out)
    check_writable_dir(out, "--out")
    logging.getLogger(__name__).info(
        "fitting %dx%d image: %s on %s, backend %s, %d parameters", fitter.width, fitter.height,
        fitter.cfg.encoding.otype, device, fitter.backend, fitter.model.n_params)

    train_with_progress(fitter, args, 1000, lambda p: {"step": p.step, "loss": p.loss})

    rec = fitter.render()
    metrics = fitter.metrics(rec)
    save_png(out / "reconstruction.png", rec)
    save_png(out / "comparison.png", np.concatenate([fitter.image, rec], axis=1))
    save_torch(out / "checkpoint.pt", fitter.state_dict())
    write_json(out / "metrics.json", metrics)
    if not args.quiet:
        print(json.dumps({k: metrics[k] for k in ("psnr", "steps", "seconds", "backend", "n_params")}))
    return 0
