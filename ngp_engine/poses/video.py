"""Frames from a video (PyAV): `target` frames sampled evenly, the sharpest of each window.

Why windows of the sharpest: handheld video blurs while the camera moves fast; within each
of `target` equal stretches of the video the frame with the largest variance of the
Laplacian (a standard focus measure) has the crispest edges, which SIFT needs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import UserError

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
_SHARPNESS_SIDE = 480   # frames are scored on a copy this wide: fast, and noise matters less


def sharpness(grey: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian of a grey image [H, W] (float)."""
    g = grey.astype(np.float32)
    lap = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    return float(lap.var())


def _open(path: Path):
    import av  # noqa: PLC0415

    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as e:
        raise UserError(f"{path}: cannot decode video ({e})") from None
    if not container.streams.video:
        container.close()
        raise UserError(f"{path}: no video stream in the file")
    return container


def count_frames(path: Path) -> int:
    """Number of video frames, by counting packets (no decoding)."""
    import av  # noqa: PLC0415

    container = _open(path)
    try:
        stream = container.streams.video[0]
        n = sum(1 for packet in container.demux(stream) if packet.size > 0)
    except av.FFmpegError as e:
        raise UserError(f"{path}: cannot decode video ({e})") from None
    finally:
        container.close()
    if n == 0:
        raise UserError(f"{path}: the video has no frames")
    return n


def sample_frames(path: Path, target: int, dest: Path,
                  progress: Callable[[int, int], None] | None = None) -> list[Path]:
    """Decode `path` once and write the sharpest frame of each of `target` equal windows
    as dest/frame_<index>.png (RGB); returns the files in video order. `progress(done,
    total)` counts decoded frames. UserError when the file is not a decodable video."""
    import av  # noqa: PLC0415

    total = count_frames(path)
    n_windows = min(target, total)
    window = (np.arange(total) * n_windows) // total          # frame index -> window
    dest.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    best: tuple[float, int, object] | None = None               # the open window's sharpest

    def flush() -> None:
        # Windows are contiguous: once the next one starts, its predecessor's best is final,
        # so only one decoded frame is ever held (4K frames are 25 MB each).
        if best is not None:
            files.append(dest / f"frame_{best[1]:06d}.png")
            best[2].to_image().save(files[-1], compress_level=1)

    container = _open(path)
    decoded = 0
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for i, frame in enumerate(container.decode(stream)):
            if i >= total:
                break
            if i > 0 and window[i] != window[i - 1]:
                flush()
                best = None
            grey = frame.reformat(width=_SHARPNESS_SIDE,
                                  height=max(2, round(frame.height * _SHARPNESS_SIDE / frame.width)),
                                  format="gray").to_ndarray()
            score = sharpness(grey)
            if best is None or score > best[0]:
                best = (score, i, frame)
            decoded = i + 1
            if progress and (decoded % 10 == 0 or decoded == total):
                progress(decoded, total)
        flush()
    except (av.FFmpegError, ValueError) as e:
        raise UserError(f"{path}: cannot decode video at frame {decoded} ({e})") from None
    finally:
        container.close()
    if not files:
        raise UserError(f"{path}: cannot decode video (no frame could be decoded)")
    return files
