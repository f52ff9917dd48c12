"""Collecting and reading the photos: EXIF orientation applied, mixed sizes brought to one
long side, unreadable or tiny images reported as one-line errors naming the file.

Why one long side for all: SfM shares one camera between images of one size; photos from
the same camera differ only by orientation (portrait / landscape), which keeps the focal
length in pixels the same when the long side is the same.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import UserError

PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
MIN_SIDE = 64                      # below this SIFT finds too few features to be useful
JPEG_SUFFIXES = (".jpg", ".jpeg")


@dataclass(frozen=True)
class Photo:
    """One input image as prepared: its dataset name and sizes (w, h) of each copy."""
    name: str
    """File name in the dataset's images/ folder (and in SfM's image folder)."""
    source: Path
    original_size: tuple[int, int]
    """Size after EXIF orientation, before resizing."""
    sfm_size: tuple[int, int]
    out_size: tuple[int, int]


def _natural_key(path: Path) -> list:
    """img2 before img10."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def list_photos(folder: Path) -> list[Path]:
    """The image files directly in `folder`, in natural name order. UserError when none."""
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder")
    found = sorted((p for p in folder.iterdir()
                    if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES and not p.name.startswith(".")),
                   key=_natural_key)
    if not found:
        raise UserError(f"{folder}: no images found (looked for {', '.join(PHOTO_SUFFIXES)})")
    return found


def open_photo(path: Path, orient: bool = True) -> Image.Image:
    """The image as RGB, turned upright by its EXIF orientation tag when `orient`.
    UserError naming the file when it cannot be decoded or is smaller than MIN_SIDE."""
    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img) if orient else img
            img = img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise UserError(f"{path}: cannot read image ({e})") from None
    if min(img.size) < MIN_SIDE:
        raise UserError(f"{path}: image is {img.size[0]}x{img.size[1]} pixels, too small for "
                        f"feature matching (need at least {MIN_SIDE} on each side)")
    return img


def fitted_size(size: tuple[int, int], long_side: int | None) -> tuple[int, int]:
    """(w, h) scaled so the long side is `long_side` (never up); aspect kept, rounded."""
    w, h = size
    if long_side is None or max(w, h) <= long_side:
        return w, h
    s = long_side / max(w, h)
    return max(1, round(w * s)), max(1, round(h * s))


def photo_sizes(paths: list[Path], orient: bool = True) -> list[tuple[int, int]]:
    """Oriented (w, h) of each file from its header (cheap: no decoding)."""
    sizes = []
    for p in paths:
        try:
            with Image.open(p) as img:
                w, h = img.size
                orientation = img.getexif().get(0x0112, 1) if orient else 1
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
            raise UserError(f"{p}: cannot read image ({e})") from None
        sizes.append((h, w) if orientation in (5, 6, 7, 8) else (w, h))   # 90-degree turns
    return sizes


def prepare_photos(paths: list[Path], sfm_dir: Path | None, out_dir: Path, sfm_long_side: int,
                   out_long_side: int | None, orient: bool = True,
                   names: list[str] | None = None,
                   progress: Callable[[int], None] | None = None) -> list[Photo]:
    """Read each photo once and write its SfM copy (into `sfm_dir`, skipped when None)
    and its dataset copy (into `out_dir`), both JPEG for JPEG input, else PNG.

    Every copy of one kind gets the same long side: the smallest input long side capped by
    the requested one, so mixed sizes end up alike. `names` (default: the file names, with
    the dataset suffix) name the copies; `progress(done)` is called after each image."""
    sizes = photo_sizes(paths, orient)
    smallest = min(max(s) for s in sizes)
    sfm_long = min(sfm_long_side, smallest)
    out_long = smallest if out_long_side is None else min(out_long_side, smallest)
    photos = []
    for i, path in enumerate(paths):
        img = open_photo(path, orient)
        name = names[i] if names else path.name
        suffix = ".jpg" if path.suffix.lower() in JPEG_SUFFIXES else ".png"
        name = str(Path(name).with_suffix(suffix))
        out_img = _resized(img, out_long)
        dest = out_dir / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        _save(out_img, dest, fast=False)
        sfm_size = fitted_size(img.size, sfm_long)
        if sfm_dir is not None:
            sfm_dest = sfm_dir / name
            sfm_dest.parent.mkdir(parents=True, exist_ok=True)
            sfm_img = out_img if out_img.size == sfm_size else _resized(img, sfm_long)
            _save(sfm_img, sfm_dest, fast=True)
        photos.append(Photo(name, path, img.size, sfm_size, out_img.size))
        if progress:
            progress(i + 1)
    return photos


def _save(img: Image.Image, dest: Path, fast: bool) -> None:
    """JPEG (quality 95, no chroma subsampling) or PNG, as the name says."""
    if dest.suffix == ".jpg":
        img.save(dest, quality=95, subsampling=0)
    else:
        img.save(dest, compress_level=1 if fast else 3)


def _resized(img: Image.Image, long_side: int) -> Image.Image:
    size = fitted_size(img.size, long_side)
    return img if size == img.size else img.resize(size, Image.Resampling.LANCZOS)
