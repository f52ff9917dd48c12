"""Images larger than memory: a TIFF (BigTIFF, tiled or in strips, any compression tifffile
decodes) read one chunk (tile or strip) at a time, with a bounded cache, never whole.

Training draws its random pixels from a few random chunks per step (`sample`): reading
uniformly random pixels of a gigapixel image would touch every tile every step. Chunks are
picked with probability proportional to their area inside the image and pixels uniformly
within them, so every pixel is equally likely; the positions are continuous (uniform within
the pixel) and the target is that pixel's value.

Values: uint8 / uint16 scaled to [0, 1]; float TIFFs are taken as they are (linear, may
exceed 1: HDR). Pixel (row i, column j) covers x in [j, j+1) / W and y in [i, i+1) / H, as
for in-memory images (tasks/image.py).
"""
from __future__ import annotations

import collections
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import UserError

DEFAULT_CACHE_BYTES = 128 << 20     # decoded chunks kept, as stored (8-bit: 682 tiles of 256^2 RGB)
CHUNKS_PER_STEP = 64                # distinct chunks one training batch draws from


@dataclass(frozen=True)
class ImageShape:
    """An image's size without its pixels: what rendering a trained field needs."""

    height: int
    width: int
    channels: int
    hdr: bool = False

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.height, self.width, self.channels


class TiledImage:
    """A TIFF read by chunks; `height` x `width` pixels of `channels` values."""

    def __init__(self, path: str | os.PathLike, cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.path = Path(path)
        self._tif = None
        try:
            self._open(cache_bytes)
        except BaseException:
            if self._tif is not None:
                self._tif.close()
            raise

    def _open(self, cache_bytes: int) -> None:
        import tifffile  # noqa: PLC0415

        try:
            self._tif = tifffile.TiffFile(self.path)
            page = self._tif.pages.first
            shape, dtype = page.shape, np.dtype(page.dtype)
        except Exception as e:  # noqa: BLE001 - tifffile raises many kinds for bad files
            raise UserError(f"{self.path}: not a TIFF tifffile can read ({type(e).__name__}: {e})") from None
        if page.planarconfig != 1 and page.samplesperpixel > 1:
            raise UserError(f"{self.path}: planar (separate-plane) TIFFs are not supported; save it "
                            "with interleaved samples")
        if len(shape) == 2:
            shape = (*shape, 1)
        if len(shape) != 3 or shape[2] not in (1, 3, 4):
            raise UserError(f"{self.path}: image of shape {tuple(page.shape)}; grey, RGB or RGBA is needed")
        self._page = page
        self.height, self.width, self.channels = (int(v) for v in shape)
        self.chunk_h, self.chunk_w = int(page.chunks[0]), int(page.chunks[1])
        self.rows = -(-self.height // self.chunk_h)
        self.cols = -(-self.width // self.chunk_w)
        if self.rows * self.cols != len(page.dataoffsets):
            raise UserError(f"{self.path}: {len(page.dataoffsets)} chunks for a {self.rows}x{self.cols} "
                            "grid; not a layout this reader follows")
        # A truncated file is refused now, before any output exists, not at some step.
        ends = np.asarray(page.dataoffsets, np.int64) + np.asarray(page.databytecounts, np.int64)
        size = self.path.stat().st_size
        if len(ends) and int(ends.max()) > size:
            first = int(np.argmax(ends > size))
            raise UserError(f"{self.path}: truncated ({size} bytes; chunk {first} ends at byte "
                            f"{int(ends[first])})")
        if dtype == np.uint8:
            self.top: float | None = 255.0      # integer samples are divided by their top value
        elif dtype == np.uint16:
            self.top = 65535.0
        elif dtype.kind == "f":
            self.top = None
        else:
            raise UserError(f"{self.path}: {dtype} samples; 8- or 16-bit integers or floats are needed")
        self.hdr = dtype.kind == "f"
        chunk_bytes = self.chunk_h * self.chunk_w * self.channels * dtype.itemsize
        self.cache_chunks = max(1, cache_bytes // chunk_bytes)
        self._cache: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()
        self.chunks_read = 0           # decodes so far (cache misses)
        # Chunk areas inside the image: the sampling weights (edge chunks are cut).
        hs = np.minimum(self.chunk_h, self.height - np.arange(self.rows) * self.chunk_h)
        ws = np.minimum(self.chunk_w, self.width - np.arange(self.cols) * self.chunk_w)
        self._chunk_shape = np.stack(np.meshgrid(hs, ws, indexing="ij"), -1).reshape(-1, 2)   # [K, 2]
        self._weights = torch.from_numpy((self._chunk_shape[:, 0] * self._chunk_shape[:, 1]).astype(np.float64))

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.height, self.width, self.channels

    @property
    def n_pixels(self) -> int:
        return self.height * self.width

    def close(self) -> None:
        self._tif.close()
        self._cache.clear()

    # ------------------------------------------------------------------ chunks
    def values(self, stored: np.ndarray) -> np.ndarray:
        """Stored samples (any shape) as float32: integers over their top value, floats as
        they are."""
        out = stored.astype(np.float32)
        return out / np.float32(self.top) if self.top is not None else out

    def chunk(self, index: int) -> np.ndarray:
        """Chunk `index` (row-major in the chunk grid) as stored (uint8, uint16 or float)
        [h, w, C], cut to the image; cached so (8-bit: a quarter of float32's memory)."""
        hit = self._cache.get(index)
        if hit is not None:
            self._cache.move_to_end(index)
            return hit
        page, fh = self._page, self._tif.filehandle
        offset, size = int(page.dataoffsets[index]), int(page.databytecounts[index])
        try:
            fh.seek(offset)
            data = fh.read(size)
            if len(data) != size:
                raise EOFError(f"{len(data)} of {size} bytes")
            segment = page.decode(data, index, jpegtables=page.jpegtables)[0]
        except Exception as e:  # noqa: BLE001 - truncated or corrupt data
            r, c = divmod(index, self.cols)
            raise UserError(f"{self.path}: cannot read chunk {index} (rows from {r * self.chunk_h}, "
                            f"columns from {c * self.chunk_w}): {type(e).__name__}: {e}") from None
        h, w = (int(v) for v in self._chunk_shape[index])
        arr = np.ascontiguousarray(np.asarray(segment).reshape(segment.shape[-3], segment.shape[-2], -1)
                                   [:h, :w, :self.channels])
        self.chunks_read += 1
        self._cache[index] = arr
        while len(self._cache) > self.cache_chunks:
            self._cache.popitem(last=False)
        return arr

    def region(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """Pixels [y0, y1) x [x0, x1) as float32 [y1 - y0, x1 - x0, C]."""
        out = np.empty((y1 - y0, x1 - x0, self.channels), np.float32)
        for r in range(y0 // self.chunk_h, (y1 - 1) // self.chunk_h + 1):
            for c in range(x0 // self.chunk_w, (x1 - 1) // self.chunk_w + 1):
                arr = self.chunk(r * self.cols + c)
                cy0, cx0 = r * self.chunk_h, c * self.chunk_w
                ya, yb = max(y0, cy0), min(y1, cy0 + arr.shape[0])
                xa, xb = max(x0, cx0), min(x1, cx0 + arr.shape[1])
                out[ya - y0:yb - y0, xa - x0:xb - x0] = self.values(arr[ya - cy0:yb - cy0, xa - cx0:xb - cx0])
        return out

    # ------------------------------------------------------------------ sampling
    def sample(self, n: int, generator: torch.Generator, device: torch.device,
               chunks_per_step: int = CHUNKS_PER_STEP) -> tuple[torch.Tensor, torch.Tensor]:
        """n random positions [n, 2] (x, y in [0, 1]) and their pixels' values [n, C], drawn
        from `chunks_per_step` random chunks (by area: every pixel equally likely)."""
        k = min(chunks_per_step, n)
        picked = torch.multinomial(self._weights, k, replacement=True, generator=_cpu(generator))   # [k]
        which = picked[torch.arange(n) % k]                                                         # [n]
        u = torch.rand(n, 2, generator=_cpu(generator), dtype=torch.float64)                        # [n, 2]
        shape = torch.from_numpy(self._chunk_shape)[which]                                          # [n, 2] h, w
        row_in = (u[:, 1] * shape[:, 0]).long().clamp_max(shape[:, 0] - 1)
        col_in = (u[:, 0] * shape[:, 1]).long().clamp_max(shape[:, 1] - 1)
        values = np.empty((n, self.channels), np.float32)
        which_np, row_np, col_np = which.numpy(), row_in.numpy(), col_in.numpy()
        for index in np.unique(which_np):
            sel = np.nonzero(which_np == index)[0]
            values[sel] = self.values(self.chunk(int(index))[row_np[sel], col_np[sel]])
        r, c = np.divmod(which_np, self.cols)
        rows = torch.from_numpy(r * self.chunk_h) + row_in
        cols = torch.from_numpy(c * self.chunk_w) + col_in
        jitter = torch.rand(n, 2, generator=_cpu(generator), dtype=torch.float64)
        xy = torch.stack([(cols + jitter[:, 0]) / self.width, (rows + jitter[:, 1]) / self.height], 1)
        return xy.float().to(device), torch.from_numpy(values).to(device)

    def pixels(self, n: int, seed: int | tuple[int, ...] = 0) -> tuple[np.ndarray, np.ndarray]:
        """n uniformly random pixels for evaluation, read chunk by chunk: their centres
        float32 [n, 2] (x, y in [0, 1]) and values float32 [n, C]."""
        rng = np.random.default_rng(seed)
        flat = rng.integers(0, self.n_pixels, n)
        rows, cols = np.divmod(flat, self.width)
        index = (rows // self.chunk_h) * self.cols + cols // self.chunk_w
        order = np.argsort(index, kind="stable")
        values = np.empty((n, self.channels), np.float32)
        bounds = np.flatnonzero(np.diff(index[order])) + 1
        for part in np.split(order, bounds):
            if len(part):
                i = int(index[part[0]])
                r, c = divmod(i, self.cols)
                values[part] = self.values(self.chunk(i)[rows[part] - r * self.chunk_h, cols[part] - c * self.chunk_w])
        xy = np.stack([(cols + 0.5) / self.width, (rows + 0.5) / self.height], 1).astype(np.float32)
        return xy, values


def write_tiled_tiff(path: str | os.PathLike, width: int, height: int, channels: int,
                     render: Callable[[int, int, int, int], np.ndarray], hdr: bool = False,
                     tile: int = 256) -> Path:
    """Write a tiled BigTIFF (deflate) of `height` x `width` pixels, asking `render(x0, y0,
    x1, y1)` for one tile at a time (float32 [y1 - y0, x1 - x0, C] in [0, 1], or linear
    values with `hdr`), so that no more than a tile is in memory; 8-bit, or float32 with
    `hdr`. Written to a temporary name and renamed: never half a file under `path`."""
    import tifffile  # noqa: PLC0415

    from ..files import atomic_write  # noqa: PLC0415

    dtype = np.float32 if hdr else np.uint8

    def tiles():
        for y0 in range(0, height, tile):
            for x0 in range(0, width, tile):
                x1, y1 = min(width, x0 + tile), min(height, y0 + tile)
                block = np.zeros((tile, tile, channels), dtype)      # edge tiles padded
                values = render(x0, y0, x1, y1)
                block[:y1 - y0, :x1 - x0] = values if hdr else np.clip(values * 255.0 + 0.5, 0, 255)
                yield block

    photometric = "minisblack" if channels == 1 else "rgb"
    extra = {"extrasamples": ["unassalpha"]} if channels == 4 else {}
    path = Path(path)
    atomic_write(path, lambda tmp: tifffile.imwrite(
        tmp, tiles(), shape=(height, width, channels), dtype=dtype, tile=(tile, tile),
        bigtiff=True, photometric=photometric, compression="zlib", **extra))
    return path


def _cpu(generator: torch.Generator) -> torch.Generator:
    """Chunk sampling runs on the host (the file is there); a device generator cannot
    drive it, so a CPU one derived from it is used."""
    if generator.device.type == "cpu":
        return generator
    raise ValueError("TiledImage.sample needs a CPU generator")


def is_tiled_tiff(path: str | os.PathLike, large_pixels: int = 1 << 26) -> bool:
    """Whether `path` is a TIFF to read by chunks: tiled, a BigTIFF, or of more than
    `large_pixels` pixels (Pillow would load those whole, if it can read them at all)."""
    p = Path(path)
    if p.suffix.lower() not in (".tif", ".tiff") or not p.is_file():
        return False
    try:
        import tifffile  # noqa: PLC0415

        with tifffile.TiffFile(p) as tf:
            page = tf.pages.first
            return bool(page.is_tiled or tf.is_bigtiff or page.shape[0] * page.shape[1] > large_pixels
                        or np.dtype(page.dtype) not in (np.uint8,))
    except Exception:  # noqa: BLE001 - not readable by tifffile: Pillow gets to say why
        return False
