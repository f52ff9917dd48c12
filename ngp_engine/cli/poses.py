"""`python -m ngp_engine poses INPUT --out DIR`: camera poses from a folder of photos, a
video or an existing COLMAP model, written as a dataset that `nerf train DIR` reads.

pycolmap and PyAV are imported when the command runs (`--help` stays fast); a progress
bar per stage on stderr (`--quiet`: none). Bad input is one line `error: ...`, exit 2,
and no output folder.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..poses.spec import CAMERA_MODELS, MATCHING

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "poses", help="camera poses from photos, a video or a COLMAP model (structure from motion)",
        description="Find camera poses with COLMAP (pycolmap) and write a NeRF dataset: "
                    "transforms.json, images/, points.ply, poses.json (report) and sparse/0. "
                    "World: +Z up (the cameras' up), object centred, sparse points within "
                    "[-1, 1]^3.")
    p.add_argument("input", help="folder of photos, video file, or COLMAP model folder "
                                 "(sparse/0 with cameras, images, points3D as .bin or .txt)")
    p.add_argument("--out", required=True, help="dataset folder to create")
    p.add_argument("--images", help="COLMAP input: the model's image folder (default: images/ "
                                    "beside sparse/)")
    p.add_argument("--matching", choices=MATCHING, default="auto",
                   help="auto (default: sequential for video or >200 images, else exhaustive), "
                        "exhaustive or sequential")
    p.add_argument("--camera-model", choices=CAMERA_MODELS, default="SIMPLE_RADIAL",
                   help="lens model fitted (default SIMPLE_RADIAL; OPENCV for wide lenses; "
                        "PINHOLE for none)")
    p.add_argument("--per-image-cameras", action="store_true",
                   help="one camera per image (zoom, several phones) instead of one shared")
    p.add_argument("--sfm-long-side", type=int, default=1600,
                   help="long side in pixels of the images SfM reads (default 1600)")
    p.add_argument("--image-long-side", type=int, default=1600,
                   help="long side of the dataset's images (default 1600; 0 = original size)")
    p.add_argument("--frames", type=int, default=100,
                   help="video input: frames kept, the sharpest of each window (default 100)")
    p.add_argument("--aabb-scale", type=int, default=16,
                   help="instant-ngp scene box written to transforms.json (default 16)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars, no summary")


def run(args: argparse.Namespace) -> int:
    from ..poses import PosesProgress, PosesSpec, find_poses  # noqa: PLC0415
    from .progress import ProgressBar  # noqa: PLC0415

    spec = PosesSpec(input=Path(args.input), output=Path(args.out),
                     images=Path(args.images) if args.images else None, matching=args.matching,
                     camera_model=args.camera_model, per_image_cameras=args.per_image_cameras,
                     sfm_long_side=args.sfm_long_side,
                     image_long_side=args.image_long_side or None, video_frames=args.frames,
                     aabb_scale=args.aabb_scale, overwrite=args.overwrite)
    bars: dict[str, ProgressBar] = {}

    def progress(p: PosesProgress) -> None:
        if p.stage not in bars:
            for bar in bars.values():           # one bar per stage, the last one finished
                bar.__exit__()
            bars.clear()
            bars[p.stage] = ProgressBar(total=max(p.total, 1), unit="image" if p.stage != "matching"
                                        else "step", disable=args.quiet)
            bars[p.stage]._bar.set_description(p.stage)
        bar = bars[p.stage]
        if bar._bar.total != max(p.total, 1):
            bar._bar.total = max(p.total, 1)
        extra = {"registered": p.registered} if p.stage == "mapping" else {}
        bar.update_to(p.done, **extra)

    try:
        result = find_poses(spec, progress)
    finally:
        for bar in bars.values():
            bar.__exit__()
    log.info("%d of %d images registered, mean reprojection error %.2f px, %d points -> %s",
             result.n_registered, result.n_images, result.reprojection_error, result.n_points,
             result.dataset)
    for name, reason in result.rejected:
        log.info("  not in the dataset: %s (%s)", name, reason)
    return 0
