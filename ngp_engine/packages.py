"""Packages that only some commands need, imported when first used.

libigl (mesh distances, an SDF's training samples) and PyMCubes (marching cubes) are in
requirements.txt, but a NeRF's or an image's training runs without them: importing them at
module level made every NeRF command fail on an interpreter that lacks them (a GPU machine
whose Python comes with torch and triton but not these, say). The error names the package,
what needed it, and the pip line from requirements.txt.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from .errors import UserError
from .probe import IMPORT_NAMES, command_line, requirement_name, requirements


def require(dist: str, purpose: str) -> ModuleType:
    """The module of pip distribution `dist` (as requirements.txt names it), or a UserError
    saying that `purpose` needs it and how to install it."""
    module = IMPORT_NAMES.get(dist.lower(), dist)
    try:
        return importlib.import_module(module)
    except ImportError as e:
        line = next((r for r in requirements() if requirement_name(r).lower() == dist.lower()), dist)
        why = " ".join(str(e).split())           # one line, whatever the loader said
        raise UserError(f"{purpose} needs {dist}, which does not import here ({why}); install it "
                        f"into the engine's Python: pip install {command_line([line])}") from e
