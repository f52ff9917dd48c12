"""Fit an image field to a Blender image (the Image Editor's, or one named) and bring the
field's rendering back as a new image: what a neural texture of that size looks like."""
from __future__ import annotations

import bpy
import numpy as np

from .. import engine_link
from ..blender_io import images
from ..engine_link import STATE, EngineError
from ..ngp_engine.service.protocol import Preview
from ..properties import run_folder
from .feedback import fail
from .training import _TrainingOperator, request_id

MAX_RENDER_SIDE = 8192      # the protocol's largest preview side: bigger images come back scaled


def _editor_image(context: bpy.types.Context) -> bpy.types.Image | None:
    space = getattr(context, "space_data", None)
    return getattr(space, "image", None) if getattr(space, "type", "") == "IMAGE_EDITOR" else None


class NGP_OT_fit_image(_TrainingOperator, bpy.types.Operator):
    """Fit a hash-grid image field to the image (the scene's preset and budget); when it is
    trained its rendering appears as a new image "<name> (NGP)", with what it costs"""

    bl_idname = "ngp.fit_image"
    bl_label = "Fit Image Field"

    image_name: bpy.props.StringProperty(name="Image", default="",
                                         description="The image to fit (empty: the Image Editor's)")

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        if STATE.status in engine_link.BUSY:
            cls.poll_message_set("the engine is busy; stop its job first")
            return False
        return True

    def execute(self, context: bpy.types.Context) -> set[str]:
        img = bpy.data.images.get(self.image_name) if self.image_name else _editor_image(context)
        if img is None:
            return fail(self, f"no image named {self.image_name!r}" if self.image_name
                        else "open an image in the Image Editor (or name one)")
        folder = run_folder(context.scene) / "image" / bpy.path.clean_name(img.name)
        folder.mkdir(parents=True, exist_ok=True)
        is_float = bool(img.is_float)
        data = folder / ("input.exr" if is_float else "input.png")
        try:
            w, h, is_float = images.save_image_copy(img, data)
        except (ValueError, RuntimeError) as e:
            return fail(self, f"{img.name}: cannot write it for the engine ({e})")
        STATE.source_object = img.name
        # Values to show as they are: float images (linear) and data (Non-Color) images;
        # 8-bit colour images hold sRGB-encoded values, made linear for a float image.
        as_is = is_float or bool(img.colorspace_settings.is_data)
        scale = min(1.0, MAX_RENDER_SIDE / max(w, h))
        STATE.image_fit = {"name": img.name, "size": [max(1, round(w * scale)), max(1, round(h * scale))],
                           "linear": as_is}
        return self.start(context, "image", data, folder / "run")


def on_event(ev) -> None:
    """A finished image fit asks for its rendering; the rendering becomes "<name> (NGP)"."""
    fit = STATE.image_fit
    if fit is None or STATE.mode != "image":
        return
    if ev.type in ("done", "error") and ev.request == STATE.pending.get("train") and (
            ev.type == "error" or ev.summary.get("stopped")):
        STATE.image_fit = None              # stopped or failed: nothing comes back
        return
    if ev.type == "done" and ev.request == STATE.pending.get("train"):
        fit["summary"] = ev.summary
        try:
            engine_link.send(Preview(camera=None, passes=["rgb"], resolution=fit["size"],
                                     id=request_id("image_render")))
            STATE.message = f"rendering {fit['name']} from its field"
        except EngineError as e:
            STATE.message = str(e)
    elif (ev.type == "artifact" and ev.kind == "pass" and ev.request == STATE.pending.get("image_render")):
        arr = np.load(ev.path)
        # Byte images hold display (sRGB) values; Blender's float images are linear.
        linear = arr if fit["linear"] else np.where(arr <= 0.04045, arr / 12.92, ((arr + 0.055) / 1.055) ** 2.4)
        name = f"{fit['name']} (NGP)"
        images.image_from_array(name, linear)
        s = fit.get("summary", {})
        n = int(s.get("n_params", 0))
        STATE.message = (f"{name}: PSNR {s.get('psnr', float('nan')):.2f} dB, {n:,} parameters "
                         f"({2 * n / 1024:.0f} KB as float16) after {s.get('steps', 0)} steps")
        STATE.image_fit = None


__all__ = ["NGP_OT_fit_image", "on_event"]
