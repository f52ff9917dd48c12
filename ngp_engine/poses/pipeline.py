"""`find_poses`: photos, a video or a COLMAP model in; a posed NeRF dataset folder out."""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import UserError
from . import colmap_model, convention, dataset, images, sfm, video
from .spec import PosesProgress, PosesResult, PosesSpec

Report = Callable[[PosesProgress], None]


def input_kind(path: Path) -> str:
    """"photos", "video" or "colmap" for an input path; UserError when it is none of them."""
    if not path.exists():
        raise UserError(f"{path}: no such file or folder")
    if path.is_file():
        if path.suffix.lower() in images.PHOTO_SUFFIXES:
            raise UserError(f"{path}: is one image; give the folder of photos")
        return "video"
    return "colmap" if colmap_model.find_model_folder(path) is not None else "photos"


def find_poses(spec: PosesSpec, progress: Report | None = None,
               should_stop: Callable[[], bool] | None = None) -> PosesResult:
    """Find camera poses and write the dataset folder `spec.output` (see dataset.py for
    its layout). `progress` gets PosesProgress reports (possibly from pycolmap's thread);
    `should_stop()` is polled: True cancels (PosesCancelled, nothing left on disk).
    A stage that fails raises UserError with one line saying why."""
    report = progress or (lambda p: None)
    kind = input_kind(spec.input)
    dataset.check_output(spec.output, spec.overwrite)
    canceller = sfm.Canceller(should_stop)
    timings: dict[str, float] = {}
    notes: list[str] = []
    try:
        with dataset.staging_folder(spec.output, spec.overwrite) as tmp:
            work = tmp / ".work"
            t0 = time.perf_counter()
            if kind == "colmap":
                rec, model, photos, rejected = _from_colmap(spec, tmp, report, canceller)
                matching = None
            else:
                photos = _read_inputs(spec, kind, work, tmp, report, canceller, notes)
                timings["reading"] = time.perf_counter() - t0
                rec, matching = _reconstruct(spec, kind, photos, work, report, canceller, timings, notes)
                _check_registered(spec, len(photos), 0 if rec is None else rec.num_reg_images())
                model = colmap_model.model_arrays(rec, str(spec.input))
                done = {v.name for v in model.views}
                rejected = [(p.name, "not registered: too few verified matches with the "
                             "registered images") for p in photos if p.name not in done]
            t1 = time.perf_counter()
            result = _write(spec, kind, tmp, rec, model, photos, rejected, matching, notes,
                            timings, report, canceller)
            shutil.rmtree(work, ignore_errors=True)
            timings["writing"] = time.perf_counter() - t1
            timings["total"] = time.perf_counter() - t0
            _write_report_timings(tmp, timings)
        return PosesResult(spec.output, result["n_images"], result["n_registered"],
                           tuple(rejected), model.reprojection_error, result["similarity"],
                           len(model.points), {k: v for k, v in timings.items() if k != "total"})
    finally:
        canceller.close()


# ----------------------------------------------------------------------------- stages

def _read_inputs(spec: PosesSpec, kind: str, work: Path, tmp: Path, report: Report,
                 canceller: sfm.Canceller, notes: list[str]) -> list[images.Photo]:
    """Photos (or the video's sharpest frames) copied at SfM and dataset sizes."""
    if kind == "video":
        report(PosesProgress("reading", 0, 1, message=f"decoding {spec.input.name}"))
        files = video.sample_frames(
            spec.input, spec.video_frames, work / "frames",
            lambda d, n: report(PosesProgress("reading", d, n, message="decoding video")))
        canceller.check()
        orient = False                       # decoded frames carry no EXIF
    else:
        files = images.list_photos(spec.input)
        orient = True
    n = len(files)

    def step(done: int) -> None:
        canceller.check()
        report(PosesProgress("reading", done, n, message=files[done - 1].name))

    photos = images.prepare_photos(files, work / "sfm", tmp / "images", spec.sfm_long_side,
                                   spec.image_long_side, orient=orient, progress=step)
    if len({p.name for p in photos}) != len(photos):
        raise UserError(f"{spec.input}: two images have the same name once their suffix is "
                        ".png/.jpg (e.g. a.png and a.tif); rename one")
    if not spec.per_image_cameras and len({p.sfm_size for p in photos}) > 1:
        notes.append("images of different aspect ratios: one camera per image was fitted")
    return photos


def _reconstruct(spec: PosesSpec, kind: str, photos: list[images.Photo], work: Path,
                 report: Report, canceller: sfm.Canceller, timings: dict[str, float],
                 notes: list[str]):
    """Features, matching, mapping; the largest model and the matching used."""
    n = len(photos)
    names = [p.name for p in photos]
    per_image = spec.per_image_cameras or len({p.sfm_size for p in photos}) > 1
    matching = sfm.resolve_matching(spec.matching, n, kind == "video")
    options = sfm.SfmOptions(spec.camera_model, per_image, matching)
    db = work / "database.db"
    t = time.perf_counter()
    sfm.extract_features(db, work / "sfm", names, options, canceller,
                         lambda d: report(PosesProgress("features", d, n, message=names[d - 1])))
    timings["features"] = time.perf_counter() - t
    t = time.perf_counter()
    report(PosesProgress("matching", 0, 1, message=f"{matching} matching of {n} images"))
    sfm.match(db, options, canceller)
    report(PosesProgress("matching", 1, 1, message=f"{matching} matching of {n} images"))
    timings["matching"] = time.perf_counter() - t
    t = time.perf_counter()
    registered = [0]

    def on_image(count: int) -> None:
        registered[0] = min(n, registered[0] + count)
        report(PosesProgress("mapping", registered[0], n, registered[0], "registering images"))

    report(PosesProgress("mapping", 0, n, 0, "looking for an initial pair"))
    rec = sfm.map_images(db, work / "sfm", work / "sparse", canceller, on_image)
    timings["mapping"] = time.perf_counter() - t
    return rec, matching


def _check_registered(spec: PosesSpec, n: int, reg: int) -> None:
    if reg < 3 or reg < spec.min_registered * n:
        raise UserError(f"only {reg} of {n} images registered: too little texture or overlap; "
                        "try more photos with 60% overlap or --matching exhaustive")


def _from_colmap(spec: PosesSpec, tmp: Path, report: Report, canceller: sfm.Canceller):
    """An existing model: its registered images copied at the dataset size."""
    model_dir = colmap_model.find_model_folder(spec.input)
    rec = colmap_model.read_model(model_dir)
    model = colmap_model.model_arrays(rec, str(model_dir))
    if not model.views:
        raise UserError(f"{model_dir}: the COLMAP model has no registered images")
    image_dir = colmap_model.model_image_folder(model_dir, spec.images)
    files = []
    for v in model.views:
        f = image_dir / v.name
        if not f.is_file():
            raise UserError(f"{f}: image '{v.name}' of the COLMAP model not found in {image_dir}")
        files.append(f)

    def step(done: int) -> None:
        canceller.check()
        report(PosesProgress("reading", done, len(files), message=files[done - 1].name))

    # COLMAP reads pixels as stored (no EXIF turn), so the copies must not be turned either.
    photos = images.prepare_photos(files, None, tmp / "images", spec.sfm_long_side,
                                   spec.image_long_side, orient=False,
                                   names=[v.name for v in model.views], progress=step)
    for v, p in zip(model.views, photos):
        cam = model.cameras[v.camera_id]
        w, h = p.original_size
        if abs(w * cam.h - h * cam.w) > max(w, h):        # more than a pixel of aspect change
            raise UserError(f"{p.source}: image is {w}x{h} but its COLMAP camera is "
                            f"{cam.w}x{cam.h} (not the same aspect ratio)")
    rejected = [(name, "in the COLMAP model but not registered")
                for name in model.image_names if name not in {v.name for v in model.views}]
    return rec, model, photos, rejected


def _write(spec: PosesSpec, kind: str, tmp: Path, rec, model: colmap_model.Model,
           photos: list[images.Photo], rejected: list[tuple[str, str]], matching: str | None,
           notes: list[str], timings: dict[str, float], report: Report,
           canceller: sfm.Canceller) -> dict:
    """Normalise, then write transforms.json, points.ply, poses.json, sparse/0 into tmp."""
    canceller.check()
    by_name = {p.name: p for p in photos}
    views = model.views
    c2w_colmap = np.stack([convention.colmap_to_nerf_c2w(v.rotation, v.translation) for v in views])
    sim, centre_from = convention.normalising_similarity(c2w_colmap, model.points)
    c2w = convention.apply_to_c2w(sim, c2w_colmap)
    frames = []
    for i, (v, m) in enumerate(zip(views, c2w)):
        photo = by_name[v.name]
        frames.append((f"images/{photo.name}", m, model.cameras[v.camera_id].scaled(*photo.out_size)))
        report(PosesProgress("writing", i + 1, len(views), len(views), photo.name))
    for name, _ in rejected:                     # the dataset holds registered images only
        if name in by_name:
            (tmp / "images" / by_name[name].name).unlink(missing_ok=True)
    shared = len({v.camera_id for v in views}) == 1 and len({(f[2].w, f[2].h) for f in frames}) == 1
    doc = dataset.transforms_doc(frames, shared, spec.aabb_scale, sim.matrix())
    dataset.write_json(tmp / "transforms.json", doc)
    dataset.write_points(tmp / "points.ply", convention.apply_to_points(sim, model.points), model.colors)
    (tmp / "sparse" / "0").mkdir(parents=True)
    rec.write(tmp / "sparse" / "0")
    n_images = len(photos) + (len(rejected) if kind == "colmap" else 0)
    dataset.write_json(tmp / "poses.json", {
        "input": str(spec.input.resolve()), "kind": kind, "matching": matching,
        "images_found": n_images, "registered": len(views),
        "rejected": [{"image": n, "reason": r} for n, r in rejected],
        "mean_reprojection_error_px": model.reprojection_error, "n_points": len(model.points),
        "camera_model": doc["camera_model"], "shared_camera": shared,
        "similarity": {**sim.to_dict(), "centre_from": centre_from,
                       "note": "world_nerf = scale * rotation @ x_colmap + translation; "
                               "up = mean camera up -> +Z"},
        "images": [{"name": p.name, "source": str(p.source)} for p in photos],
        "options": spec.options(), "notes": notes, "timings_s": timings})
    return {"n_images": n_images, "n_registered": len(views), "similarity": sim}


def _write_report_timings(tmp: Path, timings: dict[str, float]) -> None:
    import json  # noqa: PLC0415

    path = tmp / "poses.json"
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc["timings_s"] = {k: round(v, 3) for k, v in timings.items()}
    dataset.write_json(path, doc)
