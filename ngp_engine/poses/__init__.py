"""Camera poses from photos, a video or an existing COLMAP model: a posed NeRF dataset.

    from ngp_engine.poses import PosesSpec, find_poses
    result = find_poses(PosesSpec(input="photos/", output="dataset/"), progress=print)

Modules: `images` (reading photos), `video` (sharp frames), `sfm` (pycolmap), `colmap_model`
(existing models, reconstructions as arrays), `convention` (COLMAP -> NeRF cameras, the
normalising similarity), `dataset` (the output folder), `pipeline` (`find_poses`).
pycolmap and PyAV are imported only when a job runs.
"""
from typing import Any

from .spec import PosesCancelled, PosesProgress, PosesResult, PosesSpec, Similarity


def __getattr__(name: str) -> Any:
    # The pipeline (numpy, Pillow) loads on first use: the CLI imports this package to build
    # its parser, and `serve` must start (and report a missing torch) in a bare interpreter.
    if name == "find_poses":
        from .pipeline import find_poses  # noqa: PLC0415
        return find_poses
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["find_poses", "PosesSpec", "PosesProgress", "PosesResult", "PosesCancelled", "Similarity"]
