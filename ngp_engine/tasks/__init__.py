"""The training tasks and their registry: mode name -> Task class (see tasks/base.py).

Adding a task: a module (or package) here with a `Task` subclass, and one line in
`_BUILTIN`. Tasks are imported when first asked for, so importing this package stays light.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ..errors import UserError

if TYPE_CHECKING:
    from .base import Task

_BUILTIN: dict[str, str] = {
    "nerf": "ngp_engine.tasks.nerf.task:NerfTask",
    "sdf": "ngp_engine.tasks.sdf.task:SdfTask",
    "image": "ngp_engine.tasks.image:ImageTask",
}
_registered: dict[str, type["Task"]] = {}


def register(cls: type["Task"]) -> type["Task"]:
    """Add a task class under its `mode` (also usable as a class decorator)."""
    _registered[cls.mode] = cls
    return cls


def modes() -> list[str]:
    """Every mode this engine can train."""
    return [*_BUILTIN, *(m for m in _registered if m not in _BUILTIN)]


def task_class(mode: str, where: str = "train.mode") -> type["Task"]:
    """The Task class of `mode` (UserError naming `where` for an unknown one)."""
    if mode in _registered:
        return _registered[mode]
    if mode not in _BUILTIN:
        raise UserError(f"{where}: {mode!r} is not one of {', '.join(modes())}")
    module, name = _BUILTIN[mode].split(":")
    cls = getattr(importlib.import_module(module), name)
    _registered[mode] = cls
    return cls
