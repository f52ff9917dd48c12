"""The "NGP Fields" render engine: F12 and Render Animation render the trained field from the
scene camera through the engine service, like any Blender render.

Each frame is asked for in bands of rows (a tile camera: the frame's intrinsics with the
principal point moved, so bands join exactly), shown as they arrive, and cancellable
between bands (Esc). Passes: Combined (linear, premultiplied alpha; over the world colour
unless the film is transparent), Depth (distance along the view axis, as Cycles writes it;
1e10 where nothing was hit), Normal (world space) and "NGP Opacity". Resolution, percentage,
lens shift, pixel aspect and animated cameras count (the camera is the depsgraph's, at the
frame being rendered).

The request goes through `engine_link.request`, which waits for its artifacts itself: in the
UI `render` runs on Blender's render thread while the pump keeps serving the main thread;
headless it runs on the main thread with no pump at all."""
from __future__ import annotations

import dataclasses
import itertools

import bpy
import numpy as np

from . import engine_link
from .blender_io import SceneIOError, cameras
from .engine_link import STATE, EngineError
from .ngp_engine.formats.camera import Camera
from .ngp_engine.service.protocol import Preview

ENGINE_ID = "NGP_FIELDS"
BAND_PIXELS = 1 << 15              # pixels per request: a progress update every fraction of a second on a GPU
NO_HIT_DEPTH = 1e10                # what Cycles writes where a ray leaves the scene
OPACITY_PASS = "NGP Opacity"
_ids = itertools.count(1)


class FieldRenderError(Exception):
    """Why a frame cannot be rendered: one sentence for the user."""


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    return np.where(c <= 0.04045, c / 12.92, ((np.clip(c, 0, None) + 0.055) / 1.055) ** 2.4)


def band_camera(cam: Camera, y0: int, rows: int) -> Camera:
    """Rows y0 .. y0 + rows (from the top) of `cam`'s image as a camera of their own (every
    other field, the lens included, as it is)."""
    _cx, cy = cam.principal_point
    return dataclasses.replace(cam, h=rows, cy=cy - y0)


def frame_camera(depsgraph: bpy.types.Depsgraph) -> Camera:
    """The engine's camera for the scene camera at the depsgraph's frame."""
    scene = depsgraph.scene
    if scene.camera is None or scene.camera.type != "CAMERA":
        raise FieldRenderError("NGP Fields: the scene has no camera to render from")
    if scene.camera.data.type != "PERSP":
        raise FieldRenderError(f"NGP Fields: camera '{scene.camera.name}' is not a perspective camera")
    try:
        return cameras.pinhole_camera(scene.camera.evaluated_get(depsgraph), scene)
    except SceneIOError as e:
        raise FieldRenderError(f"NGP Fields: {e}") from None


def combined(rgb_on_white: np.ndarray, opacity: np.ndarray, world: np.ndarray | None) -> np.ndarray:
    """[H, W, 4] linear premultiplied RGBA from the engine's rgb (composited on white, in the
    photos' sRGB) and opacity; over `world` (linear [3]) with alpha 1 when given."""
    a = np.clip(opacity, 0.0, 1.0)[..., None]
    premult = np.clip(rgb_on_white - (1.0 - a), 0.0, 1.0)           # rgb = c + (1 - a) * white
    straight = np.where(a > 1e-4, premult / np.maximum(a, 1e-4), 0.0)
    lin = srgb_to_linear(np.clip(straight, 0.0, 1.0)) * a
    if world is not None:
        return np.concatenate([lin + (1.0 - a) * world, np.ones_like(a)], axis=-1)
    return np.concatenate([lin, a], axis=-1)


class NGP_RenderEngine(bpy.types.RenderEngine):
    bl_idname = ENGINE_ID
    bl_label = "NGP Fields"
    bl_use_preview = False
    bl_use_postprocess = True

    def render(self, depsgraph: bpy.types.Depsgraph) -> None:
        try:
            self._render(depsgraph)
        except Exception as e:  # noqa: BLE001 - a render must end in one line, never a traceback
            text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            if not isinstance(e, (FieldRenderError, EngineError)):
                text = f"{type(e).__name__}: {text}"
            msg = text if text.startswith("NGP Fields") else f"NGP Fields: {text}"
            STATE.message = msg
            self.report({"ERROR"}, msg)

    def _render(self, depsgraph: bpy.types.Depsgraph) -> None:
        scene = depsgraph.scene
        if engine_link.client() is None or STATE.status in ("idle", "starting") or not STATE.mode:
            raise FieldRenderError("NGP Fields: nothing trained in this session yet: train first, or Load "
                                   "the last trained field (NGP panel)")
        if STATE.mode not in ("nerf", "sdf"):
            raise FieldRenderError(f"NGP Fields: the engine holds an {STATE.mode} field, which has no 3-D view")
        if scene.render.use_border:
            raise FieldRenderError("NGP Fields: render regions (border) are not supported yet; turn Render Region off")
        cam = frame_camera(depsgraph)
        w, h = cam.w, cam.h
        layer_name = depsgraph.view_layer.name
        film = scene.render.film_transparent
        world = None
        if not film:
            world = np.array(scene.world.color[:3], np.float32) if scene.world is not None else np.zeros(3, np.float32)
        for name, channels, chan in (("Depth", 1, "Z"), ("Normal", 3, "XYZ"), (OPACITY_PASS, 1, "X")):
            self.add_pass(name, channels, chan)
        rows = max(1, min(h, BAND_PIXELS // max(1, w)))
        passes = ["rgb", "opacity", "depth", "normals"]
        for y0 in range(0, h, rows):
            n = min(rows, h - y0)
            self.update_stats("", f"NGP Fields: frame {scene.frame_current}, rows {y0}-{y0 + n} of {h}")
            msg = Preview(camera=band_camera(cam, y0, n), passes=passes, id=f"render-{next(_ids)}")
            got = engine_link.request(msg, expect=len(passes), should_stop=self.stopped)
            if got is None:                              # Esc: Blender keeps what is there
                return
            arrays = {ev.info.get("pass"): np.load(ev.path) for ev in got}
            opacity = arrays["opacity"]
            band = {"Combined": combined(arrays["rgb"], opacity, world),
                    "Depth": np.where(arrays["depth"] > 0, arrays["depth"], NO_HIT_DEPTH)[..., None],
                    "Normal": arrays["normals"], OPACITY_PASS: opacity[..., None]}
            # Blender's rows go bottom-up: this band is rows h - y0 - n .. h - y0 of the result.
            result = self.begin_result(0, h - y0 - n, w, n, layer=layer_name)
            layer = result.layers[0]
            for name, arr in band.items():
                layer.passes[name].rect.foreach_set(np.ascontiguousarray(arr[::-1], np.float32).ravel())
            self.end_result(result)
            self.band_done((y0 + n) / h)

    def stopped(self) -> bool:
        """Whether the user stopped the render (Esc): Blender's break flag."""
        return bool(self.test_break())

    def band_done(self, fraction: float) -> None:
        """A band is in the result: the progress bar moves."""
        self.update_progress(fraction)

    def update_render_passes(self, scene=None, renderlayer=None) -> None:
        self.register_pass(scene, renderlayer, "Combined", 4, "RGBA", "COLOR")
        self.register_pass(scene, renderlayer, "Depth", 1, "Z", "VALUE")
        self.register_pass(scene, renderlayer, "Normal", 3, "XYZ", "VECTOR")
        self.register_pass(scene, renderlayer, OPACITY_PASS, 1, "X", "VALUE")


def _panels() -> list[type]:
    """Blender's render panels that make sense for this engine (format, output, frame range,
    film, passes) learn that it is compatible, as Blender asks of a custom engine."""
    wanted = ("RENDER_PT_format", "RENDER_PT_frame_range", "RENDER_PT_output", "RENDER_PT_encoding",
              "RENDER_PT_post_processing", "RENDER_PT_stamp", "RENDER_PT_color_management",
              "RENDER_PT_film", "VIEWLAYER_PT_layer", "DATA_PT_lens", "DATA_PT_camera", "DATA_PT_camera_display")
    return [getattr(bpy.types, n) for n in wanted if hasattr(bpy.types, n)]


def register() -> None:
    for panel in _panels():
        panel.COMPAT_ENGINES.add(ENGINE_ID)


def unregister() -> None:
    for panel in _panels():
        panel.COMPAT_ENGINES.discard(ENGINE_ID)


classes = (NGP_RenderEngine,)
