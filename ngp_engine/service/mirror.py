"""The client's side of a remote engine's files (see remote.py): a job's input goes up before
its request, what it writes comes down before its event is handed on, and every path in
between is turned from local to remote and back. Standard library only.

Threads: the client's stdout reader queues raw engine events into `raw`; one mirror thread
takes them in order, routes answers to transfers in progress, rewrites paths, downloads the
files of small artifacts (the events behind one wait, so nothing is handed on out of order)
and puts the result into the client's event queue. Uploads run in their own thread, so
`EngineClient.send(Train(...))` returns at once, and report `Transfer` events as they go.
"""
from __future__ import annotations

import base64
import collections
import dataclasses
import itertools
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable, ClassVar

from .protocol import (FILE_CHUNK_BYTES, Artifact, Done, Error, FileChunk, FileInfo, FileState, GetFile, Message,
                       PutFile, State, Stop, Train)
from .remote import FETCHED_KINDS, RemoteRuns
from .transfer import part_path, sha256_of

TRANSFER_INTERVAL = 0.1                   # seconds between Transfer events of one upload
_ids = itertools.count(1)


@dataclass(frozen=True)
class Transfer:
    """Client-side event: bytes of a job's files moved so far (`direction` "upload" or
    "download"), for the request `request`."""

    type: ClassVar[str] = "transfer"
    direction: str
    path: str
    done: int
    total: int
    request: str | None = None


def upload_cut_message(where: str) -> str:
    """The one line for a link that dropped while a job's input was going up."""
    return (f"lost the connection to {where} during the upload; nothing was trained "
            "(uploading again resumes where it stopped)")


class TransferError(RuntimeError):
    """A file could not be moved; one line naming it."""


class _Ended(Exception):
    """The engine's stream ended while a transfer waited for it."""


class Mirror:
    """Uploads, downloads and path mapping for one remote `EngineClient`."""

    def __init__(self, send: Callable[[Message], None], deliver: Callable[[Any], None], where: str) -> None:
        self._write, self._deliver, self.where = send, deliver, where
        self.runs = RemoteRuns()
        self.raw: queue.Queue[Any] = queue.Queue()
        self._waiters: dict[str, queue.Queue[Any]] = {}   # request id -> its transfer's answers
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self.uploading: str | None = None                 # id of the request whose input goes up
        self.upload_cut = False                           # the link dropped during the last upload
        self._ended: Any = None
        self.thread = threading.Thread(target=self._loop, name="engine-mirror", daemon=True)
        self.thread.start()

    # ---------------------------------------------------------------- requests going out
    def submit(self, msg: Message) -> bool:
        """Take over `msg` if it needs files moved first (True); the client sends it otherwise."""
        if isinstance(msg, Stop) and self.uploading is not None:
            self._cancel.set()                            # the upload ends, answering its request
            return True
        if not isinstance(msg, Train):
            return False
        base = self.runs.run_base(Path(msg.run_dir))
        self.runs.add(Path(msg.run_dir), base / "run")
        plan = [("data", Path(msg.data))] + ([("resume", Path(msg.resume))] if msg.resume else [])
        self._cancel.clear()
        self.upload_cut = False
        self.uploading = msg.id or ""
        threading.Thread(target=self._upload_then_send, args=(msg, base, plan), name="engine-upload",
                         daemon=True).start()
        return True

    def _upload_then_send(self, msg: Train, base: PurePosixPath, plan: list[tuple[str, Path]]) -> None:
        try:
            fields = {"run_dir": str(self.runs.remote_of(msg.run_dir))}
            for name, local in plan:
                remote = self.runs.remote_of(local)
                if remote is None or name == "data":      # inputs always go up (unchanged files are skipped)
                    if not local.exists():
                        raise TransferError(f"train.{name}: {local} does not exist")
                    remote = remote if remote is not None else base / "input" / local.name
                    self.runs.add(local, remote)
                    self.upload(local, remote, msg.id)
                fields[name] = str(remote)
            if self._cancel.is_set():
                raise _Cancelled
            self.uploading = None
            self._send(dataclasses.replace(msg, **fields))
        except _Cancelled:
            self._deliver(Done(summary={"stopped": True, "reason": "upload cancelled", "steps": 0},
                               request=msg.id))
        except (TransferError, OSError, _Ended) as e:
            if isinstance(e, _Ended):
                self.upload_cut = True            # the client's exit line says so too
                message = upload_cut_message(self.where)
            else:
                message = f"{e}; nothing was trained (uploading again resumes where it stopped)"
            self._deliver(Error(message=message, request=msg.id))
        finally:
            self.uploading = None

    def upload(self, local: Path, remote: PurePosixPath, request: str | None) -> None:
        """Send a file or a folder's files (hidden ones left out) unless the remote copy is
        already the same; a partial remote copy is continued. Blocks until done."""
        files = [local] if local.is_file() else sorted(
            p for p in local.rglob("*") if p.is_file() and not any(part.startswith(".") for part in
                                                                   p.relative_to(local).parts))
        total, done, last_report = sum(p.stat().st_size for p in files), 0, 0.0
        for path in files:
            target = remote if path == local else remote.joinpath(*path.relative_to(local).parts)
            size = path.stat().st_size
            state = self._ask(FileInfo(path=str(target), id=self._new_id()))
            digest = sha256_of(path)
            if state.exists and state.size == size and state.sha256 == digest:
                done += size
                continue
            offset = state.part_size if (0 < state.part_size <= size
                                         and sha256_of(path, state.part_size) == state.part_sha256) else 0
            done += offset
            rid = self._new_id()
            with self._waiting(rid) as answers, open(path, "rb") as f:
                f.seek(offset)
                while True:
                    if self._cancel.is_set():
                        raise _Cancelled
                    raw = f.read(FILE_CHUNK_BYTES)
                    last = offset + len(raw) >= size
                    self._send(PutFile(path=str(target), offset=offset, data=base64.b64encode(raw).decode("ascii"),
                                       last=last, sha256=digest if last else None, id=rid))
                    offset += len(raw)
                    done += len(raw)
                    if time.monotonic() - last_report >= TRANSFER_INTERVAL or last:
                        last_report = time.monotonic()
                        self._deliver(Transfer("upload", str(path), done, total, request))
                    self._check_no_error(answers)
                    if last:
                        break
                answer = self._next(answers)
                if isinstance(answer, Error):
                    raise TransferError(answer.message)
        self._deliver(Transfer("upload", str(local), total, total, request))

    # ---------------------------------------------------------------- files coming back
    def fetch(self, local: Path, remote: str | None = None) -> Path:
        """Download the remote file that `local` mirrors (resuming a partial download);
        TransferError when it cannot. Blocks; not from the mirror thread."""
        remote = remote or (str(self.runs.remote_of(local)) if self.runs.remote_of(local) else None)
        if remote is None:
            raise TransferError(f"{local} is not a file of a remote run")
        rid = self._new_id()
        with self._waiting(rid) as answers:
            return self._receive(remote, Path(local), rid, lambda: self._next(answers), resume=True)

    def _receive(self, remote: str, local: Path, rid: str, next_event: Callable[[], Any], resume: bool) -> Path:
        """Ask for `remote` and write it to `local` (via a part file renamed when complete
        and checked)."""
        local.parent.mkdir(parents=True, exist_ok=True)
        part = part_path(local)
        offset = part.stat().st_size if resume and part.is_file() else 0
        if not offset:
            part.unlink(missing_ok=True)
        self._send(GetFile(path=remote, offset=offset, id=rid))
        with open(part, "ab") as f:
            while True:
                ev = next_event()
                if isinstance(ev, Error):
                    part.unlink(missing_ok=True)
                    raise TransferError(ev.message)
                if not isinstance(ev, FileChunk):
                    continue
                f.write(base64.b64decode(ev.data))
                if ev.last:
                    break
        if sha256_of(part) != ev.sha256:
            part.unlink(missing_ok=True)
            raise TransferError(f"{remote} arrived with another checksum; fetch it again")
        os.replace(part, local)
        return local

    # ---------------------------------------------------------------- the event loop
    def _loop(self) -> None:
        pending: collections.deque[Any] = collections.deque()
        while True:
            ev = pending.popleft() if pending else self.raw.get()
            if self._route(ev):
                continue
            if ev.type == "exited":
                self._deliver(ev)
                return
            self._deliver(self._localise(ev, pending))

    def _route(self, ev: Any) -> bool:
        """Hand an answer to the transfer waiting on it; the end of the stream to all."""
        if ev.type == "exited":
            self._ended = ev
            with self._lock:
                for box in self._waiters.values():
                    box.put(ev)
            return False
        rid = getattr(ev, "request", None)
        with self._lock:
            box = self._waiters.get(rid) if rid else None
        if box is None:
            return False
        box.put(ev)
        return True

    def _localise(self, ev: Any, pending: collections.deque[Any]) -> Any:
        """`ev` with local paths, its files fetched first when it is a small artifact."""
        runs = self.runs
        if isinstance(ev, Artifact):
            local = runs.shown_locally(ev.path)
            info = {**ev.info, "remote": ev.path}
            if "png" in info:
                info["png"] = runs.shown_locally(info["png"])
            out = dataclasses.replace(ev, path=local, info=info)
            if ev.kind in FETCHED_KINDS and local != ev.path:
                try:
                    for remote, there in [(ev.path, local)] + ([(ev.info["png"], info["png"])] if "png" in ev.info else []):
                        self._fetch_inline(remote, Path(there), pending)
                except (TransferError, OSError, _Ended) as e:
                    why = f"lost the connection to {self.where}" if isinstance(e, _Ended) else str(e)
                    return Error(message=f"fetching {ev.path} from {self.where} failed: {why}", request=ev.request)
            return out
        if isinstance(ev, Done):
            return dataclasses.replace(ev, summary={k: runs.shown_locally(v) if isinstance(v, str) else v
                                                    for k, v in ev.summary.items()})
        if isinstance(ev, State) and ev.run_dir:
            return dataclasses.replace(ev, run_dir=runs.shown_locally(ev.run_dir))
        return ev

    def _fetch_inline(self, remote: str, local: Path, pending: collections.deque[Any]) -> None:
        """A download driven by the mirror thread itself: events that are not its answers
        wait in `pending`, in order."""
        rid = self._new_id()

        def next_event() -> Any:
            while True:
                ev = self.raw.get()
                if ev.type == "exited":
                    pending.append(ev)
                    raise _Ended
                if getattr(ev, "request", None) == rid:
                    return ev
                if not self._route(ev):
                    pending.append(ev)

        self._receive(remote, local, rid, next_event, resume=False)

    # ---------------------------------------------------------------- helpers
    def _send(self, msg: Message) -> None:
        """The client's send; a closed channel is the end of the stream here."""
        try:
            self._write(msg)
        except Exception:  # noqa: BLE001 - the client's EngineError: the engine is gone
            raise _Ended from None

    @staticmethod
    def _new_id() -> str:
        return f"_file-{next(_ids)}"

    class _Box:
        def __init__(self, mirror: "Mirror", rid: str) -> None:
            self.mirror, self.rid = mirror, rid

        def __enter__(self) -> queue.Queue[Any]:
            box: queue.Queue[Any] = queue.Queue()
            with self.mirror._lock:
                self.mirror._waiters[self.rid] = box
            if self.mirror._ended is not None:
                box.put(self.mirror._ended)
            return box

        def __exit__(self, *exc: Any) -> None:
            with self.mirror._lock:
                self.mirror._waiters.pop(self.rid, None)

    def _waiting(self, rid: str) -> "Mirror._Box":
        return Mirror._Box(self, rid)

    def _ask(self, msg: FileInfo) -> FileState:
        with self._waiting(msg.id) as answers:
            self._send(msg)
            ev = self._next(answers)
        if isinstance(ev, Error):
            raise TransferError(ev.message)
        return ev

    @staticmethod
    def _next(answers: queue.Queue[Any]) -> Any:
        ev = answers.get()
        if ev.type == "exited":
            raise _Ended
        return ev

    @staticmethod
    def _check_no_error(answers: queue.Queue[Any]) -> None:
        """An error or the end of the stream during a pipelined upload stops it early."""
        try:
            ev = answers.get_nowait()
        except queue.Empty:
            return
        if ev.type == "exited":
            raise _Ended
        if isinstance(ev, Error):
            raise TransferError(ev.message)
        answers.put(ev)


class _Cancelled(Exception):
    """Stop arrived while a job's input was going up."""
