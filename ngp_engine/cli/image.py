"""`python -m ngp_engine image PATH ...`: fit an image, write the reconstruction."""
from __future__ import annotations

import argparse
import json

from ..config import IMAGE_PRESETS
from .common import add_common_options, open_training, train_with_progress


def add_parser(sub: argparse._SubParsersAction) -> None:
    img = sub.add_parser(
        "image", help="fit an image with a hash-encoded network",
        description="Train (x, y) -> colour on one image; write reconstruction.png, "
                    "comparison.png, metrics.json, config.json and checkpoint.pt to --out.")
    img.add_argument("path", nargs="?", help="image file (PNG, JPEG, ...); not needed with --resume")
    img.add_argument("--out", required=True, help="output folder (created if missing)")
    img.add_argument("--batch-size", type=int, help="override the config's batch size")
    add_common_options(img, IMAGE_PRESETS, "seed", 1000,
                       ", the article's L=16, T=2^12 grid")


def run(args: argparse.Namespace) -> int:
    import numpy as np  # noqa: PLC0415 (keep `--help` fast)

    from ..data.image import save_png  # noqa: PLC0415
    from ..files import write_json  # noqa: PLC0415

    session = open_training(args, "image", args.path, batch_size=args.batch_size)
    if not train_with_progress(session, args, lambda p: {"step": p.step, "loss": p.loss}):
        return 0      # a data-parallel rank other than 0: rank 0 writes the run
    task, out = session.task, session.run_dir
    rec = task.render_image()
    metrics = session.summary(task.metrics(rec))
    save_png(out / "reconstruction.png", rec)
    save_png(out / "comparison.png", np.concatenate([task.image, rec], axis=1))
    session.save_checkpoint()
    write_json(out / "metrics.json", metrics)
    if not args.quiet:
        print(json.dumps({k: metrics[k] for k in ("psnr", "steps", "seconds", "backend", "n_params")}))
    return 0
