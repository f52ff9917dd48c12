"""The other processes of a data-parallel job that the service trains (`train` with
`processes` > 1; `JobRanks` is what the server holds of a job's processes): the server is
rank 0 and starts ranks 1..N-1 as child processes
(`python -m ngp_engine.service.followers SPEC`), which open the same run and follow its
steps (tasks/base.follow_training) until the server ends the job.

The server's TCPStore is the rendezvous (a free loopback port, no torchrun needed). Each
follower announces itself in the store before joining, so the server can tell a follower
that died while starting (its last stderr line is the error) from a slow one instead of
waiting out the process group's timeout. The server kills every follower (whole process
group) whenever a job fails or is abandoned: no orphans.
"""
from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..distributed import SINGLE, Ranks, cpu_threads
from ..errors import UserError

JOIN_TIMEOUT = 300.0             # seconds for every follower to start (imports, data loading)


@dataclass(frozen=True)
class FollowerSpec:
    """What a follower needs to open the same run as the server (JSON on its command line)."""

    mode: str
    run_dir: str
    data: str | None
    config: dict[str, Any] | None
    preset: str | None
    resume: str | None
    steps: int | None
    seconds: float | None
    overrides: dict[str, Any]       # config fields the request changes (backend, mlp_precision)
    device: str                     # the job's device type: "cpu" or "cuda"
    gradient_sync: str
    store_port: int
    world: int
    threads: int                    # torch/numba threads of each process

    def to_json(self) -> str:
        return json.dumps(self.__dict__)


class Followers:
    """Ranks 1..world-1 of one job, started by the server (rank 0)."""

    def __init__(self, world: int, device: torch.device) -> None:
        import torch.distributed as dist  # noqa: PLC0415

        if world < 2:
            raise ValueError("a data-parallel job has at least 2 processes")
        if device.type == "cuda" and torch.cuda.device_count() < world:
            raise UserError(f"train.processes: {world} processes need {world} GPUs; torch sees "
                            f"{torch.cuda.device_count()}")
        if device.type not in ("cpu", "cuda"):
            raise UserError(f"train.processes: data-parallel training runs on CUDA GPUs or CPUs, "
                            f"not {device.type}")
        self.world, self.device = world, device
        self.store = dist.TCPStore("127.0.0.1", 0, world_size=world, is_master=True,
                                   wait_for_workers=False,
                                   timeout=datetime.timedelta(seconds=JOIN_TIMEOUT))
        self.procs: list[subprocess.Popen] = []
        self.logs: list[Path] = []
        self.threads = max(1, (os.cpu_count() or 1) // world) if device.type == "cpu" else 0

    def start(self, spec: dict[str, Any], gradient_sync: str) -> None:
        """Start ranks 1..world-1 on `spec` (the run's mode, paths, config, budget)."""
        fspec = FollowerSpec(**spec, device=self.device.type, gradient_sync=gradient_sync,
                             store_port=self.store.port, world=self.world, threads=self.threads)
        env = dict(os.environ)
        if self.threads:
            env.update(OMP_NUM_THREADS=str(self.threads))
        for rank in range(1, self.world):
            fd, name = tempfile.mkstemp(prefix=f"ngp-rank{rank}-", suffix=".log")
            os.close(fd)
            log = Path(name)
            self.logs.append(log)
            with open(log, "wb") as err:
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-m", "ngp_engine.service.followers", str(rank), fspec.to_json()],
                    stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=env,
                    start_new_session=True))          # its own process group: killed whole

    def wait_joined(self, timeout: float = JOIN_TIMEOUT) -> None:
        """Block until every follower announced itself (UserError if one died first)."""
        deadline = time.monotonic() + timeout
        keys = [f"joining/{r}" for r in range(1, self.world)]
        while not self.store.check(keys):
            self._check_alive("while starting")
            if time.monotonic() > deadline:
                raise UserError(f"train.processes: the other processes did not start within {timeout:.0f} s")
            time.sleep(0.05)

    def _check_alive(self, when: str) -> None:
        lost = self.lost(when)
        if lost:
            raise UserError(f"train.processes: {lost}")

    def lost(self, when: str = "", grace: float = 0.0) -> str:
        """'process R of N exited (status S): <its last line>' for the first follower that
        is gone (waiting up to `grace` seconds for one to end), "" while all run."""
        deadline = time.monotonic() + grace
        while True:
            for rank, (proc, log) in enumerate(zip(self.procs, self.logs), start=1):
                rc = proc.poll()
                if rc is not None:
                    words = f" {when}" if when else ""
                    how = f"killed by signal {-rc}" if rc < 0 else f"status {rc}"
                    last = _last_line(log)
                    return f"process {rank} of {self.world} exited{words} ({how})" + (f": {last}" if last else "")
            if time.monotonic() >= deadline:
                return ""
            time.sleep(0.05)

    def join(self) -> None:
        """After training ended well: the followers exit by themselves."""
        for proc in self.procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def kill(self) -> None:
        """End every follower (its whole process group) and remove their logs."""
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    proc.kill()
            proc.wait()
        for log in self.logs:
            log.unlink(missing_ok=True)
        self.procs, self.logs = [], []


class JobRanks:
    """The processes of one training job the service runs: this process alone, or rank 0
    of `processes` with the followers it started (and the CPU threads it gave up for them)."""

    def __init__(self, ranks: Ranks, followers: Followers | None = None, threads: int = 0) -> None:
        self.ranks, self.followers, self._threads = ranks, followers, threads

    @classmethod
    def start(cls, processes: int, gradient_sync: str, device: torch.device,
              run: dict[str, Any]) -> "JobRanks":
        """Start the followers of a `processes`-rank job on `run` (the Session's spec
        fields) and join them as rank 0; one process needs nothing started."""
        if processes == 1:
            return cls(SINGLE if device == SINGLE.device else Ranks(device=device))
        followers = Followers(processes, device)
        threads = cpu_threads()
        try:
            if followers.threads:      # the CPU's cores shared between the processes
                cpu_threads(followers.threads)
            followers.start(run, gradient_sync)
            followers.wait_joined()
            rank0 = torch.device("cuda", 0) if device.type == "cuda" else device
            ranks = Ranks.join(0, processes, rank0, store=followers.store, gradient_sync=gradient_sync)
        except BaseException:
            followers.kill()
            cpu_threads(threads)
            raise
        return cls(ranks, followers, threads)

    def stop(self, clean: bool = False) -> None:
        """End the job: the followers told to end (`clean`, after a good job) or killed, the
        process group left, this process's threads given back."""
        ranks, followers = self.ranks, self.followers
        if clean:
            try:
                ranks.end()
            except Exception:  # noqa: BLE001 - a process already gone: kill the rest
                clean = False
        if followers is not None and not clean:
            followers.kill()               # first: a stuck follower would hold the barrier
        ranks.close(wait_for_all=clean)
        if followers is not None:
            if clean:
                followers.join()
            cpu_threads(self._threads)

    def lost(self) -> str:
        """Which follower died, when one did ("" otherwise)."""
        return self.followers.lost(grace=1.0) if self.followers is not None else ""


def _last_line(log: Path) -> str:
    try:
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        lines = []
    return lines[-1].strip() if lines else ""


def follower_main(rank: int, spec_json: str) -> int:
    """A follower process: join the server's process group, open the run, follow it."""
    import torch.distributed as dist  # noqa: PLC0415

    from ..tasks.base import follow_training  # noqa: PLC0415
    from .session import RunSpec, Session  # noqa: PLC0415

    spec = FollowerSpec(**json.loads(spec_json))
    _exit_with_parent()
    if spec.threads:
        cpu_threads(spec.threads)
    device = torch.device("cuda", rank) if spec.device == "cuda" else torch.device(spec.device)
    store = dist.TCPStore("127.0.0.1", spec.store_port, world_size=spec.world, is_master=False,
                          timeout=datetime.timedelta(seconds=JOIN_TIMEOUT))
    store.set(f"joining/{rank}", "1")
    ranks = Ranks.join(rank, spec.world, device, store=store, gradient_sync=spec.gradient_sync)
    try:
        session = Session.open(RunSpec(
            mode=spec.mode, run_dir=Path(spec.run_dir), data=spec.data, config=spec.config,
            preset=spec.preset, resume=spec.resume, steps=spec.steps, seconds=spec.seconds,
            overrides=spec.overrides, device=device, ranks=ranks))
        follow_training(session.task)
    except BaseException:
        ranks.close(wait_for_all=False)     # rank 0 is in another collective: no barrier
        raise
    ranks.close()
    return 0


def _exit_with_parent(every: float = 1.0) -> None:
    """End this process when the server that started it is gone (killed, crashed): its own
    session keeps it out of the server's process group, so nothing else would."""
    import threading  # noqa: PLC0415

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every)
        os._exit(3)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


if __name__ == "__main__":
    try:
        sys.exit(follower_main(int(sys.argv[1]), sys.argv[2]))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
