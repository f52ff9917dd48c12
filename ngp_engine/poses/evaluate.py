"""Comparing found poses with known ones (tests, benchmarks): align by a similarity fitted
to the camera centres, then measure rotation and position errors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .convention import umeyama


def pose_errors(found: np.ndarray, truth: np.ndarray) -> dict:
    """Camera-to-worlds found [N, 4, 4] vs truth [N, 4, 4] (same cameras, same order, both
    NeRF/Blender convention). Umeyama aligns found centres onto true ones (truth ~ s R x + t);
    returns rotation errors in degrees [N], position errors in truth units [N], the
    alignment (s, R [3, 3], t [3]) and `tilt_deg`: how far R is from a rotation about Z
    (0 when both worlds agree on which way is up)."""
    s, r, t = umeyama(found[:, :3, 3], truth[:, :3, 3])
    aligned_rot = r @ found[:, :3, :3]
    rel = np.einsum("nji,njk->nik", aligned_rot, truth[:, :3, :3])       # R_a^T R_true
    cos = np.clip((np.trace(rel, axis1=1, axis2=2) - 1) / 2, -1, 1)
    pos = s * found[:, :3, 3] @ r.T + t
    tilt = np.degrees(np.arccos(np.clip(r[2, 2], -1, 1)))               # R's z axis vs +Z
    return {"rotation_deg": np.degrees(np.arccos(cos)),
            "position": np.linalg.norm(pos - truth[:, :3, 3], axis=1),
            "scale": s, "rotation": r, "translation": t, "tilt_deg": float(tilt)}


def compare_dataset(dataset: Path, truth_json: Path, name_of=lambda p: Path(p).stem) -> dict:
    """Errors of a written dataset's cameras against make_capture's truth.json, matched by
    image stem (`name_of(file_path)` -> truth frame stem); summary numbers, JSON-ready."""
    doc = json.loads((Path(dataset) / "transforms.json").read_text())
    truth = json.loads(Path(truth_json).read_text())
    true_by = {Path(f["file_name"]).stem: np.array(f["transform_matrix"]) for f in truth["frames"]}
    found, true = [], []
    for f in doc["frames"]:
        key = name_of(f["file_path"])
        if key in true_by:
            found.append(np.array(f["transform_matrix"]))
            true.append(true_by[key])
    e = pose_errors(np.stack(found), np.stack(true))
    extent = float(truth.get("scene_extent", 1.0))
    return {"n_compared": len(found),
            "rotation_error_deg_median": float(np.median(e["rotation_deg"])),
            "rotation_error_deg_max": float(np.max(e["rotation_deg"])),
            "position_error_rel_median": float(np.median(e["position"]) / extent),
            "position_error_rel_max": float(np.max(e["position"]) / extent),
            "alignment_tilt_deg": e["tilt_deg"], "alignment_scale": e["scale"]}
