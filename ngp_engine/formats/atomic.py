"""Atomic file writes: a crash or a full disk never leaves a half-written file.

Standard library only (the add-on imports `formats` inside Blender); `ngp_engine.files`
re-exports `atomic_write` for the engine's checkpoints, images and passes.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Call write(tmp_path) on a temporary file beside `path`, then rename it onto `path`
    (os.replace is atomic on one file system). On any failure the temporary file is removed
    and an existing `path` is left as it was."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
