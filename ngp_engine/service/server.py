"""`python -m ngp_engine serve`: the engine as a subprocess speaking JSON lines (see protocol.py).

One thread reads stdin into a queue; the main thread owns the model. While a job trains, the
main thread answers every queued request between two training steps (so a preview never
races a step), then trains one more step. A `poses` job (structure from motion: pycolmap
holds the thread for minutes inside one call) runs in a worker thread instead; its progress
goes out as it comes, its end comes back through the queue, and `stop` cancels it. Stdout carries protocol lines only: file
descriptor 1 is pointed at stderr at start-up, so a stray print from any library lands in
the log instead of corrupting the channel.

Robustness rules: a bad line gets an `error` event and the server goes on; an exception in
a job ends the job (error event with the traceback in `detail`), never the process; when
stdin closes (the client quit or crashed) the job is stopped with a checkpoint and the
process exits.
"""
from __future__ import annotations

import logging
import math
import os
import queue
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, BinaryIO, Callable

from .. import __version__
from ..config import ConfigError
from ..errors import UserError
from . import transfer
from .line_reader import read_lines
from .protocol import (MAX_LINE_BYTES, PROTOCOL_VERSION, Artifact, Done, Error, ExportMesh, FileInfo, GetFile,
                       Hello, Log, Message, Poses, PosesProgress, Preview, Progress, ProtocolError, PutFile,
                       Ready, Shutdown, State, Status, Stop, Train, parse_request)
from .run_root import RunRoot

log = logging.getLogger(__name__)
PROGRESS_INTERVAL = 0.1          # seconds between progress events (at most ~10 per second)
EXIT_NO_TORCH = 3


class _Exit(Exception):
    """Raised by a handler to end the serve loop."""


class Server:
    """Serves requests read from file descriptor `inp_fd` (one JSON object per line), writes
    events to `out`."""

    def __init__(self, inp_fd: int, out: BinaryIO, root: str | os.PathLike | None = None) -> None:
        import torch  # noqa: F401,PLC0415 - fail here, before ready, when torch is missing

        from ..device import pick_device  # noqa: PLC0415

        self._inp_fd, self._out = inp_fd, out
        self.root = RunRoot(root)          # where request paths point (remote: confined to it)
        self._out_lock = threading.Lock()
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.device = pick_device("auto")
        self.session = None
        self.job = "idle"
        self.train_request: Train | None = None
        self._last_progress = 0.0
        self._progress: dict[str, Any] | None = None
        self.poses_request: Poses | None = None
        self._cancel_poses = threading.Event()
        self._poses_worker: threading.Thread | None = None
        self._ranks: Any = None            # the job's processes (followers.JobRanks)

    # ---------------------------------------------------------------- output
    def send(self, msg: Message) -> None:
        """Write one event line. A vanished client is not an error: the stdin EOF that
        follows will end the loop."""
        line = msg.to_json().encode("utf-8") + b"\n"
        with self._out_lock:
            try:
                self._out.write(line)
                self._out.flush()
            except (BrokenPipeError, OSError, ValueError):
                pass

    def _fail(self, message: str, request: str | None, exc: BaseException | None = None) -> None:
        detail = "".join(traceback.format_exception(exc)) if exc is not None else ""
        self.send(Error(message=message, detail=detail, request=request))

    # ---------------------------------------------------------------- loop
    def run(self) -> int:
        threading.Thread(target=read_lines, args=(self._inp_fd, self._queue.put), name="stdin-reader",
                         daemon=True).start()
        try:
            while True:
                try:
                    item = self._queue.get(block=self.job != "training")
                except queue.Empty:
                    self._train_step()
                    continue
                self._handle(*item)
        except _Exit:
            return 0

    def _handle(self, kind: str, payload: Any) -> None:
        if kind == "eof":
            if self.job == "training":
                self._finish(stopped=True, reason="stdin closed")
            self._cancel_running_poses()
            raise _Exit
        if kind in ("poses_done", "poses_failed"):
            self._poses_ended(kind, payload)
            return
        if kind == "too_long":
            self._fail(f"line of {payload} bytes is longer than {MAX_LINE_BYTES}; ignored", None)
            return
        payload = payload.rstrip(b"\r\n")
        if not payload.strip():
            return
        try:
            msg = parse_request(payload)
        except ProtocolError as e:
            self._fail(str(e), None)
            return
        handler: Callable[[Any], None] = {
            Hello: self._hello, Train: self._train, Stop: self._stop, Preview: self._preview,
            ExportMesh: self._export_mesh, Poses: self._poses, Status: self._status,
            Shutdown: self._shutdown, FileInfo: self._file_info, PutFile: self._put_file,
            GetFile: self._get_file,
        }[type(msg)]
        if self.job == "posing" and type(msg) in (Train, Preview, ExportMesh, Poses):
            self._fail(f"{msg.type}: finding camera poses is running; wait for it or send stop", msg.id)
            return
        try:
            handler(msg)
        except _Exit:
            raise
        except (UserError, ConfigError) as e:
            self._fail(str(e), msg.id)
        except Exception as e:  # noqa: BLE001 - an engine bug ends the request, not the server
            self._fail(f"{msg.type}: {type(e).__name__}: {e}", msg.id, e)

    # ---------------------------------------------------------------- requests
    def _hello(self, msg: Hello) -> None:
        if msg.protocol != PROTOCOL_VERSION:
            self._fail(f"hello.protocol: client speaks protocol {msg.protocol}, this engine "
                       f"speaks {PROTOCOL_VERSION}; update the add-on or the engine", msg.id)
            return
        import torch  # noqa: PLC0415

        from ..device import found_devices  # noqa: PLC0415
        from ..encoding.backends import available  # noqa: PLC0415
        from ..tasks import modes  # noqa: PLC0415

        usable = available(self.device)
        self.send(Ready(engine_version=__version__, protocol=PROTOCOL_VERSION, device=str(self.device),
                        backends=usable, modes=modes(),
                        pid=os.getpid(), python=sys.executable, torch=torch.__version__,
                        request=msg.id, devices=found_devices(), backend=usable[-1]))

    def _train(self, msg: Train) -> None:
        from ..device import pick_device  # noqa: PLC0415
        from .session import RunSpec, Session  # noqa: PLC0415

        if self.job == "training":
            raise UserError("train: a job is already training; send stop first")
        device = self.device if msg.device == "auto" else pick_device(msg.device)
        self.session = None
        self.job = "idle"
        inside = self.root.inside
        run = dict(mode=msg.mode, run_dir=str(inside(msg.run_dir, "train.run_dir")),
                   data=str(inside(msg.data, "train.data")), config=msg.config, preset=msg.preset,
                   resume=str(inside(msg.resume, "train.resume")) if msg.resume else None,
                   steps=msg.steps, seconds=msg.seconds,
                   overrides={"backend": msg.backend, "mlp_precision": msg.mlp_precision})
        from .followers import JobRanks  # noqa: PLC0415

        self._ranks = JobRanks.start(msg.processes, msg.gradient_sync, device, run)
        try:
            self.session = Session.open(RunSpec(**{**run, "run_dir": Path(run["run_dir"])},
                                                device=self._ranks.ranks.device, ranks=self._ranks.ranks))
        except BaseException as e:
            lost = self._lost_process()       # a follower's own error says more than the link's
            self._stop_ranks()
            if lost and not isinstance(e, (UserError, ConfigError)):
                raise UserError(f"train.processes: {lost}") from None
            raise
        self.train_request = msg
        self.job = "training"
        self._last_progress = 0.0
        self._progress = None
        how = f" in {msg.processes} processes" if msg.processes > 1 else ""
        self.send(Log(level="info", message=f"training {msg.mode} from {msg.data} into {msg.run_dir}{how}"))
        # Where the job really runs: the device and the backend resolved for it.
        from ..device import device_name  # noqa: PLC0415

        task = self.session.task
        self.send(Artifact(kind="config", path=self.root.shown(self.session.run_dir / "config.json"), request=msg.id,
                           info={"device": str(task.device), "device_name": device_name(task.device),
                                 "backend": task.backend, "mlp_precision": task.mlp_precision,
                                 "processes": msg.processes}))
        if self.session.budget_done:  # a zero budget: nothing to train
            self._finish(stopped=False)

    def _stop_ranks(self, clean: bool = False) -> None:
        """End the job's other processes (told to end after a good job, else killed)."""
        job, self._ranks = self._ranks, None
        if job is not None:
            job.stop(clean)

    def _lost_process(self) -> str:
        """Which process of a data-parallel job died, when one did ("" otherwise)."""
        return self._ranks.lost() if self._ranks is not None else ""

    def _keep_steps(self) -> str:
        """Save the steps done after a job broke between steps (a lost process fails the
        gradient sum, before the optimiser touches the parameters): the words to say so."""
        s = self.session
        if not s.steps_done:
            return ""
        try:
            return f"; the {s.steps_done} steps done are kept in {self.root.shown(s.save_checkpoint())}"
        except (OSError, RuntimeError) as e:
            return f"; saving the checkpoint failed too ({type(e).__name__})"

    def _stop(self, msg: Stop) -> None:
        if self.job == "posing":
            self._cancel_poses.set()           # the worker ends at its next check; see _poses_ended
            return
        if self.job != "training":
            raise UserError(f"stop: no job is training (state: {self.job})")
        self._finish(stopped=True, reason="stop requested")

    def _preview(self, msg: Preview) -> None:
        if self.session is None:
            raise UserError("preview: no model yet; send train first")
        t0 = time.perf_counter()
        written = self.session.preview(msg.camera, list(msg.passes), msg.resolution)
        seconds = time.perf_counter() - t0
        for name, npy, png in written:
            self.send(Artifact(kind="pass", path=self.root.shown(npy), request=msg.id,
                               info={"pass": name, "png": self.root.shown(png), "step": self.session.steps_done,
                                     "render_seconds": round(seconds, 4)}))

    def _export_mesh(self, msg: ExportMesh) -> None:
        if self.session is None:
            raise UserError("export_mesh: no model yet; send train first")
        options = {"box": msg.box} if msg.box is not None else {}
        if options and self.session.mode != "nerf":
            raise UserError(f"export_mesh: a mesh box applies to a NeRF, not to the {self.session.mode} field")
        paths, info = self.session.export_mesh(msg.resolution, msg.threshold, **options)
        for p in paths:
            self.send(Artifact(kind="mesh", path=self.root.shown(p), request=msg.id,
                               info={**info, "format": Path(p).suffix[1:], "step": self.session.steps_done}))

    def _status(self, msg: Status) -> None:
        s = self.session
        self.send(State(job=self.job, mode=s.mode if s else None, step=s.steps_done if s else 0,
                        seconds=round(s.seconds, 3) if s else 0.0,
                        run_dir=self.root.shown(s.run_dir) if s else None, request=msg.id))

    def _shutdown(self, msg: Shutdown) -> None:
        if self.job == "training":
            self._finish(stopped=True, reason="shutdown")
        self._cancel_running_poses()
        raise _Exit

    # ---------------------------------------------------------------- files
    def _file_info(self, msg: FileInfo) -> None:
        self.send(transfer.file_state(self.root.inside(msg.path, "file_info.path"), msg.path, msg.id))

    def _put_file(self, msg: PutFile) -> None:
        path = self.root.inside(msg.path, "put_file.path")
        if transfer.put_chunk(path, msg.path, msg.offset, transfer.decode(msg.data, "put_file.data"),
                              msg.last, msg.sha256):
            self.send(transfer.file_state(path, msg.path, msg.id))

    def _get_file(self, msg: GetFile) -> None:
        for chunk in transfer.chunks(self.root.inside(msg.path, "get_file.path"), msg.path, msg.offset, msg.id):
            self.send(chunk)

    # ---------------------------------------------------------------- poses
    def _poses(self, msg: Poses) -> None:
        from ..poses import PosesSpec  # noqa: PLC0415 - pycolmap loads only for this job

        if self.job == "training":
            raise UserError("poses: a job is training; send stop first")
        spec = PosesSpec(input=self.root.inside(msg.input, "poses.input"),
                         output=self.root.inside(msg.out, "poses.out"), matching=msg.matching,
                         camera_model=msg.camera_model, per_image_cameras=not msg.single_camera,
                         sfm_long_side=msg.sfm_size, image_long_side=msg.image_size or 1600,
                         video_frames=msg.video_frames, overwrite=msg.overwrite)
        self.poses_request, self.job = msg, "posing"
        self._cancel_poses.clear()
        self._poses_worker = threading.Thread(target=self._run_poses, args=(spec, msg.id),
                                              name="poses", daemon=True)
        self._poses_worker.start()
        self.send(Log(level="info", message=f"finding camera poses of {msg.input} into {msg.out}"))

    def _run_poses(self, spec: Any, request: str | None) -> None:
        """Worker thread: the whole poses job; its end goes back through the queue."""
        from ..poses import find_poses  # noqa: PLC0415

        last = [0.0, ""]

        def progress(p: Any) -> None:
            now = time.monotonic()
            # Every stage change goes out; within a stage at most ~10 events per second.
            if p.stage != last[1] or now - last[0] >= PROGRESS_INTERVAL or p.done >= p.total:
                last[0], last[1] = now, p.stage
                self.send(PosesProgress(stage=p.stage, done=int(p.done), total=int(p.total),
                                        registered=int(p.registered), message=p.message,
                                        request=request))

        try:
            result = find_poses(spec, progress=progress, should_stop=self._cancel_poses.is_set)
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            self._queue.put(("poses_failed", e))
        else:
            self._queue.put(("poses_done", result))

    def _poses_ended(self, kind: str, payload: Any) -> None:
        req = self.poses_request
        rid = req.id if req is not None else None
        self._poses_worker = None
        if kind == "poses_done":
            self.job = "finished"
            r = payload
            summary = {"job": "poses", "stopped": False, "dataset": self.root.shown(r.dataset),
                       "n_images": r.n_images, "n_registered": r.n_registered,
                       "n_points": r.n_points, "reprojection_error": round(r.reprojection_error, 4),
                       "rejected": [list(x) for x in r.rejected[:20]],
                       "seconds": round(sum(r.timings.values()), 2)}
            self.send(Artifact(kind="dataset", path=summary["dataset"], info=summary, request=rid))
            self.send(Done(summary=summary, request=rid))
            return
        e = payload
        if self._cancel_poses.is_set():
            self.job = "stopped"
            self.send(Done(summary={"job": "poses", "stopped": True, "reason": "stop requested",
                                    "dataset": None}, request=rid))
        elif isinstance(e, (UserError, ConfigError)):
            self.job = "failed"
            self._fail(str(e), rid)
        else:
            self.job = "failed"
            self._fail(f"finding camera poses failed: {type(e).__name__}: {e}", rid, e)

    def _cancel_running_poses(self, timeout: float = 30.0) -> None:
        """Cancel a running poses job and wait (bounded) for its worker to clean up, so no
        temporary folder is left behind when the engine exits."""
        worker = self._poses_worker
        if worker is not None and worker.is_alive():
            self._cancel_poses.set()
            worker.join(timeout)

    # ---------------------------------------------------------------- training
    def _train_step(self) -> None:
        """Train until a request arrives or the budget is spent (the Session's one loop)."""
        s, req = self.session, self.train_request

        def on_step(p) -> None:
            self._progress = p
            now = time.monotonic()
            if now - self._last_progress >= PROGRESS_INTERVAL:
                self._send_progress()
                self._last_progress = now

        def on_checkpoint(path: Path) -> None:
            self.send(Artifact(kind="checkpoint", path=self.root.shown(path), info={"step": s.steps_done},
                               request=req.id))

        try:
            s.train(callback=on_step, should_stop=lambda: not self._queue.empty(),
                    checkpoint_every=req.checkpoint_every, on_checkpoint=on_checkpoint)
            if s.budget_done:
                self._finish(stopped=False)
        except Exception as e:  # noqa: BLE001 - the job fails, the server keeps serving
            self.job = "failed"
            lost = self._lost_process()
            self._stop_ranks()
            if lost:
                self._fail(f"training stopped at step {s.steps_done + 1}: {lost}{self._keep_steps()}", req.id, e)
            elif isinstance(e, (UserError, ConfigError)):
                self._fail(str(e), req.id)
            else:
                self._fail(f"training failed at step {s.steps_done}: {type(e).__name__}: {e}", req.id, e)

    def _send_progress(self) -> None:
        s, p = self.session, self._progress
        if p is None:
            return
        fields = p.fields()
        if fields.get("psnr") is not None and not math.isfinite(fields["psnr"]):
            fields["psnr"] = None
        self.send(Progress(mode=s.mode, fraction=s.fraction(), eta_seconds=s.eta_seconds(),
                           request=self.train_request.id, **fields))

    def _finish(self, stopped: bool, reason: str = "budget reached") -> None:
        """End the training job: checkpoint, metrics, last progress, `done`."""
        s, req = self.session, self.train_request
        self.job = "stopped" if stopped else "finished"
        self._stop_ranks(clean=True)       # the other processes (if any) end; rank 0 saves
        try:
            self._send_progress()
            ckpt = s.save_checkpoint()
            self.send(Artifact(kind="checkpoint", path=self.root.shown(ckpt), info={"step": s.steps_done},
                               request=req.id))
            metrics_path, summary = s.write_metrics()
            self.send(Artifact(kind="metrics", path=self.root.shown(metrics_path), request=req.id))
        except Exception as e:  # noqa: BLE001
            self.job = "failed"
            self._fail(f"saving the run failed: {type(e).__name__}: {e}", req.id, e)
            return
        self.send(Done(summary=self.root.shown_summary({**summary, "stopped": stopped, "reason": reason,
                                                        "checkpoint": str(ckpt)}), request=req.id))


class _EventLogHandler(logging.Handler):
    """Engine log records at INFO and above also go to the client as `log` events."""

    def __init__(self, server: Server) -> None:
        super().__init__(level=logging.INFO)
        self.server = server

    def emit(self, record: logging.LogRecord) -> None:
        level = record.levelname.lower()
        self.server.send(Log(level=level if level in ("debug", "info", "warning", "error") else "error",
                             message=self.format(record)))


def main(root: str | None = None) -> int:
    """Entry point of `python -m ngp_engine serve [--root DIR]`."""
    protocol_out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)               # fd 1 -> stderr: nothing but protocol lines on the real stdout
    sys.stdout = sys.stderr
    logging.basicConfig(level=logging.INFO, format="[engine] %(message)s", stream=sys.stderr)
    try:
        server = Server(sys.stdin.fileno(), protocol_out, root=root)
    except ImportError as e:
        msg = Error(message=f"the engine's Python {sys.executable} cannot import {e.name or 'torch'} "
                            f"({e}); install the engine requirements into that Python")
        protocol_out.write(msg.to_json().encode("utf-8") + b"\n")
        return EXIT_NO_TORCH
    logging.getLogger("ngp_engine").addHandler(_EventLogHandler(server))
    try:
        return server.run()
    except KeyboardInterrupt:
        return 130
