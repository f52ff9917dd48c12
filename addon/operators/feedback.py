"""How an operator tells the user it failed: one sentence, in the panel and the status bar."""
from __future__ import annotations

import bpy

from ..engine_link import STATE


def fail(op: bpy.types.Operator, message: str) -> set[str]:
    """Report `message` as the operator's error (headless: a RuntimeError from bpy.ops), show
    it in the panel, and return the operator's CANCELLED result."""
    STATE.message = message
    op.report({"ERROR"}, message)
    return {"CANCELLED"}
