"""Start and drive an engine process (`python -m ngp_engine serve`) from any Python, Blender's
included: standard library only, never imports torch.

    client = EngineClient(python="/path/to/engine/python")
    ready = client.start()                       # EngineError with a clear message on failure
    client.send(Train(mode="nerf", data=..., run_dir=..., seconds=60))
    for event in client.poll():                  # non-blocking; e.g. from bpy.app.timers
        ...
    client.close()                               # shutdown, then kill if it does not exit

A thread reads the engine's stdout into a queue (events) and another keeps the tail of its
stderr (for messages about a crash). When the process ends for any reason, an `EngineExited`
pseudo-event closes the stream, with a message that says why (killed by a signal, crashed
with the last error line, torch missing, ...).

With a remote `location` (remote.py) the process is `ssh ... serve --root ...`, and a
`Mirror` (mirror.py) moves files: the input of a `train` goes up first (`Transfer` events),
the files of small artifacts come down before their event, and events name local paths.
"""
from __future__ import annotations

import collections
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

from .. import __version__
from .mirror import Mirror
from .protocol import PROTOCOL_VERSION, Error, Hello, Log, Message, ProtocolError, Ready, Shutdown, parse_event
from .remote import EngineLocation

ENGINE_ROOT = Path(__file__).resolve().parents[2]   # the folder that holds the ngp_engine package
STDERR_LINES_KEPT = 40


class EngineError(RuntimeError):
    """The engine could not be started or is gone; the message says why in one line."""


@dataclass(frozen=True)
class EngineExited:
    """Client-side event, last in the stream: the engine process has ended."""

    type: ClassVar[str] = "exited"
    returncode: int | None
    message: str


class EngineClient:
    """One engine process and its event stream."""

    def __init__(self, python: str | None = None, python_args: Sequence[str] = (),
                 env: dict[str, str] | None = None, engine_root: str | Path | None = None,
                 on_stderr: Callable[[str], None] | None = None,
                 location: EngineLocation | None = None) -> None:
        self.location = location or EngineLocation()
        self.python = self.location.python if self.location.remote else (python or sys.executable)
        self.python_args = list(python_args)
        self.engine_root = Path(engine_root) if engine_root else ENGINE_ROOT
        self.env = env
        self.on_stderr = on_stderr
        self.proc: subprocess.Popen | None = None
        self.events: queue.Queue[Message | EngineExited] = queue.Queue()
        self.received: list[Message | EngineExited] = []   # every event handed out so far
        self.ready: Ready | None = None
        self.exited: EngineExited | None = None
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_LINES_KEPT)
        self._last_error: str | None = None
        self._write_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.mirror: Mirror | None = None

    # ---------------------------------------------------------------- process
    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 120.0) -> Ready:
        """Spawn the engine, say hello and wait for `ready` (EngineError otherwise)."""
        env = dict(os.environ if self.env is None else self.env)
        remote = self.location.remote
        if remote:
            cmd, cwd = self.location.command(), None
            self.mirror = Mirror(self._send_now, self.events.put, self.location.describe())
        else:
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(self.engine_root), env.get("PYTHONPATH")) if p)
            cmd, cwd = [self.python, *self.python_args, "-m", "ngp_engine", "serve"], str(self.engine_root)
        try:
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                cwd=cwd, creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0))
        except FileNotFoundError:
            if remote:
                raise EngineError(f"the SSH client {self.location.ssh!r} is not installed here "
                                  "(OpenSSH: it ships with macOS, Windows 10+ and Linux)") from None
            raise EngineError(f"engine Python {self.python!r} not found; set the path to a Python "
                              "with the engine's requirements") from None
        except PermissionError:
            raise EngineError(f"engine Python {self.python!r} is not executable") from None
        except OSError as e:
            raise EngineError(f"engine Python {self.python!r} could not be started ({e.strerror or e})") from None
        self._stderr_thread = threading.Thread(target=self._read_stderr, name="engine-stderr", daemon=True)
        self._stderr_thread.start()
        stdout_thread = threading.Thread(target=self._read_stdout, name="engine-stdout", daemon=True)
        stdout_thread.start()
        self._threads = [stdout_thread, self._stderr_thread] + ([self.mirror.thread] if self.mirror else [])
        self.send(Hello(protocol=PROTOCOL_VERSION, client=f"ngp_engine.client (python {sys.version.split()[0]})"))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            ev = self.next_event(timeout=max(left, 0.0)) if left > 0 else None
            if ev is None:
                self.kill()
                raise EngineError(f"engine did not answer hello within {timeout:g} s")
            if isinstance(ev, Ready):
                if remote and ev.engine_version != __version__:
                    self.close(timeout=5.0)
                    raise EngineError(f"{self.location.describe()}: the remote engine is version {ev.engine_version} "
                                      f"but this one is {__version__}: update the engine there (or here)")
                self.ready = ev
                return ev
            if isinstance(ev, Error):
                self.close(timeout=2.0)
                raise EngineError(ev.message)
            if isinstance(ev, EngineExited):
                raise EngineError(ev.message)

    def send(self, msg: Message) -> None:
        """Write one request line (EngineError when the engine is gone). For a remote engine a
        `train` first uploads its input in the background (answered by `transfer` events, then
        as usual; an upload that fails answers with an `error`)."""
        if self.proc is None or self.proc.stdin is None:
            raise EngineError("engine is not started")
        if self.mirror is not None and self.ready is not None and self.mirror.submit(msg):
            if not self.alive:
                raise EngineError(self._exit_message(self._wait_returncode(2.0)))
            return
        self._send_now(msg)

    def _send_now(self, msg: Message) -> None:
        self.send_raw(msg.to_json().encode("utf-8") + b"\n")

    def fetch(self, local: str | Path) -> Path:
        """Download the remote file that the local path `local` mirrors (a checkpoint, say);
        for a local engine the file is already there. EngineError when it cannot."""
        if self.mirror is None:
            return Path(local)
        from .mirror import TransferError  # noqa: PLC0415

        try:
            return self.mirror.fetch(Path(local))
        except TransferError as e:
            raise EngineError(str(e)) from None
        except Exception as e:  # noqa: BLE001 - _Ended: the stream is gone
            raise EngineError(self.exited.message if self.exited else f"fetching {local} failed ({e})") from None

    def send_raw(self, data: bytes) -> None:
        """Write bytes as they are (for tests of the engine's input handling)."""
        try:
            with self._write_lock:
                self.proc.stdin.write(data)
                self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            raise EngineError(self._exit_message(self._wait_returncode(2.0))) from None

    def close_stdin(self) -> None:
        """Close the engine's input: it stops its job (with a checkpoint) and exits."""
        with self._write_lock:
            try:
                self.proc.stdin.close()
            except OSError:
                pass

    def close(self, timeout: float = 10.0) -> int | None:
        """Ask the engine to shut down, wait up to `timeout` s, kill it if it lingers."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                self.send(Shutdown())
            except EngineError:
                pass
            self.close_stdin()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        for t in self._threads:
            t.join(timeout=2.0)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> "EngineClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---------------------------------------------------------------- events
    def poll(self) -> list[Message | EngineExited]:
        """Every event that has arrived, without waiting."""
        out = []
        while True:
            try:
                out.append(self.events.get_nowait())
            except queue.Empty:
                break
        self.received += out
        return out

    def next_event(self, timeout: float | None = None) -> Message | EngineExited | None:
        """The next event, waiting up to `timeout` s (None: no limit); None on timeout."""
        try:
            ev = self.events.get(timeout=timeout)
        except queue.Empty:
            return None
        self.received.append(ev)
        return ev

    def wait_for(self, kind: str | Callable[[Any], bool], timeout: float = 60.0) -> Any:
        """The next event of type `kind` (or matching a predicate). Earlier events stay in
        `received`. EngineError when the engine exits first or on timeout."""
        match = kind if callable(kind) else (lambda ev: ev.type == kind)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            ev = self.next_event(timeout=left) if left > 0 else None
            if ev is None:
                raise EngineError(f"no {kind if isinstance(kind, str) else 'matching'} event within {timeout:g} s")
            if match(ev):
                return ev
            if isinstance(ev, EngineExited):
                raise EngineError(ev.message)

    # ---------------------------------------------------------------- reader threads
    def _read_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                ev = parse_event(raw)
            except ProtocolError as e:
                ev = Log(level="warning", message=f"unreadable engine line ({e}): {raw[:200]!r}")
            if isinstance(ev, Error):
                self._last_error = ev.message
            (self.mirror.raw if self.mirror is not None else self.events).put(ev)
        rc = self._wait_returncode(5.0)
        self._stderr_thread.join(timeout=2.0)   # its last lines may explain the exit
        self.exited = EngineExited(returncode=rc, message=self._exit_message(rc))
        (self.mirror.raw if self.mirror is not None else self.events).put(self.exited)

    def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            self._stderr_tail.append(line)
            if self.on_stderr is not None:
                self.on_stderr(line)

    def _wait_returncode(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def _exit_message(self, rc: int | None) -> str:
        """One line saying why the engine is gone."""
        if self.location.remote:
            m = self.mirror
            if self.ready is not None and m is not None and (m.uploading is not None or m.upload_cut):
                from .mirror import upload_cut_message  # noqa: PLC0415

                return upload_cut_message(self.location.describe())   # no job exists remotely yet
            said = self.location.exit_message(rc, list(self._stderr_tail), self.ready is not None)
            if said is not None:
                return said
        if rc is None:
            return "engine closed its output but is still running"
        if rc < 0:
            try:
                name = signal.Signals(-rc).name
            except ValueError:
                name = f"signal {-rc}"
            return f"engine was killed ({name})"
        if rc == 0:
            return "engine exited"
        if self._last_error:
            return f"engine exited with code {rc}: {self._last_error}"
        last = next((line for line in reversed(self._stderr_tail) if line.strip()), "")
        return f"engine exited with code {rc}" + (f": {last}" if last else "")
