"""The N-panel (View3D sidebar, tab "NGP"): draws state, never works."""
from __future__ import annotations

import bpy

from . import bounds, engine_link


POSES_STAGES = ("reading", "features", "matching", "mapping", "writing")


def _time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}:{s:02d}"


class NGP_PT_main(bpy.types.Panel):
    bl_label = "Instant NGP Fields"
    bl_idname = "NGP_PT_main"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "NGP"

    def draw(self, context: bpy.types.Context) -> None:
        """The data, train, results and SDF boxes and the message line (widget calls only,
        one per line, in the order they appear)."""
        layout, s, st = self.layout, context.scene.ngp, engine_link.STATE

        box = layout.box()
        box.label(text="Data", icon="CAMERA_DATA")
        box.prop(s, "source", expand=True)
        if s.source == "RIG":
            col = box.column(align=True)
            col.prop(s, "rig_count")
            col.prop(s, "rig_radius")
            col.prop(s, "rig_resolution")
            col.prop(s, "rig_samples")
            col.prop(s, "rig_sphere")
            if not _draw_job(box, st, "rendering the rig"):
                box.operator("ngp.render_rig", icon="RENDER_STILL")
        elif s.source == "CAMERAS":
            box.prop(s, "camera_collection")
            box.prop(s, "image_folder")
            if not _draw_job(box, st, "exporting the cameras"):
                box.operator("ngp.export_cameras", icon="EXPORT")
        else:
            _draw_photos(box, s, st)
        box.operator("ngp.import_transforms", icon="IMPORT")
        box.prop(s, "run_folder")
        box_lohi = bounds.bounds_box()
        row = box.row(align=True)
        if box_lohi is not None:
            size = box_lohi[1] - box_lohi[0]
            row.label(text=f"Bounds {size[0]:.3g} x {size[1]:.3g} x {size[2]:.3g}", icon="CUBE")
        else:
            row.label(text="Bounds: made with the dataset", icon="CUBE")
        row.operator("ngp.fit_bounds", text="Fit to Selection")

        box = layout.box()
        box.label(text="Train", icon="PLAY")
        row = box.row(align=True)
        row.prop(s, "preset", text="")
        row.prop(s, "train_budget", text="")
        row.prop(s, "train_steps" if s.train_budget == "STEPS" else "train_seconds")
        training = st.status in ("starting", "uploading", "training")
        busy = st.status in engine_link.BUSY          # one job at a time in the engine
        row = box.row(align=True)
        row.enabled = not busy
        row.operator("ngp.train", icon="PLAY")
        row.operator("ngp.load_field", text="Load", icon="FILE_FOLDER")
        if st.status == "uploading":
            box.operator("ngp.stop", icon="PAUSE")
            box.progress(factor=st.transfer_done / max(1, st.transfer_total), type="BAR",
                         text=f"Uploading {st.transfer_done / 1e6:.1f} / {st.transfer_total / 1e6:.1f} MB")
        elif training:
            box.operator("ngp.stop", icon="PAUSE")
            box.progress(factor=st.fraction or 0.0, type="BAR",
                         text=f"{100 * (st.fraction or 0):.0f}%  ETA {_time(st.eta_seconds)}")
        if st.step:
            psnr = f"{st.psnr:.2f} dB" if st.psnr is not None else "-"
            col = box.column(align=True)
            col.label(text=f"Step {st.step}   loss {st.loss:.4g}   PSNR {psnr}")
            col.label(text=f"Trained {_time(st.seconds)}")
        if st.job_backend:
            mlps = f", MLPs in {st.job_precision}" if st.job_precision else ""
            box.label(text=f"On {st.job_device}, backend {st.job_backend}{mlps}", icon="SETTINGS")

        box = layout.box()
        box.label(text="Results", icon="MESH_DATA")
        box.prop(s, "mesh_resolution")
        row = box.row(align=True)
        row.prop(s, "mesh_triangles")
        row.prop(s, "mesh_smooth", text="Smooth")
        row.prop(s, "mesh_replace")
        box.operator("ngp.import_mesh", icon="IMPORT")
        box.prop(s, "preview_resolution")
        box.operator("ngp.preview", icon="IMAGE_DATA")

        box = layout.box()
        box.label(text="SDF from a mesh", icon="MOD_REMESH")
        obj = context.active_object
        box.label(text=f"Active: {obj.name}" if obj is not None and obj.type == "MESH"
                  else "Select a mesh object")
        row = box.row(align=True)
        row.enabled = not busy
        row.operator("ngp.train_sdf", icon="PLAY")

        if st.message:
            box = layout.box()
            box.alert = st.status == "error"
            box.label(text=st.message, icon="ERROR" if st.status == "error" else "INFO")


class NGP_PT_image(bpy.types.Panel):
    """Image Editor sidebar, tab "NGP": fit the shown image with a neural field."""

    bl_label = "Neural Image Field"
    bl_idname = "NGP_PT_image"
    bl_space_type = "IMAGE_EDITOR"
    bl_region_type = "UI"
    bl_category = "NGP"

    def draw(self, context: bpy.types.Context) -> None:
        layout, s, st = self.layout, context.scene.ngp, engine_link.STATE
        row = layout.row(align=True)
        row.prop(s, "preset", text="")
        row.prop(s, "train_budget", text="")
        row.prop(s, "train_steps" if s.train_budget == "STEPS" else "train_seconds")
        layout.operator("ngp.fit_image", icon="IMAGE_DATA")
        if st.mode == "image" and st.status in ("starting", "uploading", "training"):
            layout.operator("ngp.stop", icon="PAUSE")
            layout.progress(factor=st.fraction or 0.0, type="BAR",
                            text=f"{100 * (st.fraction or 0):.0f}%  ETA {_time(st.eta_seconds)}")
            if st.step:
                layout.label(text=f"Step {st.step}   loss {st.loss:.4g}")
        if st.mode == "image" and st.message:
            layout.label(text=st.message, icon="ERROR" if st.status == "error" else "INFO")


def _draw_job(box: bpy.types.UILayout, st: engine_link.EngineState, what: str) -> bool:
    """Progress and Cancel of a dataset being built step by step, if it is `what`."""
    if not st.job_status or st.job_what != what:
        return False
    box.progress(factor=st.job_done / max(1, st.job_total), type="BAR", text=f"{st.job_done} / {st.job_total}")
    box.operator("ngp.cancel_job", icon="CANCEL")
    return True


def _draw_photos(box: bpy.types.UILayout, s: bpy.types.PropertyGroup, st: engine_link.EngineState) -> None:
    """The Photos source: settings, Import Photos (or, while poses are found, its progress
    and Stop), and the dataset Train uses."""
    col = box.column(align=True)
    col.prop(s, "photos_matching")
    col.prop(s, "photos_video_frames")
    col.prop(s, "photos_image_size")
    if st.status == "posing":
        box.operator("ngp.stop", icon="PAUSE")
        stage = st.poses_stage if st.poses_stage in POSES_STAGES else POSES_STAGES[0]
        within = st.poses_done / st.poses_total if st.poses_total else 0.0
        factor = min(1.0, (POSES_STAGES.index(stage) + within) / len(POSES_STAGES))
        box.progress(factor=factor, type="BAR",
                     text=f"{stage.capitalize()} {st.poses_done} / {st.poses_total}")
        box.label(text=f"{st.capture}: {st.poses_registered} registered")
    else:
        row = box.row(align=True)
        row.enabled = st.status not in engine_link.BUSY
        row.operator("ngp.import_photos", icon="FILE_IMAGE")
    box.prop(s, "photos_dataset")


classes = (NGP_PT_main, NGP_PT_image)
