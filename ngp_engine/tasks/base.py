"""The Task interface every training mode implements, and the one training loop.

A task owns its data (an image, posed photographs, a mesh), its field and optimiser, and
knows how to take one optimisation step, render a camera, extract a mesh where it has a
surface, report metrics and save or restore itself. Everything around that (the budget in
steps or seconds, the learning-rate schedule, stopping early, progress, periodic
checkpoints) lives here once, in `Task.step` and `train`, for every task.

Adding a task: a module under `tasks/` with a `Task` subclass, plus one line in
`tasks/__init__.py`'s registry. The Session (service/session.py), the CLI, the service and
the checkpoint code then work for it unchanged.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import torch

from .. import config as cfgmod
from .. import files
from ..cpu_allocator import keep_freed_memory
from ..distributed import END, SINGLE, STEP, Ranks
from ..errors import UserError
from ..formats.camera import Camera
from ..nn.losses import loss
from ..nn.mlp import check_precision, resolve_precision

BASE_CHECKPOINT_KEYS = ("config", "model", "optimizer", "sampler", "steps", "seconds")


@dataclass(frozen=True)
class Progress:
    """What one training step reports (the fields of the protocol's `progress` event).

    `loss` and `psnr` may be 0-d tensors still on the device: a step never waits for the
    device to report them (a `.item()` per step would stall a GPU's queue every step).
    Whoever shows progress calls `resolved()` (or `fields()`) when it shows it, every few
    steps or tenths of a second; that is the only host synchronisation of training.
    """

    loss: float | torch.Tensor
    step: int = 0                      # steps done so far (this one included)
    seconds: float = 0.0               # training time so far
    psnr: float | torch.Tensor | None = None   # training PSNR of this batch, where it means something
    samples_per_ray: float | torch.Tensor | None = None
    rays_per_second: float | None = None

    def resolved(self) -> "Progress":
        """The same figures with every tensor read back as a Python float (one transfer)."""
        lazy = {k: v for k, v in self.__dict__.items() if isinstance(v, torch.Tensor)}
        if not lazy:
            return self
        values = torch.stack([v.detach().float().reshape(()) for v in lazy.values()]).tolist()
        return replace(self, **dict(zip(lazy, values)))

    def fields(self) -> dict[str, Any]:
        """As a dict of plain numbers, without the values this task does not report."""
        return {k: v for k, v in self.resolved().__dict__.items() if v is not None}


class Task(ABC):
    """One training mode: data, field, optimiser, sampler state; see the module docstring.

    Subclasses set the class attributes, implement the abstract methods and build
    `self.model` (whose `state_dict` is checkpointed), `self.optimizer` and `self.sampler`
    (a torch.Generator) in `__init__`, calling `super().__init__(cfg, device)` first.
    """

    mode: ClassVar[str]                    # registry key and protocol `mode`
    kind: ClassVar[str]                    # "an image-field", "a NeRF", ...: for messages
    config_type: ClassVar[type]
    presets: ClassVar[dict[str, Any]]
    default_preset: ClassVar[str]
    default_steps: ClassVar[int]           # the CLI's budget when none is given
    checkpoint_format: ClassVar[str]
    checkpoint_keys: ClassVar[tuple[str, ...]] = ()   # beyond BASE_CHECKPOINT_KEYS
    passes: ClassVar[tuple[str, ...]] = ("rgb",)      # what `render` can produce

    model: Any
    optimizer: torch.optim.Optimizer
    sampler: torch.Generator
    ranks: Ranks = SINGLE                  # data-parallel processes (set by the Session)

    def __init__(self, cfg: Any, device: torch.device) -> None:
        check_precision(getattr(cfg, "mlp_precision", "float32"), device)
        if device.type == "cpu":
            keep_freed_memory()     # a step's big tensors reuse freed pages (cpu_allocator)
        self.cfg = cfg
        self.device = device
        self.steps_done = 0
        self.seconds = 0.0

    # ------------------------------------------------------------------ data
    @classmethod
    @abstractmethod
    def load_data(cls, path: str | Path, cfg: Any = None) -> Any:
        """Read this task's input (UserError naming the file for bad input); `cfg` is the
        run's config (None: the defaults), for options that shape the data (a NeRF's
        max_image_size)."""

    @classmethod
    @abstractmethod
    def data_from_checkpoint(cls, ckpt: dict[str, Any], where: str | Path, for_training: bool) -> Any:
        """The input a checkpoint was trained on, re-read from its recorded path. Without
        `for_training`, a stand-in that can render and mesh may replace a file that is gone."""

    @classmethod
    def check_data(cls, ckpt: dict[str, Any], data: Any, where: str | Path) -> None:
        """UserError when `data` is not what the checkpoint was trained on."""

    # ------------------------------------------------------------------ training
    @abstractmethod
    def train_step(self) -> Progress:
        """One optimisation step on a fresh batch (learning rate already set); returns its
        loss and task-specific figures (step and seconds are filled in by `step`)."""

    def fit_batch(self, inputs: torch.Tensor, target: torch.Tensor, kind: str) -> Progress:
        """A supervised step: `kind` loss (nn/losses.py) of model(inputs) against target,
        backward, optimiser step (for tasks whose field maps inputs straight to targets).
        With several ranks each trains on its share of the batch and the gradients are
        summed (distributed.py); the loss reported is the whole batch's."""
        n, ranks = len(inputs), self.ranks
        if n < ranks.world:
            raise UserError(f"batch_size: {n} is smaller than the {ranks.world} processes sharing it")
        part = ranks.share(n)
        self.optimizer.zero_grad(set_to_none=True)
        value = loss(kind, self.model(inputs[part]), target[part]) * ranks.weight(n)
        value.backward()
        total, _ = ranks.reduce_gradients(self.optimizer.param_groups, value.detach().reshape(1))
        self.optimizer.step()
        return Progress(loss=total.reshape(()))

    def step(self) -> Progress:
        """One training step at the scheduled learning rate, timed."""
        t0 = time.perf_counter()
        lr = self.cfg.optimizer.learning_rate_at(self.steps_done)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        p = self.train_step()
        self.steps_done += 1
        self.seconds += time.perf_counter() - t0
        return replace(p, step=self.steps_done, seconds=self.seconds)

    def train(self, steps: int | None = None, seconds: float | None = None,
              callback: Callable[[Progress], Any] | None = None,
              should_stop: Callable[[], bool] | None = None) -> Progress | None:
        """Train `steps` more steps or for `seconds` more seconds (exactly one of them)."""
        if (steps is None) == (seconds is None):
            raise ValueError("give exactly one of steps and seconds")
        return run_training(self, Budget.starting_at(self, steps, seconds), callback, should_stop)

    def prepare(self) -> None:
        """Work done once before the clock starts (e.g. an SDF's ground truth)."""

    # ------------------------------------------------------------------ outputs
    @abstractmethod
    def render(self, camera: Camera | None, passes: tuple[str, ...],
               resolution: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
        """Passes of the field seen by `camera` (world units; None where the task needs no
        camera), at `resolution` (width, height; default the camera's): float32 arrays."""

    def extract_mesh(self, resolution: int, threshold: float | None) -> dict[str, Any]:
        """Marching-cubes mesh: {"vertices" [V, 3] world, "faces" [F, 3], optional "colors"
        [V, 3] uint8, "info" dict}. Tasks without a surface say so."""
        raise UserError(f"export_mesh: {self.kind} field has no surface to mesh")

    @abstractmethod
    def metrics(self) -> dict[str, Any]:
        """Figures of the run for metrics.json (backend, device, n_params and the task's own)."""

    @property
    def backend(self) -> str:
        """The hash-grid implementation in use on this device."""
        enc = getattr(self.model, "encoding", None)
        return enc.backend_for(self.device) if hasattr(enc, "backend_for") else "torch"

    @property
    def mlp_precision(self) -> str:
        """The precision the MLPs' products run in on this device (config `mlp_precision`
        with auto resolved)."""
        return resolve_precision(getattr(self.cfg, "mlp_precision", "float32"), self.device)

    @property
    def n_params(self) -> int:
        return int(sum(p.numel() for p in self.model.parameters()))

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything to continue training exactly (CPU tensors, JSON-like values)."""
        model = self.model.state_dict()
        return {
            "format": self.checkpoint_format,
            "config": cfgmod.to_dict(self.cfg),
            **self.extra_state(),
            "model": files.to_cpu(model),
            "optimizer": files.to_cpu(self.optimizer.state_dict()),
            "sampler": self.sampler.get_state().cpu(),
            "steps": self.steps_done,
            "seconds": self.seconds,
        }

    def extra_state(self) -> dict[str, Any]:
        """The task's own checkpoint entries (where its data came from, transforms, ...)."""
        return {}

    def load_state_dict(self, ckpt: dict[str, Any], where: str | Path = "checkpoint") -> None:
        """Continue from a checkpoint of the same configuration (training state included)."""
        files.restore_training(ckpt, where, self.model, self.optimizer, self.sampler)
        self.steps_done = int(ckpt["steps"])
        self.seconds = float(ckpt["seconds"])

    @classmethod
    def read_checkpoint(cls, path: str | Path) -> dict[str, Any]:
        """A checkpoint of this task, checked (UserError naming the file otherwise)."""
        return files.load_checkpoint(path, cls.checkpoint_format,
                                     (*BASE_CHECKPOINT_KEYS, *cls.checkpoint_keys), cls.kind)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: torch.device, data: Any = None,
                        backend: str | None = None, for_training: bool = True,
                        data_path: str | Path | None = None) -> "Task":
        """Rebuild a task from `checkpoint.pt`; its data is re-read from the recorded path
        unless given (`data`, or `data_path` read with the checkpoint's config). `backend`
        overrides the recorded one (checkpoints move across backends)."""
        ckpt = cls.read_checkpoint(path)
        cfg = files.config_from_checkpoint(cls.config_type, ckpt, path, backend)
        if data is None and data_path is not None:
            data = cls.load_data(data_path, cfg)
        if data is None:
            data = cls.data_from_checkpoint(ckpt, path, for_training)
        cls.check_data(ckpt, data, path)
        task = cls(data, cfg, device)
        task.load_state_dict(ckpt, path)
        return task


@dataclass
class Budget:
    """How much more to train: `steps` or `seconds` more than the task had at the start,
    or neither (until stopped)."""

    steps: int | None = None
    seconds: float | None = None
    start_steps: int = 0
    start_seconds: float = 0.0

    @classmethod
    def starting_at(cls, task: Task, steps: int | None, seconds: float | None) -> "Budget":
        if steps is not None and seconds is not None:
            raise ValueError("give at most one of steps and seconds")
        return cls(steps, seconds, task.steps_done, task.seconds)

    def fraction(self, task: Task) -> float | None:
        """Share of the budget spent, None when training runs until stopped."""
        if self.steps is not None:
            return 1.0 if self.steps == 0 else min(1.0, (task.steps_done - self.start_steps) / self.steps)
        if self.seconds is not None:
            return 1.0 if self.seconds == 0 else min(1.0, (task.seconds - self.start_seconds) / self.seconds)
        return None

    def done(self, task: Task) -> bool:
        f = self.fraction(task)
        return f is not None and f >= 1.0

    def eta_seconds(self, task: Task) -> float | None:
        f = self.fraction(task)
        if f is None or f <= 0.0:
            return None
        return max(0.0, (task.seconds - self.start_seconds) * (1.0 - f) / f)


class PeriodicCheckpoint:
    """Calls `save()` every `every` seconds of wall time, across any number of `run_training`
    calls (the service trains in bursts between requests)."""

    def __init__(self, every: float, save: Callable[[], Any]) -> None:
        self.every, self.save = every, save
        self._due = time.monotonic() + every

    def maybe(self) -> None:
        if time.monotonic() >= self._due:
            self.save()
            self._due = time.monotonic() + self.every


def run_training(task: Task, budget: Budget, callback: Callable[[Progress], Any] | None = None,
                 should_stop: Callable[[], bool] | None = None,
                 checkpoint: PeriodicCheckpoint | None = None) -> Progress | None:
    """The training loop: step until the budget is spent or `should_stop()` says so.

    `callback(progress)` hears every step; `checkpoint` saves on its schedule. Returns the
    last step's progress (None if no step was taken). With several ranks this runs on rank
    0, whose decision every step is told to the others (`follow_training`).
    """
    last = None
    while task.ranks.agree(not budget.done(task) and not (should_stop is not None and should_stop())):
        last = task.step()
        if callback is not None:
            callback(last)
        if checkpoint is not None:
            checkpoint.maybe()
    return last


def follow_training(task: Task) -> int:
    """A rank other than 0: take a step whenever rank 0 takes one (its `run_training`
    says so before each step), wait while it pauses (answering requests, rendering), return
    when it ends the job (`Ranks.end`). Returns the steps taken."""
    ranks, taken = task.ranks, 0
    while True:
        command = ranks.next_command()
        if command == END:
            return taken
        if command == STEP:
            task.step()
            taken += 1
