"""Loading a NeRF dataset split into memory: the frames that `formats.transforms` reads
(cameras, image files, the scene's unit cube; its docstring has the conventions), with the
images decoded by Pillow into one compact uint8 array, and one-line `UserError`s naming
the file, the frame and the key.
"""
from __future__ import annotations

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


def load_nerf_dataset(path: str | os.PathLike, split: str = "train") -> NerfDataset:
    """Read one split of a NeRF-synthetic folder or an instant-ngp transforms.json."""
    alpha: dict[Path, bool] = {}

    def image_size(file: Path) -> tuple[int, int]:
        w, h, alpha[file] = _probe(file)
        return w, h

    # Every image is probed (header only): the decoder needs the sizes and alpha up front.
    doc = read_transforms(path, split, image_size=image_size, check_sizes=True)
    frames = doc.frames
    width, height = frames[0].camera.w, frames[0].camera.h
    for frame in frames[1:]:
        w, h = frame.camera.w, frame.camera.h
        if (w, h) != (width, height):
            raise UserError(f"{frame.where}: image is {w}x{h} but frame 0's is {width}x{height}; "
                            "all images of a split must have the same size")
    n = len(frames)
    # One allocation for the whole split; mixed RGB/RGBA splits become RGBA (alpha 255).
    images = np.empty((n, height, width, 4 if any(alpha.values()) else 3), np.uint8)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1, n)) as pool:
        # Pillow releases the GIL while decoding, so threads speed up large datasets.
        list(pool.map(lambda i: _decode(frames[i].image, images[i], frames[i].where), range(n)))
    return NerfDataset(images, [f.camera for f in frames], doc.transform, [f.image for f in frames],
                       doc.source, Path(path).resolve())


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
    """Decode `path` into `out` [H, W, 3 or 4] uint8."""
    try:
        with Image.open(path) as img:
            img.load()
            out[...] = _to_uint8(img, out.shape[-1])
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as e:
        raise UserError(f"{where}: cannot read image {path} ({e})") from None


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
