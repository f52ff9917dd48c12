"""The Task interface, the one training loop and the Session, shown by a fourth task.

`SignalTask` below fits a 1-D signal (a .npy file of samples on [0, 1]) with a hash grid and
an MLP. It is written the way a new task is added to the engine: one Task subclass and one
registry entry. Nothing else is touched, and it then trains through the same loop, the same
Session, the same service (an in-process server over pipes, no CLI) and the same
checkpoint code as the image, NeRF and SDF tasks.
"""
from __future__ import annotations

import dataclasses
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from ngp_engine import tasks
from ngp_engine.config import AdamConfig, HashGridConfig, MLPConfig
from ngp_engine.encoding import make_encoding
from ngp_engine.errors import UserError
from ngp_engine.nn.mlp import MLP
from ngp_engine.nn.optim import TcnnAdam, param_groups
from ngp_engine.service.protocol import (PROTOCOL_VERSION, ExportMesh, Hello, Preview, Shutdown, Status, Train,
                                         parse_event)
from ngp_engine.service.session import RunSpec, Session
from ngp_engine.tasks.base import Budget, Progress, Task, run_training

CPU = torch.device("cpu")


# ---------------------------------------------------------------------- the fourth task
@dataclass(frozen=True)
class SignalConfig:
    """A 1-D signal fit: x in [0, 1] -> y."""

    encoding: HashGridConfig = field(default_factory=lambda: HashGridConfig(
        n_levels=8, n_features_per_level=2, log2_hashmap_size=10, base_resolution=4,
        per_level_scale=1.6))
    network: MLPConfig = field(default_factory=lambda: MLPConfig(n_neurons=32, n_hidden_layers=1))
    optimizer: AdamConfig = field(default_factory=AdamConfig)
    batch_size: int = 256
    backend: str = "auto"
    seed: int = 7


class SignalField(torch.nn.Module):
    """[N, 1] positions -> [N, 1] values: a hash grid and an MLP."""

    def __init__(self, cfg: SignalConfig, generator: torch.Generator) -> None:
        super().__init__()
        self.encoding = make_encoding(1, cfg.encoding, backend=cfg.backend, generator=generator)
        self.network = MLP(self.encoding.n_output_dims, 1, cfg.network, generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(self.encoding(x))


class SignalTask(Task):
    mode = "signal"
    kind = "a signal"
    config_type = SignalConfig
    presets = {"small": SignalConfig()}
    default_preset = "small"
    default_steps = 100
    checkpoint_format = "test-signal-checkpoint"
    checkpoint_keys = ("signal_path",)
    passes = ("rgb",)

    def __init__(self, data: tuple[np.ndarray, str], cfg: SignalConfig, device: torch.device) -> None:
        super().__init__(cfg, device)
        values, self.path = data
        self.values = torch.as_tensor(values, dtype=torch.float32, device=device)     # [S]
        gen = torch.Generator().manual_seed(cfg.seed)
        self.model = SignalField(cfg, gen).to(device)
        self.optimizer = TcnnAdam(param_groups([self.model.encoding], [self.model.network]),
                                  cfg.optimizer)
        self.sampler = torch.Generator(device=device).manual_seed(cfg.seed + 1)

    @classmethod
    def load_data(cls, path, cfg=None):
        return np.load(path), str(Path(path).resolve())

    @classmethod
    def data_from_checkpoint(cls, ckpt, where, for_training):
        return cls.load_data(ckpt["signal_path"])

    def target(self, x: torch.Tensor) -> torch.Tensor:
        """The signal linearly interpolated at x [N] in [0, 1]."""
        s = x * (len(self.values) - 1)
        i = s.floor().long().clamp(0, len(self.values) - 2)
        w = s - i
        return self.values[i] * (1 - w) + self.values[i + 1] * w

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x[:, None])[:, 0]

    def train_step(self) -> Progress:
        x = torch.rand(self.cfg.batch_size, generator=self.sampler, device=self.device)
        return self.fit_batch(x[:, None], self.target(x)[:, None], "L2")

    @torch.no_grad()
    def mse(self) -> float:
        x = torch.linspace(0, 1, 1000)
        return float(((self.predict(x) - self.target(x)) ** 2).mean())

    @torch.no_grad()
    def render(self, camera, passes, resolution=None):
        """The signal as a grey strip [1, W, 3] (no camera: a signal has no view)."""
        w = resolution[0] if resolution else len(self.values)
        y = self.predict(torch.linspace(0, 1, w)).clamp(0, 1)
        return {"rgb": y[None, :, None].expand(1, w, 3).numpy().copy()}

    def metrics(self) -> dict[str, Any]:
        return {"backend": self.backend, "device": str(self.device), "n_params": self.n_params,
                "mse": self.mse()}

    def extra_state(self) -> dict[str, Any]:
        return {"signal_path": self.path}


tasks.register(SignalTask)        # the one registry line


# ---------------------------------------------------------------------- fixtures, helpers
@pytest.fixture
def signal_file(tmp_path) -> Path:
    x = np.linspace(0, 1, 257)
    path = tmp_path / "signal.npy"
    np.save(path, 0.5 + 0.3 * np.sin(2 * np.pi * 3 * x) + 0.1 * (x > 0.5))
    return path


def spec(tmp_path: Path, **kw) -> RunSpec:
    base = dict(mode="signal", run_dir=tmp_path / "run", device=CPU)
    return RunSpec(**{**base, **kw})


# ---------------------------------------------------------------------- the loop and the session
def test_a_new_task_trains_through_the_session(signal_file, tmp_path):
    session = Session.open(spec(tmp_path, data=str(signal_file), steps=300))
    assert session.mode == "signal" and session.fraction() == 0.0
    first = session.task.mse()
    seen: list[Progress] = []
    last = session.train(callback=seen.append)
    # The budget is exact, progress counts every step, the fit is real.
    assert session.steps_done == 300 == last.step and session.budget_done
    assert [p.step for p in seen] == list(range(1, 301))
    assert all(b.seconds >= a.seconds for a, b in zip(seen, seen[1:]))
    assert session.fraction() == 1.0 and session.eta_seconds() == 0.0
    assert session.task.mse() < 1e-3 * first and session.task.mse() < 1e-4, (first, session.task.mse())
    # config.json (strict JSON form), metrics.json and the checkpoint, from the shared code.
    assert json.loads((tmp_path / "run" / "config.json").read_text())["batch_size"] == 256
    path, summary = session.write_metrics()
    assert summary["mode"] == "signal" and summary["steps"] == 300 and summary["backend"] == "torch"
    assert json.loads(path.read_text())["mse"] == pytest.approx(summary["mse"])
    ckpt = SignalTask.read_checkpoint(session.save_checkpoint())
    assert ckpt["format"] == "test-signal-checkpoint" and ckpt["steps"] == 300


def test_running_out_of_memory_is_one_line_and_keeps_the_steps_done(signal_file, tmp_path,
                                                                   monkeypatch):
    session = Session.open(spec(tmp_path, data=str(signal_file), steps=100))
    real_step = session.task.step

    def step():
        if session.steps_done == 3:         # as torch raises it when CUDA memory runs out
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_step()

    monkeypatch.setattr(session.task, "step", step)
    with pytest.raises(UserError) as e:
        session.train()
    message = str(e.value)
    assert "\n" not in message and "out of cpu memory at step 4" in message
    assert "--preset cpu-fast" in message and "the 3 steps done are kept in" in message
    ckpt = SignalTask.read_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert ckpt["steps"] == 3
    assert "peak_cuda_memory_mb" not in session.summary()      # on the CPU: not reported


def test_resume_through_the_session_is_exact(signal_file, tmp_path):
    straight = Session.open(spec(tmp_path, data=str(signal_file), steps=40))
    straight.train()
    half = Session.open(spec(tmp_path, data=str(signal_file), steps=20, run_dir=tmp_path / "half"))
    half.train()
    ckpt = half.save_checkpoint()
    resumed = Session.open(spec(tmp_path, resume=str(ckpt), steps=20, run_dir=tmp_path / "resumed"))
    assert resumed.steps_done == 20 and resumed.fraction() == 0.0
    resumed.train()
    assert resumed.steps_done == 40
    for (name, a), b in zip(straight.task.model.state_dict().items(),
                            resumed.task.model.state_dict().values()):
        assert torch.equal(a, b), name
    # A resumed run keeps its configuration; the backend may change.
    with pytest.raises(UserError, match=r"train.preset: a resumed run keeps"):
        Session.open(spec(tmp_path, resume=str(ckpt), preset="small"))
    moved = Session.open(spec(tmp_path, resume=str(ckpt), overrides={"backend": "torch"}, steps=0))
    assert moved.budget_done and moved.task.cfg.backend == "torch"


def test_the_loop_stops_on_request_and_checkpoints_on_a_clock(signal_file, tmp_path):
    task = SignalTask(SignalTask.load_data(signal_file), SignalConfig(), CPU)
    calls = []
    run_training(task, Budget.starting_at(task, None, None), should_stop=lambda: task.steps_done >= 7)
    assert task.steps_done == 7
    session = Session.open(spec(tmp_path, data=str(signal_file), steps=30))
    session.train(checkpoint_every=1e-9, on_checkpoint=calls.append)
    assert len(calls) == 30 and calls[-1] == tmp_path / "run" / "checkpoint.pt"
    assert SignalTask.read_checkpoint(calls[-1])["steps"] == 30
    # The learning-rate schedule lives in the loop too: a decay halves it at step 10.
    cfg = dataclasses.replace(SignalConfig(), optimizer=AdamConfig(decay_start=10, decay_interval=100,
                                                                   decay_base=0.5))
    decayed = SignalTask(SignalTask.load_data(signal_file), cfg, CPU)
    decayed.train(steps=11)
    assert decayed.optimizer.param_groups[0]["lr"] == pytest.approx(0.005)


def test_bad_requests_name_the_field(signal_file, tmp_path):
    with pytest.raises(UserError, match=r"train.mode: 'mesh' is not one of nerf, sdf, image, signal"):
        Session.open(spec(tmp_path, mode="mesh", data=str(signal_file)))
    with pytest.raises(UserError, match=r"train.preset: 'huge' is not a signal preset \(small\)"):
        Session.open(spec(tmp_path, data=str(signal_file), preset="huge"))
    with pytest.raises(UserError, match=r"train.config: batch_size: expected an integer"):
        Session.open(spec(tmp_path, data=str(signal_file), config={"batch_size": "many"}))
    with pytest.raises(UserError, match=r"train.data: 'signal.npy' must be an absolute path"):
        Session.open(spec(tmp_path, data="signal.npy"))
    assert not (tmp_path / "run").exists()               # nothing written for a bad request


# ---------------------------------------------------------------------- the service, no CLI
class InProcessEngine:
    """`ngp_engine.service.server.Server` in a thread, over two pipes: the real protocol,
    the real server loop, this process's task registry."""

    def __init__(self) -> None:
        from ngp_engine.service.server import Server

        self._in_r, self._in_w = os.pipe()
        out_r, out_w = os.pipe()
        self._out = os.fdopen(out_r, "rb")
        self.server = Server(self._in_r, os.fdopen(out_w, "wb", buffering=0))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        self.events: list = []

    def send(self, msg) -> None:
        os.write(self._in_w, msg.to_json().encode() + b"\n")

    def wait_for(self, kind: str, request: str | None = None):
        while True:
            line = self._out.readline()
            assert line, f"engine ended before a {kind} event"
            ev = parse_event(line)
            self.events.append(ev)
            # An error answering the request ends the wait (with its message), not a hang.
            assert not (ev.type == "error" != kind and request is not None and ev.request == request), ev
            if ev.type == kind and (request is None or getattr(ev, "request", None) == request):
                return ev

    def close(self) -> None:
        os.close(self._in_w)                               # EOF: the server exits
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()


def test_a_new_task_is_served_without_any_other_change(signal_file, tmp_path):
    engine = InProcessEngine()
    try:
        engine.send(Hello(protocol=PROTOCOL_VERSION, id="h"))
        assert "signal" in engine.wait_for("ready", "h").modes
        engine.send(Train(mode="signal", data=str(signal_file), run_dir=str(tmp_path / "svc"),
                          steps=200, id="t"))
        done = engine.wait_for("done", "t")
        assert done.summary["mode"] == "signal" and done.summary["steps"] == 200
        assert done.summary["mse"] < 1e-4 and not done.summary["stopped"]
        progress = [e for e in engine.events if e.type == "progress"]
        assert progress and progress[-1].step == 200 and progress[-1].fraction == 1.0
        engine.send(Preview(passes=["rgb"], resolution=[64, 1], id="p"))
        art = engine.wait_for("artifact", "p")
        strip = np.load(art.path)
        assert art.info["pass"] == "rgb" and strip.shape == (1, 64, 3)
        x = np.linspace(0, 1, 64)
        want = 0.5 + 0.3 * np.sin(2 * np.pi * 3 * x) + 0.1 * (x > 0.5)
        assert np.median(np.abs(strip[0, :, 0] - want)) < 0.01
        engine.send(ExportMesh(resolution=32, id="m"))
        assert "a signal field has no surface to mesh" in engine.wait_for("error", "m").message
        engine.send(Status(id="s"))
        state = engine.wait_for("state", "s")
        assert state.job == "finished" and state.mode == "signal" and state.step == 200
        assert SignalTask.read_checkpoint(tmp_path / "svc" / "checkpoint.pt")["steps"] == 200
        engine.send(Shutdown())
    finally:
        engine.close()


def test_lagged_reads_come_back_in_order_after_the_lag():
    # A GPU training step reads its counts back two steps later (`device.LaggedReads`): the
    # values and tags come back oldest first, only once `lag` newer pushes exist; the CPU
    # reads at once by default.
    from ngp_engine.device import LaggedReads

    reads = LaggedReads(torch.device("cpu"), lag=2)
    got = []
    for step in range(5):
        reads.push(torch.tensor([step, 10 * step]), tag=f"s{step}")
        got.append(reads.ready())
    assert got == [[], [], [("s0", [0, 0])], [("s1", [1, 10])], [("s2", [2, 20])]]
    reads.push(torch.tensor([5, 50]), tag="s5")
    saved = reads.pending()                              # what a checkpoint keeps
    assert saved == [("s3", [3, 30]), ("s4", [4, 40]), ("s5", [5, 50])]
    again = LaggedReads(torch.device("cpu"), lag=2)
    again.restore(saved)
    assert again.ready() == [("s3", [3, 30])]
    now = LaggedReads(torch.device("cpu"))
    assert now.lag == 0
    now.push(torch.tensor([7]), tag=1)
    assert now.ready() == [(1, [7])]
    assert LaggedReads(torch.device("meta")).lag == 2
