"""The folder an engine may touch when it serves a remote client (`serve --root DIR`).

Every path in a request is taken relative to the root and must stay inside it: an absolute
path, `..` past the root or a symlink that leads out is refused with a one-line error naming
the field. Paths the engine reports (artifacts, summaries) are given relative to the root, so
the client never learns or depends on where the root lies on the remote machine. Without a
root (a local engine, the add-on's own child process) paths pass through unchanged.

Standard library only.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import UserError

SUMMARY_PATHS = ("run_dir", "checkpoint", "dataset", "metrics")   # summary keys that hold a path


class RunRoot:
    """`root`: the folder (created), or None for no confinement."""

    def __init__(self, root: str | os.PathLike | None) -> None:
        self.root = None if root is None else Path(os.path.expanduser(str(root))).resolve()
        if self.root is not None:
            self.root.mkdir(parents=True, exist_ok=True)

    def inside(self, path: str, field: str) -> Path:
        """The local path a request's `field` names (UserError if it leaves the root)."""
        if self.root is None:
            return Path(path)
        p = Path(path)
        if p.is_absolute() or p.drive:
            raise UserError(f"{field}: {path!r} is an absolute path; name it relative to the run folder")
        full = (self.root / p).resolve()          # resolves .. and symlinks
        if full != self.root and not full.is_relative_to(self.root):
            raise UserError(f"{field}: {path!r} is outside the run folder")
        return full

    def shown(self, path: str | os.PathLike) -> str:
        """How the engine names one of its files to the client."""
        if self.root is None:
            return str(path)
        p = Path(path).resolve()
        return p.relative_to(self.root).as_posix() if p.is_relative_to(self.root) else str(path)

    def shown_summary(self, summary: dict[str, Any]) -> dict[str, Any]:
        """`summary` with its path values shown as `shown` names them."""
        return {k: (self.shown(v) if k in SUMMARY_PATHS and isinstance(v, str) and v else v)
                for k, v in summary.items()}
