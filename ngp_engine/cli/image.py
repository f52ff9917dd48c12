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
                    "comparison.png, metrics.json, config.json and checkpoint.pt to --out (a tiled "
                    "TIFF: reconstruction.tif, tiled, and preview.png). `image render CHECKPOINT "
                    "--region X0 Y0 X1 Y1 --size W H --out DIR` renders any region at any size.")
    img.add_argument("path", nargs="?", help="image file (PNG, JPEG, TIFF, ...; a tiled or very large TIFF "
                                             "is read by tiles, never whole); not needed with --resume")
    img.add_argument("--out", required=True, help="output folder (created if missing)")
    img.add_argument("--batch-size", type=int, help="override the config's batch size")
    img.add_argument("--export-fp16", action="store_true",
                     help="also write model_fp16.pt: the field's parameters as float16, no optimiser "
                          "state (what the neural image costs on disk; `image render` reads it)")
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
    session.save_checkpoint()       # first: writing the outputs may fail or take long
    if task.tiled is not None:
        # Too large to hold: the reconstruction is rendered tile by tile into a tiled
        # BigTIFF, with a small preview beside it; scored on random pixels.
        from ..data.tiled_image import write_tiled_tiff  # noqa: PLC0415

        metrics = session.summary(task.metrics())
        write_tiled_tiff(out / "reconstruction.tif", task.width, task.height, task.n_channels,
                         lambda x0, y0, x1, y1: task.render_region((x0, y0, x1, y1), x1 - x0, y1 - y0),
                         hdr=task.hdr)
        save_png(out / "preview.png", task.render(None, ("rgb",))["rgb"].clip(0.0, 1.0))
    elif task.hdr:          # linear values: the reconstruction as EXR, the comparison tone-mapped
        from ..data.exr import write_exr  # noqa: PLC0415
        from ..data.image import to_display  # noqa: PLC0415

        rec = task.render_image()
        metrics = session.summary(task.metrics(rec))
        write_exr(out / "reconstruction.exr", rec)
        save_png(out / "comparison.png", to_display(np.concatenate([task.image, rec], axis=1)))
    else:
        rec = task.render_image()
        metrics = session.summary(task.metrics(rec))
        save_png(out / "reconstruction.png", rec)
        save_png(out / "comparison.png", np.concatenate([task.image, rec], axis=1))
    if args.export_fp16:
        metrics["fp16_bytes"] = task.export_fp16(out / "model_fp16.pt").stat().st_size
        metrics["fp16_parameter_bytes"] = 2 * task.n_params
    write_json(out / "metrics.json", metrics)
    if not args.quiet:
        print(json.dumps({k: metrics[k] for k in ("psnr", "steps", "seconds", "backend", "n_params")}))
    return 0


def add_render_parser(sub: argparse._SubParsersAction) -> None:
    """`image render CHECKPOINT ...` (reached as `image render`; see cli/__init__.py)."""
    rd = sub.add_parser(
        "image-render", help="render a region of a trained image field (`image render ...`)",
        description="Render the field over a region of the image (pixels of the original; "
                    "default the whole image) at any size: render.png (HDR: render.exr; larger than "
                    "8192 pixels on a side: render.tif, a tiled BigTIFF) and render.json in --out.")
    rd.add_argument("checkpoint", help="checkpoint.pt from `image`")
    rd.add_argument("--out", required=True, help="output folder (created if missing)")
    rd.add_argument("--region", nargs=4, type=float, metavar=("X0", "Y0", "X1", "Y1"),
                    help="the region in the original image's pixels, x along the width, y down the rows")
    rd.add_argument("--size", nargs=2, type=int, metavar=("W", "H"),
                    help="output pixels (default: the region's own size, one output pixel per "
                         "image pixel)")
    add_common_options(rd)


MAX_PNG_SIDE = 8192


def run_render(args: argparse.Namespace) -> int:
    """`image render`: check every value, then write the render (atomically)."""
    import math  # noqa: PLC0415

    from ..data.image import save_png  # noqa: PLC0415
    from ..device import pick_device  # noqa: PLC0415
    from ..errors import UserError  # noqa: PLC0415
    from ..files import write_json  # noqa: PLC0415
    from ..tasks.image import ImageTask  # noqa: PLC0415
    from .common import out_dir  # noqa: PLC0415

    task = ImageTask.from_checkpoint(args.checkpoint, pick_device(args.device), backend=args.backend,
                                     for_training=False)
    x0, y0, x1, y1 = args.region or (0.0, 0.0, float(task.width), float(task.height))
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)) or not (x0 < x1 and y0 < y1):
        raise UserError(f"--region: {x0:g} {y0:g} {x1:g} {y1:g} must have X0 < X1 and Y0 < Y1")
    if x0 < 0 or y0 < 0 or x1 > task.width or y1 > task.height:
        raise UserError(f"--region: {x0:g} {y0:g} {x1:g} {y1:g} is outside the {task.width}x{task.height} "
                        f"image of {args.checkpoint}")
    w, h = args.size or (max(1, round(x1 - x0)), max(1, round(y1 - y0)))
    if not (1 <= w <= 1 << 20 and 1 <= h <= 1 << 20):
        raise UserError(f"--size: {w} {h} must be between 1 and {1 << 20} pixels on each side")
    out = out_dir(args)
    sx, sy = (x1 - x0) / w, (y1 - y0) / h           # image pixels per output pixel
    if task.hdr and max(w, h) <= MAX_PNG_SIDE:
        from ..data.exr import write_exr  # noqa: PLC0415

        path = write_exr(out / "render.exr", task.render_region((x0, y0, x1, y1), w, h))
    elif max(w, h) > MAX_PNG_SIDE or task.hdr:
        from ..data.tiled_image import write_tiled_tiff  # noqa: PLC0415

        path = write_tiled_tiff(out / "render.tif", w, h, task.n_channels, lambda a, b, c, d: task.render_region(
            (x0 + a * sx, y0 + b * sy, x0 + c * sx, y0 + d * sy), c - a, d - b), hdr=task.hdr)
    else:
        path = out / "render.png"
        save_png(path, task.render_region((x0, y0, x1, y1), w, h))
    info = {"file": str(path), "region": [x0, y0, x1, y1], "size": [w, h],
            "image_size": [task.width, task.height], "checkpoint": str(args.checkpoint)}
    write_json(out / "render.json", info)
    if not args.quiet:
        print(json.dumps(info))
    return 0
