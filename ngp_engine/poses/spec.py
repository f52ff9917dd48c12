"""What `find_poses` takes, reports and returns: plain frozen dataclasses (no pycolmap)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError

MATCHING = ("auto", "exhaustive", "sequential")
CAMERA_MODELS = ("SIMPLE_RADIAL", "OPENCV", "PINHOLE", "SIMPLE_PINHOLE", "RADIAL", "OPENCV_FISHEYE")
STAGES = ("reading", "features", "matching", "mapping", "writing")
EXHAUSTIVE_LIMIT = 200   # auto matching: exhaustive up to this many images (pairs grow as n^2)


@dataclass(frozen=True)
class PosesSpec:
    """One pose-finding job."""
    input: Path
    """A folder of photos, a video file, or a COLMAP model folder (`sparse/0` with
    cameras, images and points3D as .bin or .txt, or a project folder holding `sparse/0`)."""
    output: Path
    """The dataset folder to create (transforms.json, images/, points.ply, poses.json, sparse/0)."""
    images: Path | None = None
    """COLMAP input only: the folder of the model's images (default: `images/` beside
    `sparse/`, or inside the model folder)."""
    matching: str = "auto"
    """auto (sequential for a video or more than 200 photos, else exhaustive), exhaustive
    (every pair: slow but finds loops) or sequential (each image with the next ones: videos)."""
    camera_model: str = "SIMPLE_RADIAL"
    """COLMAP camera model fitted: SIMPLE_RADIAL (f, cx, cy, k1), OPENCV (fx, fy, cx, cy,
    k1, k2, p1, p2), PINHOLE (no distortion), SIMPLE_PINHOLE, RADIAL, OPENCV_FISHEYE."""
    per_image_cameras: bool = False
    """One camera per image (zooms, mixed phones) instead of one shared camera."""
    sfm_long_side: int = 1600
    """Long side in pixels of the copies that SfM reads (smaller is faster, less precise)."""
    image_long_side: int | None = 1600
    """Long side of the dataset's images (None: the originals' size); never upscaled."""
    video_frames: int = 100
    """Video input: how many frames to keep (the sharpest of each of that many windows)."""
    aabb_scale: int = 16
    """instant-ngp scene box (power of two 1..128) written to transforms.json."""
    overwrite: bool = False
    """Replace an existing non-empty output folder."""
    min_registered: float = 0.5
    """Fail when fewer than this fraction of the images (and fewer than 3) register."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "input", Path(self.input))
        object.__setattr__(self, "output", Path(self.output))
        if self.images is not None:
            object.__setattr__(self, "images", Path(self.images))
        if self.matching not in MATCHING:
            raise UserError(f"matching {self.matching!r}: use one of {', '.join(MATCHING)}")
        if self.camera_model not in CAMERA_MODELS:
            raise UserError(f"camera model {self.camera_model!r}: use one of {', '.join(CAMERA_MODELS)}")
        if self.sfm_long_side < 64:
            raise UserError(f"sfm long side {self.sfm_long_side}: must be >= 64 pixels")
        if self.image_long_side is not None and self.image_long_side < 16:
            raise UserError(f"image long side {self.image_long_side}: must be >= 16 pixels")
        if self.video_frames < 3:
            raise UserError(f"video frames {self.video_frames}: must be >= 3")
        if self.aabb_scale not in (1, 2, 4, 8, 16, 32, 64, 128):
            raise UserError(f"aabb_scale {self.aabb_scale}: must be a power of two from 1 to 128")
        if not 0.0 <= self.min_registered <= 1.0:
            raise UserError(f"min_registered {self.min_registered}: must be in [0, 1]")

    def options(self) -> dict[str, Any]:
        """The options as JSON values (recorded in poses.json)."""
        return {"matching": self.matching, "camera_model": self.camera_model,
                "per_image_cameras": self.per_image_cameras, "sfm_long_side": self.sfm_long_side,
                "image_long_side": self.image_long_side, "video_frames": self.video_frames,
                "aabb_scale": self.aabb_scale, "min_registered": self.min_registered}


@dataclass(frozen=True)
class PosesProgress:
    """A progress report: `stage` (one of STAGES), `done` of `total` units of that stage
    (images; matching: 0 then 1), images `registered` so far, a short `message`."""
    stage: str
    done: int
    total: int
    registered: int = 0
    message: str = ""


@dataclass(frozen=True)
class Similarity:
    """world_nerf = scale * rotation @ x_colmap + translation (rotation [3, 3], translation [3])."""
    scale: float
    rotation: tuple[tuple[float, float, float], ...]
    translation: tuple[float, float, float]

    def matrix(self) -> list[list[float]]:
        """The 4x4 matrix [[s R, t], [0, 0, 0, 1]] as rows."""
        rows = [[self.scale * v for v in r] + [t] for r, t in zip(self.rotation, self.translation)]
        return rows + [[0.0, 0.0, 0.0, 1.0]]

    def to_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "rotation": [list(r) for r in self.rotation],
                "translation": list(self.translation), "matrix": self.matrix()}


@dataclass(frozen=True)
class PosesResult:
    """What came out: the dataset written and a summary of the reconstruction."""
    dataset: Path
    n_images: int
    n_registered: int
    rejected: tuple[tuple[str, str], ...]
    """(image name, reason) of every image found but not in the dataset."""
    reprojection_error: float
    """Mean reprojection error of the sparse points, pixels at SfM resolution."""
    similarity: Similarity
    n_points: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds per stage (reading, features, matching, mapping, writing); they add up to
    the whole job (poses.json also has the total)."""


class PosesCancelled(UserError):
    """`should_stop` said stop: nothing was left on disk."""

    def __init__(self) -> None:
        super().__init__("cancelled")
