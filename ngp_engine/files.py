"""Atomic writes for run outputs: a crash never leaves a half-written file."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import torch

from .errors import UserError
from .formats.atomic import atomic_write  # the one atomic writer; re-exported for the engine


def write_json(path: str | os.PathLike, data: Any) -> None:
    atomic_write(Path(path), lambda tmp: Path(tmp).write_text(json.dumps(data, indent=2) + "\n"))


def save_torch(path: str | os.PathLike, obj: Any) -> None:
    atomic_write(Path(path), lambda tmp: torch.save(obj, tmp))


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


def config_from_checkpoint(cls: type, ckpt: dict[str, Any], where: str | os.PathLike,
                           backend: str | None = None) -> Any:
    """The checkpoint's config of type `cls` (UserError naming `where` if it is not one),
    with `backend` overriding the recorded one: checkpoints move across backends."""
    from . import config as cfgmod  # noqa: PLC0415

    try:
        cfg = cfgmod.from_dict(cls, ckpt["config"])
    except cfgmod.ConfigError as e:
        raise UserError(f"{where}: {e}") from None
    return cfgmod.replace(cfg, backend=backend) if backend is not None else cfg


def load_weights(module: torch.nn.Module, state: dict[str, Any], where: str | os.PathLike) -> None:
    """module.load_state_dict(state) (a module or an optimiser), or a one-line UserError."""
    try:
        module.load_state_dict(state)
    except (KeyError, RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{where}: checkpoint does not match its configuration ({first})") from None


def restore_training(ckpt: dict[str, Any], where: str | os.PathLike, model: torch.nn.Module,
                     optimizer: torch.optim.Optimizer, sampler: torch.Generator) -> None:
    """Load model, optimiser and sampler state from a trainer checkpoint. A sampler state of
    another device type (CPU checkpoint, CUDA run) cannot be set: the fresh one is kept."""
    load_weights(model, ckpt["model"], where)
    load_weights(optimizer, ckpt["optimizer"], where)
    try:
        sampler.set_state(ckpt["sampler"])
    except RuntimeError:
        pass


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
