"""The add-on's one engine process and what it has told us, pumped on Blender's main thread.

`EngineClient` (bundled `ngp_engine/client.py`, standard library only) owns the process and a
reader thread that queues events. `pump()` runs from `bpy.app.timers` every 0.1 s: it drains
the queue without blocking (a tick costs well under a millisecond when idle), updates
`STATE`, and redraws the panel. Blender data is touched only here and in operators, on the
main thread.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import interpreters
from .ngp_engine import __version__ as ENGINE_VERSION
from .ngp_engine.service.client import EngineClient, EngineError, EngineExited
from .ngp_engine.service.protocol import PROTOCOL_VERSION, Message
from .ngp_engine.service.remote import EngineLocation

PUMP_INTERVAL = 0.1
PREFERENCES = "Preferences > Add-ons > Instant NGP Fields"   # where the user sets the engine up
BUSY = ("starting", "uploading", "training", "posing")   # statuses in which a job is under way


@dataclass
class EngineState:
    """What the panel draws: one place, plain values."""

    status: str = "idle"                 # idle | starting | training | posing | done | stopped | error
    message: str = ""                    # one sentence for the panel and the status bar
    mode: str = ""
    source_object: str = ""              # the mesh object an SDF is trained on (an image fit: the image)
    image_fit: dict | None = None        # an image fit under way: {name, size, linear[, summary]}
    run_dir: str = ""
    step: int = 0
    loss: float = 0.0
    psnr: float | None = None
    fraction: float | None = None
    eta_seconds: float | None = None
    seconds: float = 0.0
    device: str = ""
    engine_info: dict[str, Any] = field(default_factory=dict)
    job_device: str = ""                 # where the current job really runs: "cuda (NVIDIA H200)"
    job_backend: str = ""                # and with which hash-grid backend
    job_precision: str = ""              # and MLP precision (the engine's auto resolved)
    artifacts: dict[str, str] = field(default_factory=dict)   # kind / pass -> latest path
    pending: dict[str, str] = field(default_factory=dict)     # what it is for -> latest request id
    run_name: str = ""                   # the collection this run's results go to ("NGP Run 3")
    bounds_run: bool = False             # the run trained in NGP Bounds: its mesh is cut to them
    mesh_targets: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    """export_mesh request id -> (mode, source object, run name) at the time it was sent: a
    second job started while a mesh is on its way must not rename or move the first one."""
    summary: dict[str, Any] = field(default_factory=dict)
    capture: str = ""                    # name of the photos whose poses are being found
    poses_stage: str = ""                # reading | features | matching | mapping | writing
    poses_done: int = 0
    poses_total: int = 0
    poses_registered: int = 0
    max_tick_ms: float = 0.0             # slowest pump tick so far (benchmark figure)
    job_status: str = ""                 # "" | running | cancelling: a dataset built in Blender (operators.stepped)
    job_what: str = ""                   # "rendering the rig", "exporting the cameras"
    job_done: int = 0
    job_total: int = 0
    transfer_done: int = 0               # bytes of the job's input uploaded to a remote engine
    transfer_total: int = 0


STATE = EngineState()
_client: EngineClient | None = None
_handlers: list = []                    # callables(event) run on the main thread per event
# Requests someone waits on (the render engine, possibly on Blender's render thread): their
# events go to the waiter, everything else to `_deferred`, which the pump folds in on the
# main thread. One lock for both.
_awaited: dict[str, list] = {}
_deferred: list = []
_route_lock = threading.Lock()


def client() -> EngineClient | None:
    return _client if _client is not None and _client.alive else None


def ensure_engine(python: str, timeout: float = 120.0, engine_root: Path | None = None,
                  location: EngineLocation | None = None) -> EngineClient:
    """The running engine, or a new one started with `python` from `engine_root` (default: the
    engine bundled with the add-on), or over SSH at a remote `location`; EngineError with a
    one-line reason otherwise: what the interpreter lacks and the command that fixes it, a
    host that cannot be reached, or a version that does not match. Blocks for the start-up
    (a second or two; an SSH login adds its own)."""
    global _client
    location = location or EngineLocation()
    if _client is not None and _client.alive and _client.location == location:
        return _client
    shutdown()
    if not location.remote and not python:
        raise EngineError(f"no engine Python is set: click Install Engine (or Detect) in {PREFERENCES}")
    new = EngineClient(python=python, engine_root=engine_root or Path(__file__).resolve().parent,
                       location=location)
    try:
        ready = new.start(timeout=timeout)
    except EngineError as e:
        new.kill()                        # whatever started: its pipes and process go
        if location.remote:
            raise
        # A Python that is there but cannot run the engine: say what it lacks and the fix.
        raise EngineError((_why_not(python) if Path(python).is_file() else "") or str(e)) from None
    try:
        check_handshake(ready)
    except EngineError:
        new.close(timeout=5.0)
        raise
    _client = new
    STATE.device = ready.device
    STATE.engine_info = {"engine_version": ready.engine_version, "device": ready.device,
                         "backends": list(ready.backends), "torch": ready.torch, "python": ready.python,
                         "modes": list(ready.modes), "devices": dict(ready.devices),
                         "backend": ready.backend}
    start_pump()
    return new


def check_handshake(ready: Any) -> None:
    """Refuse an engine whose version or protocol is not the add-on's (one line saying how
    to update it)."""
    if ready.engine_version != ENGINE_VERSION or ready.protocol != PROTOCOL_VERSION:
        raise EngineError(f"the engine is version {ready.engine_version} (protocol {ready.protocol}) but this "
                          f"add-on needs {ENGINE_VERSION} (protocol {PROTOCOL_VERSION}): run Install Engine "
                          f"({PREFERENCES}) to update it, or update the add-on")


def _why_not(python: str) -> str:
    """Why `python` cannot run the engine, from the engine's probe ("" if it seems able)."""
    it = interpreters.probe(python)
    if it.error:
        return f"engine Python {python} {it.error}"
    if not it.ok:
        missing = ", ".join(interpreters.missing_names(it.report))
        return (f"engine Python {python} lacks {missing}: run Install Engine ({PREFERENCES}) "
                f"or: {it.report.get('fix', '')}")
    return ""


def send(msg: Message) -> None:
    if _client is None:
        raise EngineError("the engine is not running")
    _client.send(msg)


def shutdown() -> None:
    """Stop the engine (its job saves a checkpoint) and forget it. Safe to call any time."""
    global _client
    with _route_lock:
        _deferred.clear()                 # events of that engine mean nothing to the next one
    if _client is not None:
        try:
            _client.close(timeout=5.0)
        except Exception:  # noqa: BLE001 - shutting down must never raise into Blender
            _client.kill()
        _client = None
    if STATE.status in BUSY:
        STATE.status, STATE.message = "stopped", "engine stopped"


def add_handler(fn) -> None:
    if fn not in _handlers:
        _handlers.append(fn)


def apply_event(ev: Any) -> None:
    """Fold one engine event into STATE."""
    t = ev.type
    if t == "poses_progress" or _is_poses_end(ev):
        _apply_poses_event(ev)
    elif t == "transfer":                  # a remote engine's input going up
        STATE.status = "uploading"
        STATE.transfer_done, STATE.transfer_total = ev.done, ev.total
        STATE.message = f"uploading to the engine: {ev.done / 1e6:.1f} of {ev.total / 1e6:.1f} MB"
    elif t == "progress":
        STATE.status = "training"
        STATE.step, STATE.loss, STATE.psnr = ev.step, ev.loss, ev.psnr
        STATE.fraction, STATE.eta_seconds, STATE.seconds = ev.fraction, ev.eta_seconds, ev.seconds
    elif t == "artifact":
        key = ev.info.get("pass", ev.kind) if ev.kind == "pass" else ev.kind
        if ev.kind == "mesh" and not ev.path.endswith(".ply"):
            key = "mesh_obj"
        STATE.artifacts[key] = ev.path
        if ev.kind == "config" and ev.info.get("backend"):      # a job started: where it runs
            STATE.job_device = f"{ev.info['device']} ({ev.info.get('device_name', '')})"
            if ev.info.get("processes", 1) > 1:
                STATE.job_device += f" x {ev.info['processes']} processes"
            STATE.job_backend = ev.info["backend"]
            STATE.job_precision = ev.info.get("mlp_precision", "")
    elif t == "done":
        STATE.status = "stopped" if ev.summary.get("stopped") else "done"
        STATE.summary = dict(ev.summary)
        STATE.step = int(ev.summary.get("steps", STATE.step))
        STATE.message = f"{STATE.mode or 'training'} finished at step {STATE.step}" \
            if STATE.status == "done" else f"stopped at step {STATE.step}"
    elif t == "error":
        STATE.message = ev.message
        if STATE.status in ("starting", "uploading", "training") and ev.request == STATE.pending.get("train"):
            STATE.status = "error"
        elif ev.request is None and STATE.status == "starting":
            STATE.status = "error"
    elif t == "exited":
        if STATE.status in BUSY or ev.returncode not in (0, None):
            STATE.status = "error"
            STATE.message = ev.message


def _is_poses_end(ev: Any) -> bool:
    """Whether `ev` is the done or error that ends the latest `poses` request."""
    return (ev.type in ("done", "error") and ev.request is not None
            and ev.request == STATE.pending.get("poses"))


def _apply_poses_event(ev: Any) -> None:
    """A poses job's progress or end. Its done only says where the dataset is: the message
    comes from whoever brings the dataset into the scene (operators.photos)."""
    if ev.type == "poses_progress":
        STATE.status = "posing"
        STATE.poses_stage, STATE.poses_done, STATE.poses_total = ev.stage, ev.done, ev.total
        STATE.poses_registered = max(STATE.poses_registered, ev.registered)
    elif ev.type == "done":
        STATE.summary = dict(ev.summary)
        STATE.status = "stopped" if ev.summary.get("stopped") else "done"
        STATE.message = "finding camera poses stopped" if STATE.status == "stopped" \
            else "camera poses found"
    elif "cancel" in ev.message.lower():   # the engine's answer to stop may be an error
        STATE.status, STATE.message = "stopped", "finding camera poses stopped"
    else:                                  # the job failed: one line in the panel
        STATE.status = "error"
        lines = ev.message.strip().splitlines()
        STATE.message = lines[0] if lines else "finding camera poses failed"


def _route_locked(c: EngineClient) -> None:
    """Poll `c` and route what came (the caller holds `_route_lock`): awaited events to their
    waiters, the rest to `_deferred`. The pump and a waiter on the render thread both poll
    only this way, so neither ever reorders the other's events."""
    for ev in c.poll():
        box = _awaited.get(getattr(ev, "request", None) or "")
        (box if box is not None else _deferred).append(ev)
    c.received.clear()                     # the add-on keeps STATE, not the history


def _take(c: EngineClient) -> list:
    """The events nobody waits on, oldest first (taken from `_deferred`)."""
    with _route_lock:
        _route_locked(c)
        out = _deferred[:]
        _deferred.clear()
        return out


def request(msg: Message, expect: int, timeout: float = 600.0,
            should_stop: Callable[[], bool] = lambda: False) -> list | None:
    """Send `msg` (which carries an id) and wait for `expect` artifacts answering it; returns
    them, or None if `should_stop()` turned true first. EngineError on the engine's error for
    it, its exit, or the timeout. Safe off the main thread: the events of others stay queued
    for the pump, which applies them, in order, on the main thread."""
    c = client()
    if c is None:
        raise EngineError("the engine is not running")
    box: list = []
    with _route_lock:
        _awaited[msg.id] = box
    try:
        c.send(msg)
        deadline = time.monotonic() + timeout
        while True:
            with _route_lock:
                _route_locked(c)
                got = list(box)
                exited = any(ev.type == "exited" for ev in _deferred)
            for ev in got:
                if ev.type == "error":
                    raise EngineError(ev.message.strip().splitlines()[0] if ev.message.strip() else "engine error")
            artifacts = [ev for ev in got if ev.type == "artifact"]
            if len(artifacts) >= expect:
                return artifacts
            if exited or not c.alive:
                raise EngineError("the engine stopped")
            if should_stop():
                return None
            if time.monotonic() > deadline:
                raise EngineError(f"the engine did not answer {msg.type} within {timeout:.0f} s")
            time.sleep(0.01)
    finally:
        with _route_lock:
            _awaited.pop(msg.id, None)


def pump() -> float | None:
    """Timer callback: drain events, update STATE, redraw. Returns the next interval."""
    t0 = time.perf_counter()
    c = _client
    if c is not None:
        for ev in _take(c):
            apply_event(ev)
            for fn in list(_handlers):
                try:
                    fn(ev)
                except Exception as e:  # noqa: BLE001 - a handler bug must not kill the pump
                    STATE.message = f"{type(e).__name__}: {e}"
    _redraw()
    STATE.max_tick_ms = max(STATE.max_tick_ms, 1000.0 * (time.perf_counter() - t0))
    return PUMP_INTERVAL if c is not None else None


def start_pump() -> None:
    import bpy  # noqa: PLC0415

    if not bpy.app.timers.is_registered(pump):
        bpy.app.timers.register(pump, first_interval=PUMP_INTERVAL, persistent=True)


def stop_pump() -> None:
    import bpy  # noqa: PLC0415

    if bpy.app.timers.is_registered(pump):
        bpy.app.timers.unregister(pump)


def _redraw() -> None:
    import bpy  # noqa: PLC0415

    wm = getattr(bpy.context, "window_manager", None)
    if wm is None:
        return
    for window in wm.windows:
        for area in window.screen.areas:
            if area.type in ("VIEW_3D", "IMAGE_EDITOR"):
                area.tag_redraw()


def reset_state() -> None:
    """Back to a fresh state (in place: other modules hold a reference to STATE)."""
    STATE.__dict__.update(EngineState().__dict__)
    with _route_lock:
        _deferred.clear()


__all__ = ["BUSY", "STATE", "EngineError", "EngineExited", "add_handler", "apply_event", "check_handshake", "client",
           "ensure_engine",
           "pump", "request", "reset_state", "send", "shutdown", "start_pump", "stop_pump"]
