"""Loading a NeRF dataset split into memory: the frames that `formats.transforms` reads
(cameras, image files, the scene's unit cube; its docstring has the conventions), with the
images decoded by Pillow into one compact uint8 array, and one-line `UserError`s naming
the file, the frame and the key.

Real captures: frames whose image file is missing are skipped (one log line says how many);
`max_image_size` caps the long side of the images, decoded at reduced size where the format
allows (JPEG's DCT scaling through `Image.draft`) and then resampled with a Lanczos filter,
the cameras `resized` to match exactly (lens coefficients unchanged).

Held-out frames (`holdout_every` = n): a capture that comes as one transforms.json has no
test split, so frames 0, n, 2n, ... of the training file's list form the `HOLDOUT` split
and training reads the others: the LLFF / mip-NeRF convention (n = 8). Frames are counted
as the json lists them, those whose image is missing included, so that an image file that
goes missing (or comes back) between training, resuming and evaluating never moves
another frame across the split.
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import UserError
from ..formats.camera import Camera
from ..formats.transforms import read_transforms
from ..formats.unit_cube import UnitCube

log = logging.getLogger(__name__)

HOLDOUT = "holdout"
"""The split of the frames held out of training (`holdout_every`)."""


@dataclass
class NerfDataset:
    """One split of a NeRF dataset, images in memory."""
    images: np.ndarray
    """[N, H, W, C] uint8; C = 3 (RGB) or 4 (RGBA, straight alpha)."""
    cameras: list[Camera]
    """One per image, all of the images' size, world units."""
    transform: UnitCube
    file_paths: list[Path]
    """Resolved image files, one per frame."""
    source: Path
    """The json file read."""
    path: Path
    """The dataset as given (folder or json file), resolved: other splits are found from it."""

    skipped: tuple[str, ...] = ()
    """`file_path`s of the frames skipped because their image file is missing."""

    @property
    def nbytes(self) -> int:
        """Bytes of the decoded images (what the split holds in memory, on the host)."""
        return int(self.images.nbytes)

    @property
    def has_alpha(self) -> bool:
        return self.images.shape[-1] == 4

    @property
    def width(self) -> int:
        return int(self.images.shape[2])

    @property
    def height(self) -> int:
        return int(self.images.shape[1])

    @classmethod
    def views_only(cls, transform: UnitCube, width: int, height: int, path: str) -> "NerfDataset":
        """A stand-in without images or cameras, for a trained model that only renders."""
        return cls(np.zeros((0, height, width, 3), np.uint8), [], transform, [], Path(path), Path(path))


def load_nerf_dataset(path: str | os.PathLike, split: str = "train", *,
                      max_image_size: int | None = None, skip_missing: bool = True,
                      holdout_every: int | None = None) -> NerfDataset:
    """Read one split of a NeRF-synthetic folder or an instant-ngp transforms.json.

    `max_image_size`: the longest image side in pixels (larger images are downscaled, their
    cameras resized to match). With `skip_missing`, frames whose image file is missing are
    left out (logged once, listed in `skipped`). With `holdout_every` = n, split "train" is
    the training file's frames but 0, n, 2n, ... (places in its list) and split `HOLDOUT`
    those (module docstring); the held-out images are not decoded for training."""
    if max_image_size is not None and max_image_size < 1:
        raise UserError(f"max_image_size: {max_image_size} must be >= 1 pixel")
    if split == HOLDOUT and holdout_every is None:
        raise UserError(f"split '{HOLDOUT}': this run held out no frames (train with "
                        "--holdout-every N, config holdout_every)")
    if holdout_every is not None and holdout_every < 2:
        raise UserError(f"holdout_every: {holdout_every} must be >= 2")
    alpha: dict[Path, bool] = {}

    def image_size(file: Path) -> tuple[int, int]:
        w, h, alpha[file] = _probe(file)
        return w, h

    # Every image is probed (header only): the decoder needs the sizes and alpha up front.
    held_out = split == HOLDOUT
    doc = read_transforms(path, "train" if held_out else split, image_size=image_size,
                          check_sizes=True, skip_missing=skip_missing)
    if doc.skipped and not held_out:
        log.warning("%s: %d of %d frames skipped: their image file is missing (first: %s)",
                    doc.source, len(doc.skipped), doc.n_listed, doc.skipped[0])
    frames = doc.frames
    if holdout_every is not None and (held_out or split == "train"):
        frames = tuple(f for f in frames if (f.index % holdout_every == 0) == held_out)
        if not frames:
            raise UserError(f"{doc.source}: holding out frames 0, {holdout_every}, ... "
                            f"(holdout_every {holdout_every}) of its {doc.n_listed} frames leaves "
                            f"none to {'evaluate' if held_out else 'train'} on"
                            + (f" ({len(doc.skipped)} without an image)" if doc.skipped else ""))
    cameras = [_fit(f.camera, max_image_size) for f in frames]
    width, height = cameras[0].w, cameras[0].h
    for frame, cam in zip(frames[1:], cameras[1:]):
        if (cam.w, cam.h) != (width, height):
            hint = ("" if max_image_size is None else f" at --max-image-size {max_image_size}")
            raise UserError(f"{frame.where}: image is {cam.w}x{cam.h} but frame 0's is "
                            f"{width}x{height}{hint}; all images of a split must have the same "
                            "size (same-aspect photos can be brought to one with --max-image-size)")
    n = len(frames)
    # One allocation for the whole split; mixed RGB/RGBA splits become RGBA (alpha 255).
    images = np.empty((n, height, width, 4 if any(alpha.values()) else 3), np.uint8)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1, n)) as pool:
        # Pillow releases the GIL while decoding, so threads speed up large datasets.
        list(pool.map(lambda i: _decode(frames[i].image, images[i], frames[i].where), range(n)))
    # Debug: a command that fails after loading must still print one line only; training
    # reports the dataset's memory in its metrics (NerfTask.metrics "dataset_mb").
    log.debug("%s: loaded %d images %dx%d (%.0f MB)", doc.source.name, n, width, height,
              images.nbytes / 1e6)
    return NerfDataset(images, cameras, doc.transform, [f.image for f in frames],
                       doc.source, Path(path).resolve(), doc.skipped)


def _fit(camera: Camera, max_image_size: int | None) -> Camera:
    """The camera of the image as loaded: fitted into max_image_size when larger."""
    if max_image_size is None or max(camera.w, camera.h) <= max_image_size:
        return camera
    return camera.fitted(max_image_size)


# -- images --------------------------------------------------------------------------------

def _probe(path: Path) -> tuple[int, int, bool]:
    """(width, height, has alpha) from the header only; OSError or ValueError when the file
    is not a readable image (`read_transforms` names the frame)."""
    try:
        with Image.open(path) as img:
            alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
            return img.width, img.height, alpha
    except Image.DecompressionBombError as e:
        raise ValueError(str(e)) from None


def _decode(path: Path, out: np.ndarray, where: str) -> None:
    """Decode `path` into `out` [H, W, 3 or 4] uint8, downscaled to out's size when smaller."""
    h, w = out.shape[:2]
    try:
        with Image.open(path) as img:
            if (img.width, img.height) != (w, h):
                img = _downscaled(img, w, h)
            img.load()
            out[...] = _to_uint8(img, out.shape[-1])
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as e:
        raise UserError(f"{where}: cannot read image {path} ({e})") from None


def _downscaled(img: Image.Image, w: int, h: int) -> Image.Image:
    """`img` resampled to w x h: JPEGs decode at 1/2, 1/4 or 1/8 scale first (at least w x h,
    much cheaper than a full decode), then Lanczos (Pillow premultiplies alpha for it)."""
    if img.format == "JPEG":
        img.draft(img.mode, (w, h))
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # Grey beyond 8 bits: resample as float in [0, 1] (mode F, which _to_uint8 takes as such).
        a = np.asarray(img).astype(np.float64)
        if img.mode != "F":
            a = a / (65535.0 if img.mode != "I" or a.max() > 255 else 255.0)
        return Image.fromarray(a.astype(np.float32), "F").resize((w, h), Image.LANCZOS)
    if img.mode not in ("RGB", "RGBA", "L", "LA"):
        img = img.convert("RGBA" if "transparency" in img.info or img.mode in ("PA", "RGBa", "La") else "RGB")
    return img.resize((w, h), Image.LANCZOS)


def _to_uint8(img: Image.Image, channels: int) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16-bit / float grey: Pillow's convert() would clip, not rescale.
        a = np.asarray(img).astype(np.float64)
        if img.mode == "F":
            a = a * 255.0
        elif img.mode != "I" or a.max() > 255:
            a = a * (255.0 / 65535.0)
        grey = np.clip(np.rint(a), 0, 255).astype(np.uint8)
        rgb = np.repeat(grey[..., None], 3, axis=-1)
        return rgb if channels == 3 else np.concatenate([rgb, np.full_like(grey, 255)[..., None]], -1)
    target = "RGBA" if channels == 4 else "RGB"
    return np.asarray(img if img.mode == target else img.convert(target))
