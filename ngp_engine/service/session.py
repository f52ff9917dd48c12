"""One Session over any task: what the CLI (`python -m ngp_engine <mode> train`) and the
service (`serve`) both drive. `Session.open(spec)` does resume -> config -> data -> task ->
restore once, for every mode; the session then trains within its budget, renders
previews, extracts meshes and saves the run, every file going into the run folder.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from .. import __version__
from .. import config as cfgmod
from ..config import ConfigError
from ..cpu_allocator import release_freed_memory
from ..errors import UserError
from ..device import device_name
from ..distributed import SINGLE, Ranks
from ..files import check_writable_dir, save_torch, write_json
from ..formats.camera import Camera
from ..tasks import task_class
from ..tasks.base import Budget, PeriodicCheckpoint, Progress, Task, run_training

log = logging.getLogger(__name__)
PREVIEWS_KEPT = 16      # older preview files are deleted: a live preview would fill the disk


def service_label(name: str) -> str:
    """How the service names a `train` field in an error: train.<name>."""
    return f"train.{name}"


def cli_label(name: str) -> str:
    """How the command line names an option in an error: --<name>."""
    return {"run_dir": "--out", "data": "input"}.get(name, "--" + name.replace("_", "-"))


@dataclass(frozen=True)
class RunSpec:
    """What to train, as a `train` request or a `<mode> train` command says it."""

    mode: str
    run_dir: Path
    data: str | None = None
    """The task's input (image, dataset, mesh); may be left out when resuming."""
    config: dict[str, Any] | None = None
    """A full config document of the mode (JSON form)."""
    config_file: str | None = None
    """Or a JSON file holding one."""
    preset: str | None = None
    """Or a preset name (neither: the mode's default preset)."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Config fields to change (backend, seed, batch_size); None values are ignored."""
    resume: str | None = None
    """A checkpoint to continue (its configuration is kept; only `backend` may change)."""
    steps: int | None = None
    seconds: float | None = None
    device: torch.device = torch.device("cpu")
    label: Callable[[str], str] = service_label
    """How fields are named in error messages (service or CLI)."""
    ranks: Ranks = SINGLE
    """The processes training together (distributed.py); rank 0 alone writes the run."""


class Session:
    """A training run of one task in `run_dir`, with a budget of steps or seconds (or none)."""

    def __init__(self, task: Task, run_dir: Path, budget: Budget) -> None:
        self.task = task
        self.run_dir = run_dir
        self.budget = budget
        self._n_previews = 0
        self._checkpoint: PeriodicCheckpoint | None = None

    @property
    def mode(self) -> str:
        return self.task.mode

    @classmethod
    def open(cls, spec: RunSpec) -> "Session":
        """Build the task a spec asks for (UserError naming the field for bad data, config
        or paths; nothing is written before the inputs are checked)."""
        label = spec.label
        task_cls = task_class(spec.mode, label("mode"))
        _check_budget(spec)
        overrides = {k: v for k, v in spec.overrides.items() if v is not None}
        data_path = _path(spec.data, label("data"), spec) if spec.data else None
        # The config comes first: it may shape the data (a NeRF's max_image_size).
        if spec.resume:
            given = [n for n in ("config", "config_file", "preset") if getattr(spec, n) is not None]
            given += [n for n in overrides if n != "backend"]
            if given:
                name = {"config_file": "config"}.get(given[0], given[0])
                raise UserError(f"{label(name)}: a resumed run keeps its checkpoint's configuration")
            task = task_cls.from_checkpoint(_path(spec.resume, label("resume"), spec), spec.device,
                                            backend=overrides.get("backend"), data_path=data_path)
        else:
            if data_path is None:
                raise UserError(f"{label('data')}: give the {spec.mode} input (or a checkpoint to resume)")
            cfg = _config(task_cls, spec, overrides)
            task = task_cls(task_cls.load_data(data_path, cfg), cfg, spec.device)
        run_dir = _path(str(spec.run_dir), label("run_dir"), spec)
        ranks = spec.ranks
        if ranks.is_main:
            check_writable_dir(run_dir, label("run_dir"))
            ranks_note = f", {ranks.world} processes ({ranks.gradient_sync} table sync)" if ranks.world > 1 else ""
            log.info("%s: %s on %s (%s), backend %s, MLPs in %s, %d parameters%s", spec.mode,
                     Path(spec.data or spec.resume or "").name, spec.device, device_name(spec.device),
                     task.backend, task.mlp_precision, task.n_params, ranks_note)
        task.ranks = ranks
        ranks.align(p for group in task.optimizer.param_groups for p in group["params"])
        task.prepare()
        session = cls(task, run_dir, Budget.starting_at(task, spec.steps, spec.seconds))
        if ranks.is_main:
            write_json(run_dir / "config.json", cfgmod.to_dict(task.cfg))
        return session

    @property
    def ranks(self) -> Ranks:
        return self.task.ranks

    def end(self) -> None:
        """The training job is over: the other ranks stop following and every rank leaves
        the process group (nothing for a single process)."""
        self.task.ranks.end()
        self.task.ranks.close()

    # ------------------------------------------------------------------ training
    @property
    def steps_done(self) -> int:
        return self.task.steps_done

    @property
    def seconds(self) -> float:
        return self.task.seconds

    @property
    def budget_done(self) -> bool:
        return self.budget.done(self.task)

    def fraction(self) -> float | None:
        return self.budget.fraction(self.task)

    def eta_seconds(self) -> float | None:
        return self.budget.eta_seconds(self.task)

    def train(self, callback: Callable[[Progress], Any] | None = None,
              should_stop: Callable[[], bool] | None = None,
              checkpoint_every: float | None = None,
              on_checkpoint: Callable[[Path], Any] | None = None) -> Progress | None:
        """Train until the budget is spent or `should_stop()`; with `checkpoint_every`, save
        a checkpoint that often (seconds, kept across calls) and tell `on_checkpoint`."""
        if checkpoint_every and self._checkpoint is None:
            def save() -> None:
                path = self.save_checkpoint()
                if on_checkpoint is not None:
                    on_checkpoint(path)
            self._checkpoint = PeriodicCheckpoint(checkpoint_every, save)
        try:
            return run_training(self.task, self.budget, callback, should_stop, self._checkpoint)
        except torch.OutOfMemoryError:
            raise self._out_of_memory() from None
        finally:
            release_freed_memory()    # what the steps freed and the CPU allocator kept

    def _out_of_memory(self) -> UserError:
        """The one line for a step that ran out of device memory, after saving the steps
        done so far (memory runs out in the forward or backward pass, before the optimiser
        touches the parameters, so the saved state is the last complete step's)."""
        if self.task.device.type == "cuda":
            torch.cuda.empty_cache()      # the failed step's buffers, so the save can run
        kept = ""
        if self.steps_done:
            try:
                kept = f"; the {self.steps_done} steps done are kept in {self.save_checkpoint()}"
            except (OSError, RuntimeError) as e:
                kept = f"; saving the checkpoint failed too ({type(e).__name__})"
        return UserError(f"out of {self.task.device.type} memory at step {self.steps_done + 1}: "
                         "try a smaller preset (--preset cpu-fast), fewer samples per step "
                         f"(target_batch_samples / batch_size) or smaller images{kept}")

    # ------------------------------------------------------------------ outputs
    def preview(self, camera: Camera | None, passes: list[str],
                resolution: list[int] | None) -> list[tuple[str, Path, Path]]:
        """Render passes to run_dir/previews/preview_<n>_<pass>.npy/.png -> [(pass, npy, png)]."""
        from ..render.passes import save_passes  # noqa: PLC0415

        images = self.task.render(camera, tuple(passes), tuple(resolution) if resolution else None)
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

    def export_mesh(self, resolution: int, threshold: float | None, **options: Any
                    ) -> tuple[list[Path], dict[str, Any]]:
        """mesh.ply + mesh.obj of the task's surface in the run folder -> (paths, info)."""
        from ..mesh.io import save_mesh  # noqa: PLC0415
        from ..mesh.marching_cubes import require_mcubes  # noqa: PLC0415

        require_mcubes()          # before the field is sampled on the lattice
        mesh = self.task.extract_mesh(resolution, threshold, **options)
        return save_mesh(mesh, self.run_dir), mesh["info"]

    def save_checkpoint(self) -> Path:
        path = self.run_dir / "checkpoint.pt"
        save_torch(path, self.task.state_dict())
        return path

    def summary(self, task_metrics: dict[str, Any] | None = None) -> dict[str, Any]:
        """metrics.json of the run (`task_metrics`: the task's, when already computed)."""
        out = {"mode": self.mode, "engine_version": __version__, "steps": self.steps_done,
               "seconds": round(self.seconds, 3), "run_dir": str(self.run_dir),
               **(self.task.metrics() if task_metrics is None else task_metrics)}
        if self.ranks.world > 1:
            out["processes"] = self.ranks.world
            out["gradient_sync"] = self.ranks.gradient_sync
        device = self.task.device
        out["device_name"] = device_name(device)
        out["mlp_precision"] = self.task.mlp_precision      # auto resolved for this device
        if device.type == "cuda":
            out["peak_cuda_memory_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        return out

    def write_metrics(self) -> tuple[Path, dict[str, Any]]:
        summary = self.summary()
        path = self.run_dir / "metrics.json"
        write_json(path, summary)
        return path, summary


def _check_budget(spec: RunSpec) -> None:
    if spec.steps is not None and spec.seconds is not None:
        raise UserError(f"{spec.label('seconds')}: cannot be given together with steps")
    if spec.steps is not None and spec.steps < 0:
        raise UserError(f"{spec.label('steps')}: {spec.steps} must be >= 0")
    if spec.seconds is not None and spec.seconds < 0:
        raise UserError(f"{spec.label('seconds')}: {spec.seconds} must be >= 0")


def _path(path: str, what: str, spec: RunSpec) -> Path:
    """The service runs in another folder than its client: it takes absolute paths only."""
    p = Path(path).expanduser()
    if spec.label is service_label and not p.is_absolute():
        raise UserError(f"{what}: {path!r} must be an absolute path (the engine's working "
                        "folder is not the client's)")
    return p


def _config(task_cls: type[Task], spec: RunSpec, overrides: dict[str, Any]) -> Any:
    """The config document, file or preset of a new run, with `overrides` applied."""
    label = spec.label
    if spec.config is not None:
        try:
            cfg = cfgmod.from_dict(task_cls.config_type, spec.config)
        except ConfigError as e:
            raise UserError(f"{label('config')}: {e}") from None
    elif spec.config_file is not None:
        cfg = read_config_file(task_cls.config_type, spec.config_file)
    else:
        name = spec.preset or task_cls.default_preset
        if name not in task_cls.presets:
            raise UserError(f"{label('preset')}: {name!r} is not a {spec.mode} preset "
                            f"({', '.join(sorted(task_cls.presets))})")
        cfg = task_cls.presets[name]
    try:
        return cfgmod.replace(cfg, **overrides) if overrides else cfg
    except ConfigError as e:
        raise UserError(str(e)) from None


def read_config_file(cls: type, path: str) -> Any:
    """A config of type `cls` from a JSON file; problems are one-line UserErrors naming it."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"{file}: no such config file")
    try:
        return cfgmod.from_json(cls, file.read_text())
    except ConfigError as e:
        raise UserError(f"{file}: {e}") from None

