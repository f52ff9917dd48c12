"""Atomic writes for run outputs: a crash never leaves a half-written file."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def write_json(path: str | os.PathLike, data: Any) -> None:
    atomic_write(Path(path), lambda tmp: Path(tmp).write_text(json.dumps(data, indent=2) + "\n"))


def save_torch(path: str | os.PathLike, obj: Any) -> None:
    atomic_write(Path(path), lambda tmp: torch.save(obj, tmp))


def atomic_write(path: Path, write) -> None:
    """Call write(tmp_path) beside `path`, then rename onto it."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
