"""The engine on another machine: where it is (`EngineLocation`), and the client's side of
running it there (`RemoteRuns`): which local folder is which remote one, uploads before a
job, downloads of what the job writes. Standard library only (the add-on runs it in Blender).

The engine runs as `ssh [options] [user@]host -- PYTHON -m ngp_engine serve --root ROOT`:
the system's OpenSSH client, the user's own keys, agent and `~/.ssh/config` (BatchMode: ssh
never prompts, so a missing key is an error, not a hung Blender). The JSON-lines protocol
runs over the ssh channel unchanged; files travel in it as checksummed, resumable chunks
(protocol.py says why), and the engine confines every path to ROOT (run_root.py).

Local paths never cross: a job's local run folder maps to `runs/<name>-<key>/run` under the
remote root (the key hashes this machine's name and the local path, so the same local run
maps to the same remote folder after a reconnect, and can be resumed or fetched from there),
its input to `runs/<name>-<key>/input/<name>`. Events coming back name remote paths; the
client turns them into the local paths they mirror, and fetches small results (meshes,
passes, metrics, config) before it hands their event on, so the add-on reads local files
whichever machine trained. Checkpoints stay remote until asked for (`EngineClient.fetch`).
"""
from __future__ import annotations

import hashlib
import re
import shlex
import socket
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

DEFAULT_ROOT = "~/ngp_runs"
FETCHED_KINDS = ("mesh", "pass", "metrics", "config")     # artifacts downloaded as they come
_URL = re.compile(r"^(?:ssh://)?(?:(?P<user>[^@/:\s]+)@)?(?P<host>[A-Za-z0-9_.\-]+|\[[0-9A-Fa-f:]+\])"
                  r"(?::(?P<port>\d{1,5}))?/?$")


class LocationError(ValueError):
    """An engine location that cannot be used; one line naming it."""


@dataclass(frozen=True)
class EngineLocation:
    """Where the engine runs: `host` "" is this machine (a child process); otherwise an SSH
    host (a name from ~/.ssh/config works), with the remote engine's `python` and `root`."""

    host: str = ""
    user: str = ""
    port: int | None = None
    python: str = "python3"
    root: str = DEFAULT_ROOT
    ssh_config: str = ""              # an ssh_config file to use instead of ~/.ssh/config
    ssh: str = "ssh"                  # the OpenSSH client

    @classmethod
    def parse(cls, url: str, python: str = "python3", root: str = DEFAULT_ROOT,
              ssh_config: str = "", ssh: str = "ssh") -> "EngineLocation":
        """"" or "local": this machine; "ssh://[user@]host[:port]" (or without the scheme)."""
        url = url.strip()
        if url in ("", "local"):
            return cls()
        m = _URL.match(url)
        if m is None or (m["port"] is not None and not 1 <= int(m["port"]) <= 65535):
            raise LocationError(f"engine location {url!r} is not ssh://[user@]host[:port]")
        if not python.strip():
            raise LocationError(f"engine location {url}: the remote engine Python is not set")
        return cls(host=m["host"].strip("[]"), user=m["user"] or "", port=int(m["port"]) if m["port"] else None,
                   python=python.strip(), root=root.strip() or DEFAULT_ROOT, ssh_config=ssh_config.strip(),
                   ssh=ssh)

    @property
    def remote(self) -> bool:
        return bool(self.host)

    def describe(self) -> str:
        """"user@host:port", as the user wrote it (for messages)."""
        return (f"{self.user}@" if self.user else "") + self.host + (f":{self.port}" if self.port else "")

    def command(self) -> list[str]:
        """The ssh command line that runs the engine's service there."""
        cmd = [self.ssh, "-T", "-o", "BatchMode=yes", "-o", "ConnectTimeout=20",
               # A dead link (laptop asleep, Wi-Fi gone) is noticed in ~15 s on both ends.
               "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3"]
        if self.ssh_config:
            cmd += ["-F", self.ssh_config]
        if self.port:
            cmd += ["-p", str(self.port)]
        target = (f"{self.user}@" if self.user else "") + self.host
        remote = f"exec {shlex.quote(self.python)} -m ngp_engine serve --root {shlex.quote(self.root)}"
        return [*cmd, target, remote]

    def exit_message(self, rc: int | None, stderr: list[str], was_ready: bool) -> str | None:
        """One line for an ssh session that ended, from ssh's exit code and last words; None
        when it is the engine's own exit (the local wording applies)."""
        where = self.describe()
        text = " ".join(line.strip() for line in stderr if line.strip())
        last = next((line.strip() for line in reversed(stderr) if line.strip()), "")
        if was_ready and (rc is None or rc < 0 or rc == 255):
            return (f"lost the connection to {where}" + (f" ({last})" if last and rc == 255 else "")
                    + "; the remote job saved its checkpoint: connect again to resume it or fetch its results")
        if rc == 255 or (rc is not None and rc < 0 and not was_ready):
            if "Permission denied" in text:
                return (f"{where} refused the login ({last}): add your public key to the remote "
                        "~/.ssh/authorized_keys or name the key in ~/.ssh/config (no passwords are asked)")
            if "Host key verification failed" in text:
                return (f"{where}: its host key is not known here (Host key verification failed); "
                        f"run `ssh {where}` in a terminal once to check and accept it")
            return f"cannot reach {where}" + (f": {last}" if last else "")
        if not was_ready and rc == 127:
            return f"{where}: the remote engine Python {self.python!r} was not found ({last})"
        if not was_ready and "No module named ngp_engine" in text:
            return (f"{where}: the remote Python {self.python} has no engine (No module named ngp_engine); "
                    "install it there (scripts/setup.sh in a copy of the engine) and name that Python")
        return None


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]+", "_", name).strip("._") or "run"


class RemoteRuns:
    """Which local path is which remote path, for the jobs of one client."""

    def __init__(self) -> None:
        self.pairs: list[tuple[Path, PurePosixPath]] = []    # (local, remote relative to the root)

    @staticmethod
    def run_base(local_run_dir: Path) -> PurePosixPath:
        """The remote folder of a local run folder: same local run, same remote folder."""
        local = Path(local_run_dir).resolve()
        key = hashlib.sha1(f"{socket.gethostname()}:{local}".encode()).hexdigest()[:12]
        name = local.parent.name if local.name == "run" else local.name
        return PurePosixPath("runs") / f"{_safe(name)}-{key}"

    def add(self, local: Path, remote: PurePosixPath) -> None:
        local = Path(local).resolve()
        self.pairs = [(lp, rp) for lp, rp in self.pairs if lp != local]
        self.pairs.append((local, remote))

    def remote_of(self, local: str | Path) -> PurePosixPath | None:
        """The remote path that mirrors `local`, if it lies in a mapped folder."""
        p = Path(local).resolve()
        for lp, rp in sorted(self.pairs, key=lambda pair: -len(pair[0].parts)):
            if p == lp or p.is_relative_to(lp):
                return rp.joinpath(*p.relative_to(lp).parts)
        return None

    def local_of(self, remote: str) -> Path | None:
        """The local path that mirrors the engine's `remote` (relative to its root)."""
        r = PurePosixPath(remote)
        for lp, rp in sorted(self.pairs, key=lambda pair: -len(pair[1].parts)):
            if r == rp or r.is_relative_to(rp):
                return lp.joinpath(*r.relative_to(rp).parts)
        return None

    def shown_locally(self, value: Any) -> Any:
        """`value` (a remote path string) as its local mirror; unchanged when not mapped."""
        if isinstance(value, str) and value:
            local = self.local_of(value)
            return str(local) if local is not None else value
        return value
