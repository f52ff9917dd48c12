"""Atomic writes for run outputs: a crash never leaves a half-written file."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import torch

from .errors import UserError


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


def load_checkpoint(path: str | os.PathLike, fmt: str, required: Sequence[str], kind: str) -> dict[str, Any]:
    """Read a checkpoint written by `save_torch` whose "format" is `fmt` and which holds every
    key of `required`; anything else is a one-line UserError naming the file (`kind` says
    what was expected, e.g. "NeRF")."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds for a corrupt or foreign file
        raise UserError(f"{path}: not a readable checkpoint ({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != fmt:
        raise UserError(f"{path}: not {kind} checkpoint")
    missing = [k for k in required if k not in ckpt]
    if missing:
        raise UserError(f"{path}: checkpoint lacks {', '.join(missing)}")
    return ckpt


def to_cpu(obj: Any) -> Any:
    """Tensors (nested in dicts, lists, tuples) detached and moved to the CPU, for saving."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def check_writable_dir(path: Path, what: str) -> None:
    """Create folder `path` if needed and check that files can be written there, so that a
    run fails before training, not after it. `what` names the option or field in the error."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise UserError(f"{what} {path}: cannot write there ({e.strerror or e})") from None
