"""The engine on another machine over real SSH: Debian's OpenSSH server on a loopback port
(tests/ssh_server.py), the client's `ssh` binary and a key made for the test. The "remote"
engine is this checkout's Python, serving with its own run root: the job's input goes up,
its results come down, and no local path reaches the engine."""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from ngp_engine.mesh import read_mesh
from ngp_engine.service.client import EngineClient, EngineError
from ngp_engine.service.protocol import ExportMesh, FileInfo, GetFile, Preview, PutFile, Train
from ngp_engine.service.remote import EngineLocation, LocationError, RemoteRuns
from ssh_server import ssh_server
from test_server import test_camera

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the test SSH server is OpenSSH's sshd")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with ssh_server(tmp_path_factory.mktemp("sshd")) as srv:
        yield srv


def location(server, root: Path, **kw) -> EngineLocation:
    return EngineLocation.parse(kw.pop("url", "ssh://ngp-test"), python=kw.pop("python", sys.executable),
                                root=str(root), ssh_config=str(kw.pop("ssh_config", server.config)))


@contextlib.contextmanager
def connected(server, root: Path) -> Iterator[EngineClient]:
    """A started client of the engine behind `server`, serving from `root`; closed after."""
    client = EngineClient(location=location(server, root))
    client.start(timeout=120)
    try:
        yield client
    finally:
        client.close()


def drain(client: EngineClient, until, timeout: float = 180.0) -> list:
    """Events until one matches `until` (returned last); EngineError on exit or timeout."""
    got = []
    deadline = time.monotonic() + timeout
    while True:
        ev = client.next_event(timeout=max(0.0, deadline - time.monotonic()))
        assert ev is not None, f"timed out; last events {got[-3:]}"
        got.append(ev)
        if until(ev):
            return got
        if ev.type == "exited":
            raise EngineError(ev.message)


def test_location_parsing():
    loc = EngineLocation.parse("ssh://ana@gpu-box:2222", python="/opt/ngp/bin/python")
    assert (loc.user, loc.host, loc.port, loc.remote) == ("ana", "gpu-box", 2222, True)
    cmd = loc.command()
    assert cmd[0] == "ssh" and "BatchMode=yes" in cmd and cmd[cmd.index("-p") + 1] == "2222"
    assert cmd[-2] == "ana@gpu-box" and cmd[-1] == "exec /opt/ngp/bin/python -m ngp_engine serve --root '~/ngp_runs'"
    assert EngineLocation.parse("gpu-box").describe() == "gpu-box"
    assert not EngineLocation.parse("local").remote
    for bad in ("ssh://a@b:99999", "ssh://a b", "http://x/y"):
        with pytest.raises(LocationError, match="is not ssh://"):
            EngineLocation.parse(bad)


def test_run_folders_map_both_ways(tmp_path):
    runs = RemoteRuns()
    base = runs.run_base(tmp_path / "shot" / "run")
    assert base == runs.run_base(tmp_path / "shot" / "run")          # stable: a reconnect finds it
    assert base.parts[0] == "runs" and base.name.startswith("shot-")
    runs.add(tmp_path / "shot" / "run", base / "run")
    assert runs.remote_of(tmp_path / "shot" / "run" / "mesh.ply") == base / "run" / "mesh.ply"
    assert runs.local_of(str(base / "run" / "preview" / "rgb.npy")) == tmp_path / "shot" / "run" / "preview" / "rgb.npy"
    assert runs.remote_of(tmp_path / "elsewhere") is None and runs.local_of("runs/other/x") is None


@pytest.fixture(scope="module")
def remote_run(server, nerf_scene, tmp_path_factory):
    """Train, preview and mesh through SSH; then the connection is killed mid-training."""
    root, local = tmp_path_factory.mktemp("remote_root"), tmp_path_factory.mktemp("local")
    data = local / "data"
    shutil.copytree(nerf_scene, data)
    client = EngineClient(location=location(server, root))
    ready = client.start(timeout=120)
    client.send(Train(mode="nerf", data=str(data), run_dir=str(local / "run"), steps=60, id="t"))
    first = drain(client, lambda e: e.type in ("done", "error") and e.request == "t")
    client.send(Preview(camera=test_camera(nerf_scene), passes=["rgb", "opacity"], resolution=[32, 24], id="p"))
    previews = [client.wait_for(lambda e: e.type in ("artifact", "error") and e.request == "p", 120) for _ in range(2)]
    client.send(ExportMesh(resolution=48, id="m"))
    meshes = [client.wait_for(lambda e: e.type in ("artifact", "error") and e.request == "m", 120) for _ in range(2)]
    # A second job on the same local run: its unchanged input is not sent again.
    client.send(Train(mode="nerf", data=str(data), run_dir=str(local / "run"), seconds=600, checkpoint_every=1.0,
                      id="t2"))
    second = drain(client, lambda e: e.type == "checkpoint" or (e.type == "artifact" and e.kind == "checkpoint"
                                                                 and e.request == "t2"))
    os.kill(client.pid, signal.SIGKILL)             # the link drops: ssh dies mid-training
    dropped = drain(client, lambda e: e.type == "exited", timeout=60)
    client.close()
    return dict(root=root, local=local, data=data, ready=ready, first=first, previews=previews, meshes=meshes,
                second=second, dropped=dropped, server=server)


def test_train_preview_and_mesh_over_ssh(remote_run):
    local, root, first = remote_run["local"], remote_run["root"], remote_run["first"]
    done = first[-1]
    assert done.type == "done" and done.summary["steps"] == 60, done
    # What the add-on reads is local: the summary and every artifact name local files...
    assert done.summary["run_dir"] == str(local / "run")
    uploads = [e for e in first if e.type == "transfer"]
    assert uploads and uploads[-1].done == uploads[-1].total > 0
    assert uploads[-1].total == sum(p.stat().st_size for p in remote_run["data"].rglob("*") if p.is_file())
    for p in remote_run["previews"]:
        assert p.type == "artifact", p
        assert Path(p.path).is_file() and Path(p.info["png"]).is_file() and p.path.startswith(str(local))
    rgb = np.load(remote_run["previews"][0].path)
    assert rgb.shape == (24, 32, 3) and rgb.std() > 0.02
    ply = next(m for m in remote_run["meshes"] if m.path.endswith(".ply"))
    v, f = read_mesh(ply.path)[:2]
    assert len(f) > 100
    # ... which are copies of the remote run's, byte for byte, in the folder of this local run.
    remote_ply = root / ply.info["remote"]
    assert remote_ply.read_bytes() == Path(ply.path).read_bytes()
    assert remote_ply.parent.parent.parent.name == "runs" and not str(local) in ply.info["remote"]
    # The engine never saw a local path: its input was uploaded under its root.
    assert (root / Path(ply.info["remote"]).parent.parent / "input" / "data" / "transforms_train.json").is_file()


def test_unchanged_input_is_not_sent_again(remote_run):
    uploads = [e for e in remote_run["second"] if e.type == "transfer"]
    assert uploads and uploads[-1].done == uploads[-1].total
    assert len(uploads) == 1            # one final report: every file was skipped


def test_dropped_link_is_one_line_and_the_remote_job_keeps_its_checkpoint(remote_run, tmp_path):
    exited = remote_run["dropped"][-1]
    assert exited.message.startswith("lost the connection to ngp-test"), exited.message
    assert "\n" not in exited.message
    # The remote engine saw its input close, stopped the job and saved it.
    ckpt = next(remote_run["root"].glob("runs/*/run/checkpoint.pt"))
    metrics = ckpt.parent / "metrics.json"
    deadline = time.monotonic() + 60
    while not (metrics.is_file() and metrics.stat().st_mtime >= ckpt.stat().st_mtime - 1.0):
        assert time.monotonic() < deadline, "the remote job did not finish after the link dropped"
        time.sleep(0.2)
    import json

    stopped_at = json.loads(metrics.read_text())["steps"]
    assert stopped_at >= 1                     # a checkpoint was written before the kill
    # Reconnecting resumes it from that checkpoint, and its results can be fetched.
    local = remote_run["local"]
    with connected(remote_run["server"], remote_run["root"]) as client:
        client.send(Train(mode="nerf", data=str(remote_run["data"]), run_dir=str(local / "run"),
                          resume=str(local / "run" / "checkpoint.pt"), steps=5, id="r"))
        done = drain(client, lambda e: e.type in ("done", "error") and e.request == "r")[-1]
        assert done.type == "done", done
        assert done.summary["steps"] == stopped_at + 5       # on from where the dropped job got to
        fetched = client.fetch(local / "run" / "checkpoint.pt")
        assert fetched.read_bytes() == ckpt.read_bytes()


def test_paths_outside_the_run_root_are_refused(server, tmp_path):
    with connected(server, tmp_path / "root") as client:
        for i, (msg, field) in enumerate([(FileInfo(path="../secret"), "file_info.path"),
                                          (GetFile(path="/etc/passwd"), "get_file.path"),
                                          (PutFile(path="a/../../x", offset=0, data="", last=False), "put_file.path")]):
            client._send_now(type(msg)(**{**msg.__dict__, "id": f"x{i}"}))
            err = client.wait_for(lambda e: e.type == "error" and e.request == f"x{i}", 30)
            assert err.message.startswith(f"{field}: ") and ("outside the run folder" in err.message
                                                              or "absolute path" in err.message), err.message
        (tmp_path / "outside").mkdir()
        os.symlink(tmp_path / "outside", tmp_path / "root" / "link")
        client._send_now(PutFile(path="link/x", offset=0, data="", last=False, id="sym"))
        err = client.wait_for(lambda e: e.type == "error" and e.request == "sym", 30)
        assert "outside the run folder" in err.message
        assert not (tmp_path / "outside" / "x").exists() and not list((tmp_path / "outside").iterdir())


def test_an_upload_with_a_wrong_checksum_leaves_nothing(server, tmp_path):
    import base64

    with connected(server, tmp_path / "root") as client:
        data = base64.b64encode(b"hello").decode()
        client._send_now(PutFile(path="in/f.txt", offset=0, data=data, last=True, sha256="0" * 64, id="c"))
        err = client.wait_for(lambda e: e.type == "error" and e.request == "c", 30)
        assert "in/f.txt arrived with checksum" in err.message
        assert not list((tmp_path / "root" / "in").iterdir())          # no file, no part file


@pytest.mark.parametrize("case", ["unreachable", "wrong key", "no engine", "no python", "other version"])
def test_bad_remote_is_one_line(server, tmp_path, case):
    cfg = server.config
    kw = {}
    if case == "unreachable":
        kw["url"] = f"ssh://{server.user}@127.0.0.1:{_closed_port()}"
        expect = f"cannot reach {server.user}@127.0.0.1:"
    elif case == "wrong key":
        import subprocess

        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
        cfg = tmp_path / "ssh_config"
        cfg.write_text(server.config.read_text().replace(str(server.folder / "user_key"), str(tmp_path / "other")))
        expect = "ngp-test refused the login"
    elif case == "no engine":
        bare = tmp_path / "python"                      # a Python without site-packages: no engine
        bare.write_text(f"#!/bin/sh\ncd {tmp_path} && exec {sys.executable} -S \"$@\"\n")
        bare.chmod(0o755)
        kw["python"] = str(bare)
        expect = "ngp-test: the remote Python"
    elif case == "no python":
        kw["python"] = "/no/such/python"
        expect = "ngp-test: the remote engine Python '/no/such/python' was not found"
    else:
        fake = tmp_path / "fake_engine"
        (fake / "ngp_engine").mkdir(parents=True)
        (fake / "ngp_engine" / "__init__.py").write_text("")
        (fake / "ngp_engine" / "__main__.py").write_text(
            "import json, sys\nsys.stdin.readline()\n"
            "print(json.dumps({'type': 'ready', 'engine_version': '0.0.1', 'protocol': 3, 'device': 'cpu',"
            " 'backends': ['torch'], 'modes': ['nerf'], 'pid': 1, 'python': 'x', 'torch': 'x'}), flush=True)\n"
            "sys.stdin.read()\n")
        wrapper = tmp_path / "python"
        wrapper.write_text(f"#!/bin/sh\ncd {fake} && exec {sys.executable} \"$@\"\n")
        wrapper.chmod(0o755)
        kw["python"] = str(wrapper)
        expect = "ngp-test: the remote engine is version 0.0.1 but this one is"
    client = EngineClient(location=location(server, tmp_path / "root", ssh_config=cfg, **kw))
    with pytest.raises(EngineError) as info:
        client.start(timeout=60)
    message = str(info.value)
    assert message.startswith(expect) and "\n" not in message, message
    assert not client.alive


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]



def test_an_interrupted_upload_resumes_where_it_stopped(server, tmp_path):
    import base64
    from pathlib import PurePosixPath

    from ngp_engine.service.protocol import FILE_CHUNK_BYTES

    blob = np.random.default_rng(0).bytes(2 * FILE_CHUNK_BYTES + 1000)
    (tmp_path / "big.bin").write_bytes(blob)
    with connected(server, tmp_path / "root") as client:
        # A first upload got one chunk across before its link dropped.
        client._send_now(PutFile(path="in/big.bin", offset=0, id="first",
                                 data=base64.b64encode(blob[:FILE_CHUNK_BYTES]).decode()))
        client.mirror.upload(tmp_path / "big.bin", PurePosixPath("in/big.bin"), "again")
        reports = [e for e in client.poll() if e.type == "transfer"]
    assert reports[0].done == 2 * FILE_CHUNK_BYTES          # the first chunk was not sent again
    assert reports[-1].done == reports[-1].total == len(blob)
    assert (tmp_path / "root" / "in" / "big.bin").read_bytes() == blob
    assert not (tmp_path / "root" / "in" / ".big.bin.part").exists()


def test_a_link_dropped_during_upload_is_one_line_and_leaves_no_result(server, nerf_scene, tmp_path):
    """ssh dies while the job's input is still going up: one line; on the remote only the
    hidden, resumable part of the file being sent (never a whole-looking file, no run
    folder); nothing in the local run folder."""
    data = tmp_path / "data"
    shutil.copytree(nerf_scene, data)
    blob = np.random.default_rng(1).bytes(48 << 20)          # many chunks: time to cut the link
    (data / "zz_extra.bin").write_bytes(blob)
    root = tmp_path / "root"
    client = EngineClient(location=location(server, root))
    client.start(timeout=120)
    try:
        client.send(Train(mode="nerf", data=str(data), run_dir=str(tmp_path / "run"), steps=5, id="t"))
        drain(client, lambda e: e.type == "transfer" and e.path.endswith("zz_extra.bin") and 0 < e.done < e.total
              or e.type in ("done", "error"))
        os.kill(client.pid, signal.SIGKILL)
        got = drain(client, lambda e: e.type in ("exited", "done"), timeout=60)
    finally:
        client.close()
    assert got[-1].type == "exited", got[-3:]
    said = "lost the connection to ngp-test during the upload; nothing was trained"
    assert got[-1].message.startswith(said) and "\n" not in got[-1].message
    # The upload's own answer may come before the exit or not at all; it says the same.
    assert all(e.message.startswith(said) for e in got if e.type == "error" and e.request == "t")
    sent = list(root.glob("runs/*/input/*/zz_extra.bin"))
    assert sent == [] or sent[0].read_bytes() == blob         # whole (checked) or not there at all
    assert list(root.glob("runs/*/input/*/.zz_extra.bin.part"))  # the part a retry resumes from
    assert not list(root.glob("runs/*/run"))                  # the job never started
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())
