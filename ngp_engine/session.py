"""One facade over every training mode, driven step by step: what the server (and any other
front end) talks to. `open_session(train_request)` -> a Session with `step()`, `preview()`,
`export_mesh()`, `save_checkpoint()` and `summary()`; all files go into the run folder.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__
from . import config as cfgmod
from .config import IMAGE_PRESETS, NERF_PRESETS, SDF_PRESETS, ConfigError
from .errors import UserError
from .files import check_writable_dir, save_torch, write_json
from .protocol import Camera, Train

log = logging.getLogger(__name__)
MODES_IMPLEMENTED = ("nerf", "sdf", "image")
DEFAULT_PRESETS = {"nerf": "cpu-fast", "sdf": "cpu-fast", "image": "seed"}
PREVIEWS_KEPT = 16      # older preview files are deleted: a live preview would fill the disk


class Session:
    """A training run in `run_dir` with an optional budget (`steps` or `seconds` more)."""

    mode = ""

    def __init__(self, run_dir: Path, steps: int | None, seconds: float | None) -> None:
        self.run_dir = run_dir
        self._budget_steps = steps
        self._budget_seconds = seconds
        self._start_steps = self.steps_done
        self._start_seconds = self.seconds
        self._n_previews = 0

    # subclasses provide these -------------------------------------------------------------
    @property
    def steps_done(self) -> int:
        raise NotImplementedError

    @property
    def seconds(self) -> float:
        raise NotImplementedError

    def step(self) -> dict[str, Any]:
        """One training step -> the fields of a `progress` event (step, loss, seconds, ...)."""
        raise NotImplementedError

    def _render_preview(self, camera: Camera | None, passes: list[str],
                        resolution: list[int] | None) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def export_mesh(self, resolution: int, threshold: float | None) -> tuple[list[Path], dict[str, Any]]:
        raise UserError(f"export_mesh: a {self.mode} field has no surface to mesh")

    def checkpoint_state(self) -> dict[str, Any]:
        raise NotImplementedError

    def metrics(self) -> dict[str, Any]:
        raise NotImplementedError

    # shared --------------------------------------------------------------------------------
    @property
    def budget_done(self) -> bool:
        if self._budget_steps is not None:
            return self.steps_done - self._start_steps >= self._budget_steps
        if self._budget_seconds is not None:
            return self.seconds - self._start_seconds >= self._budget_seconds
        return False

    def fraction(self) -> float | None:
        """Share of the budget spent, None when training runs until stopped."""
        if self._budget_steps is not None:
            return 1.0 if self._budget_steps == 0 else \
                min(1.0, (self.steps_done - self._start_steps) / self._budget_steps)
        if self._budget_seconds is not None:
            return 1.0 if self._budget_seconds == 0 else \
                min(1.0, (self.seconds - self._start_seconds) / self._budget_seconds)
        return None

    def eta_seconds(self) -> float | None:
        f = self.fraction()
        spent = self.seconds - self._start_seconds
        if f is None or f <= 0.0:
            return None
        return max(0.0, spent * (1.0 - f) / f)

    def preview(self, camera: Camera | None, passes: list[str],
                resolution: list[int] | None) -> list[tuple[str, Path, Path]]:
        """Render passes to run_dir/previews/preview_<n>_<pass>.npy/.png -> [(pass, npy, png)]."""
        from .nerf.export import save_passes  # noqa: PLC0415

        images = self._render_preview(camera, passes, resolution)
        out = self.run_dir / "previews"
        stem = f"preview_{self._n_previews:05d}"
        old = self._n_previews - PREVIEWS_KEPT
        self._n_previews += 1
        written = save_passes(images, out, stem)
        if old >= 0:
            for f in out.glob(f"preview_{old:05d}_*"):
                f.unlink(missing_ok=True)
        return [(name, out / f"{stem}_{name}.npy", out / f"{stem}_{name}.png") for name in passes
                if out / f"{stem}_{name}.npy" in written]

    def save_checkpoint(self) -> Path:
        path = self.run_dir / "checkpoint.pt"
        save_torch(path, self.checkpoint_state())
        return path

    def summary(self) -> dict[str, Any]:
        """metrics.json of the run (written by `finish`)."""
        return {"mode": self.mode, "engine_version": __version__, "steps": self.steps_done,
                "seconds": round(self.seconds, 3), "run_dir": str(self.run_dir), **self.metrics()}

    def write_metrics(self) -> tuple[Path, dict[str, Any]]:
        summary = self.summary()
        path = self.run_dir / "metrics.json"
        write_json(path, summary)
        return path, summary


def _config(mode: str, req: Train, cls: type, presets: dict[str, Any]) -> Any:
    if req.config is not None:
        try:
            return cfgmod.from_dict(cls, req.config)
        except ConfigError as e:
            raise UserError(f"train.config: {e}") from None
    name = req.preset or DEFAULT_PRESETS[mode]
    if name not in presets:
        raise UserError(f"train.preset: {name!r} is not a {mode} preset ({', '.join(sorted(presets))})")
    return presets[name]


def _refuse_config_on_resume(req: Train) -> None:
    if req.config is not None or req.preset is not None:
        raise UserError("train.resume: a resumed run keeps its checkpoint's configuration "
                        "(leave config and preset out)")


def _absolute(path: str, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_absolute():
        raise UserError(f"train.{what}: {path!r} must be an absolute path (the engine's working "
                        "folder is not the client's)")
    return p


def _camera_args(camera: Camera | None, resolution: list[int] | None, what: str) -> tuple:
    """(c2w [4, 4], fx, fy, cx, cy, w, h) of a preview camera at `resolution`."""
    if camera is None:
        raise UserError(f"preview.camera: {what} preview needs a camera")
    c2w = np.asarray(camera.transform_matrix, dtype=np.float64)
    # Blender's matrix_world may carry object scale: keep rotation columns unit length.
    c2w[:3, :3] /= np.maximum(np.linalg.norm(c2w[:3, :3], axis=0, keepdims=True), 1e-12)
    return (c2w, *camera.intrinsics(*(resolution or (None, None))))


class NerfSession(Session):
    mode = "nerf"

    def __init__(self, req: Train, device: torch.device) -> None:
        from .data.transforms import load_nerf_dataset  # noqa: PLC0415
        from .nerf.trainer import NerfTrainer, config_of, load_checkpoint  # noqa: PLC0415

        run_dir = _absolute(req.run_dir, "run_dir")
        data = _absolute(req.data, "data")
        ckpt = None
        if req.resume:
            _refuse_config_on_resume(req)
            ckpt = load_checkpoint(_absolute(req.resume, "resume"))
            cfg = config_of(ckpt, req.resume)
        else:
            cfg = _config("nerf", req, cfgmod.NerfConfig, NERF_PRESETS)
        dataset = load_nerf_dataset(data, "train")
        check_writable_dir(run_dir, "train.run_dir")
        self.trainer = NerfTrainer(dataset, cfg, device, dataset_path=str(data.resolve()))
        if ckpt is not None:
            if ckpt["image_size"] != [self.trainer.width, self.trainer.height]:
                raise UserError(f"{req.resume}: trained on {ckpt['image_size']} images, {data} has "
                                f"{[self.trainer.width, self.trainer.height]}")
            self.trainer.load_state_dict(ckpt, where=req.resume)
        t = self.trainer
        log.info("nerf: %d images %dx%d on %s, backend %s, %d parameters", t.n_images, t.width,
                 t.height, device, t.model.backend, t.model.field.n_params)
        super().__init__(run_dir, req.steps, req.seconds)
        write_json(run_dir / "config.json", cfgmod.to_dict(cfg))

    @property
    def steps_done(self) -> int:
        return self.trainer.steps_done

    @property
    def seconds(self) -> float:
        return self.trainer.seconds

    def step(self) -> dict[str, Any]:
        p = self.trainer.step()
        return {"step": p.step, "seconds": p.seconds, "loss": p.loss,
                "psnr": p.psnr if math.isfinite(p.psnr) else None,
                "samples_per_ray": p.samples_per_ray, "rays_per_second": p.rays_per_second}

    def _render_preview(self, camera: Camera | None, passes: list[str],
                        resolution: list[int] | None) -> dict[str, np.ndarray]:
        return self.trainer.model.render_camera(*_camera_args(camera, resolution, "a NeRF"),
                                                passes=tuple(passes))

    def export_mesh(self, resolution: int, threshold: float | None) -> tuple[list[Path], dict[str, Any]]:
        from .mesh.io import save_mesh  # noqa: PLC0415
        from .nerf.export import DEFAULT_MESH_THRESHOLD, nerf_mesh  # noqa: PLC0415

        threshold = DEFAULT_MESH_THRESHOLD if threshold is None else threshold
        mesh = nerf_mesh(self.trainer.model, resolution=resolution, threshold=threshold,
                         cameras=self.trainer.cameras)
        if not len(mesh["faces"]):
            raise UserError(f"export_mesh: no surface at density {threshold} yet "
                            "(train longer or lower the threshold)")
        return save_mesh(mesh, self.run_dir), mesh["info"]

    def checkpoint_state(self) -> dict[str, Any]:
        return self.trainer.state_dict()

    def metrics(self) -> dict[str, Any]:
        t = self.trainer
        return {"backend": t.model.backend, "device": str(t.device), "n_params": t.model.field.n_params,
                "rays_per_second": round(t.rays_seen / max(t.seconds, 1e-9), 1),
                "occupancy": t.model.grid.occupancy_fraction, "dataset": t.dataset_path}


class SdfSession(Session):
    mode = "sdf"

    def __init__(self, req: Train, device: torch.device) -> None:
        from .data.mesh import load_sdf_mesh  # noqa: PLC0415
        from .sdf.trainer import SdfTrainer  # noqa: PLC0415

        run_dir = _absolute(req.run_dir, "run_dir")
        mesh = load_sdf_mesh(_absolute(req.data, "data"))
        if req.resume:
            _refuse_config_on_resume(req)
            self.trainer = SdfTrainer.from_checkpoint(_absolute(req.resume, "resume"), device, mesh=mesh)
        else:
            cfg = _config("sdf", req, cfgmod.SdfConfig, SDF_PRESETS)
            self.trainer = SdfTrainer(mesh, cfg, device)
        check_writable_dir(run_dir, "train.run_dir")
        log.info("sdf: %d triangles on %s, backend %s, %d parameters; ground truth for %d samples",
                 len(mesh.faces), device, self.trainer.model.backend, self.trainer.model.n_params,
                 self.trainer.cfg.ground_truth_pool)
        self.trainer.samples  # noqa: B018  (the ground truth, before the clock starts)
        super().__init__(run_dir, req.steps, req.seconds)
        write_json(run_dir / "config.json", cfgmod.to_dict(self.trainer.cfg))

    @property
    def steps_done(self) -> int:
        return self.trainer.steps_done

    @property
    def seconds(self) -> float:
        return self.trainer.seconds

    def step(self) -> dict[str, Any]:
        p = self.trainer.step()
        return {"step": p.step, "seconds": p.seconds, "loss": p.loss}

    def _render_preview(self, camera: Camera | None, passes: list[str],
                        resolution: list[int] | None) -> dict[str, np.ndarray]:
        return self.trainer.render_camera(*_camera_args(camera, resolution, "an SDF"),
                                          passes=tuple(passes))

    def export_mesh(self, resolution: int, threshold: float | None) -> tuple[list[Path], dict[str, Any]]:
        from .mesh.io import save_mesh  # noqa: PLC0415

        level = 0.0 if threshold is None else threshold
        vertices, faces = self.trainer.extract(resolution, level)
        paths = save_mesh({"vertices": vertices, "faces": faces}, self.run_dir)
        return paths, {"n_vertices": int(len(vertices)), "n_faces": int(len(faces)),
                       "resolution": resolution, "threshold": level}

    def checkpoint_state(self) -> dict[str, Any]:
        return self.trainer.state_dict()

    def metrics(self) -> dict[str, Any]:
        m = self.trainer.metrics()
        m.pop("steps", None)
        m.pop("seconds", None)
        if self.trainer.mesh.note:
            m["note"] = self.trainer.mesh.note
        return m


class ImageSession(Session):
    mode = "image"

    def __init__(self, req: Train, device: torch.device) -> None:
        from .data.image import load_image  # noqa: PLC0415
        from .fields.image import ImageFitter  # noqa: PLC0415

        run_dir = _absolute(req.run_dir, "run_dir")
        data = _absolute(req.data, "data")
        image = load_image(data)
        if req.resume:
            _refuse_config_on_resume(req)
            self.fitter = ImageFitter.from_checkpoint(_absolute(req.resume, "resume"), device, image=image)
        else:
            cfg = _config("image", req, cfgmod.ImageFitConfig, IMAGE_PRESETS)
            self.fitter = ImageFitter(image, cfg, device, image_path=str(data.resolve()))
        check_writable_dir(run_dir, "train.run_dir")
        self._last_loss = float("nan")
        super().__init__(run_dir, req.steps, req.seconds)
        write_json(run_dir / "config.json", cfgmod.to_dict(self.fitter.cfg))

    @property
    def steps_done(self) -> int:
        return self.fitter.steps_done

    @property
    def seconds(self) -> float:
        return self.fitter.seconds

    def step(self) -> dict[str, Any]:
        loss = self.fitter.step()
        return {"step": self.fitter.steps_done, "seconds": self.fitter.seconds, "loss": loss}

    def _render_preview(self, camera: Camera | None, passes: list[str],
                        resolution: list[int] | None) -> dict[str, np.ndarray]:
        if passes != ["rgb"]:
            raise UserError(f"preview.passes: an image field renders only ['rgb'], not {passes}")
        w, h = resolution or (self.fitter.width, self.fitter.height)
        return {"rgb": self.fitter.render(height=h, width=w)}

    def checkpoint_state(self) -> dict[str, Any]:
        return self.fitter.state_dict()

    def metrics(self) -> dict[str, Any]:
        return self.fitter.metrics()


def open_session(req: Train, device: torch.device) -> Session:
    """The session for a `train` request (UserError for bad data, config or paths)."""
    if req.mode == "nerf":
        return NerfSession(req, device)
    if req.mode == "image":
        return ImageSession(req, device)
    if req.mode == "sdf":
        return SdfSession(req, device)
    raise UserError(f"train.mode: {req.mode!r} is not implemented by engine {__version__} yet "
                    f"(available: {', '.join(MODES_IMPLEMENTED)})")
