"""Data-parallel training (ngp_engine/distributed.py) with real processes and gloo on the CPU.

- Two ranks under torchrun train like one process with the combined batch: the loss of every
  step and the parameters after a few steps agree up to the order of floating-point sums,
  for the NeRF step and for the plain supervised step (image); the two ways of summing the
  hash table ("dense" all-reduce, touched "rows") give the same bits.
- `torchrun ... -m ngp_engine nerf train`: rank 0 alone writes the run; a time budget ends
  both ranks together.
- The service's `train` with `processes` 2: previews between steps, the same model as one
  process; a rank killed mid-training is one line, the steps done are kept, no process is
  left behind.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ngp_engine.distributed import Ranks
from ngp_engine.errors import UserError
from ngp_engine.service.client import EngineClient
from ngp_engine.service.protocol import ProtocolError, Train, parse_request

from conftest import ROOT, run_cli

HELPER = str(ROOT / "tests" / "data_parallel_run.py")


def torchrun(*args: str, n: int = 2, timeout: float = 300) -> subprocess.CompletedProcess:
    """`torchrun --nproc-per-node n ARGS` (torch's own launcher, as a user runs it)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(n),
           "--master-port", str(_free_port()), *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_process(*args: str) -> subprocess.CompletedProcess:
    """The helper as one process, with one thread for torch and numba like each rank under
    torchrun: the comparison is of the ranks' gradient sum, not of thread counts (a
    two-thread CPU run is not bit-reproducible on a loaded machine: 1 in ~10 runs of 12 NeRF
    steps moved 2% of the table entries by more than 1e-3, through Adam's tiny eps)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, HELPER, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=env)


def field_state(run: Path, key: str = "model") -> dict[str, torch.Tensor]:
    ckpt = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)
    model = ckpt[key]
    return model["field"] if "field" in model else model


def assert_same_training(one: Path, two: Path) -> None:
    """Two runs of the same steps agree up to summation order: every parameter of the MLPs
    within 1e-3, and at most 0.1% of the hash-table entries off by more than 1e-3 (Adam's
    eps of 1e-15 turns an entry's tiny gradient into a full step of either sign, so a
    rounding difference there moves that entry by up to the learning rate)."""
    a, b = field_state(one), field_state(two)
    assert a.keys() == b.keys()
    for name in a:
        diff = (a[name] - b[name]).abs()
        if name.startswith("encoding"):
            assert (diff > 1e-3).float().mean().item() < 1e-3, name
            assert diff.median().item() < 1e-6, name
        else:
            assert diff.max().item() < 1e-3, name


# ----------------------------------------------------------------------------- unit level
def test_shares_cover_the_batch_once_and_weights_sum_to_one():
    for world in (1, 2, 3, 5):
        for n in (1, 7, 64, 1000):
            ranks = [Ranks(rank=r, world=world) for r in range(world)]
            covered = [i for r in ranks for i in range(n)[r.share(n)]]
            assert covered == list(range(n))
            assert abs(sum(r.weight(n) for r in ranks) - 1.0) < 1e-12
            sizes = [len(range(n)[r.share(n)]) for r in ranks]
            assert max(sizes) - min(sizes) <= 1


def test_one_process_reduces_nothing_and_reads_nothing():
    ranks = Ranks()
    figures = torch.tensor([1.5, 2.0])
    total, count = ranks.reduce_gradients([], figures, 7)
    assert total is figures and count == 7
    assert ranks.agree(True) and not ranks.agree(False)


CLOSE_IN_A_FRESH_PROCESS = """
import os, time, torch, torch.distributed as dist
from ngp_engine.distributed import PAUSE, Ranks

def threads():
    return [open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task")]

ranks = Ranks.join(0, 1, torch.device("cpu"), store=dist.HashStore())
assert ranks.commands is not None and ranks.commands is not ranks.group   # its own gloo group
for _ in range(200):                         # the groups' threads start asynchronously
    if "pt_gloo_runloop" in threads():
        break
    time.sleep(0.01)
assert "pt_gloo_runloop" in threads(), threads()
# As a task builds its optimiser after joining: torch.optim's first use imports
# torch._dynamo, which imports torch.distributed.nn (default arguments group=group.WORLD).
torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])
sent = []                                    # the go-ahead: a host tensor, commands group
broadcast = dist.broadcast
dist.broadcast = lambda t, src, group=None: sent.append((t.device.type, group)) or broadcast(t, src, group=group)
assert ranks.agree(True)                     # one rank: no broadcast
assert ranks.next_command() == PAUSE         # what a follower hears before each step
dist.broadcast = broadcast
assert sent == [("cpu", ranks.commands)], sent
sent.clear()                                 # a reference to a group keeps its threads
ranks.close()
assert ranks.group is None and ranks.commands is None and not dist.is_initialized()
print(sorted(n for n in threads() if "gloo" in n))
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux's /proc to list threads")
def test_closing_joins_the_groups_worker_threads():
    """close() frees the process group there and then: its gloo threads are joined. Left to
    the interpreter's exit, a worker still freeing the last collective's tensors needed the
    GIL then and aborted the process (a rank's SIGABRT after a clean job, 1 run in ~10 on a
    loaded machine). In a fresh process, as the import order matters."""
    proc = subprocess.run([sys.executable, "-c", CLOSE_IN_A_FRESH_PROCESS], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout


def test_bad_gradient_sync_and_processes_are_one_line_errors():
    with pytest.raises(UserError, match="gradient_sync: 'sparse' is not one of dense, rows"):
        Ranks(gradient_sync="sparse")
    for bad in (0, 65):
        with pytest.raises(ProtocolError, match="processes"):
            parse_request(json.dumps({"type": "train", "mode": "nerf", "data": "/d", "run_dir": "/r",
                                      "processes": bad}))
    with pytest.raises(ProtocolError, match="gradient_sync"):
        parse_request(json.dumps({"type": "train", "mode": "nerf", "data": "/d", "run_dir": "/r",
                                  "gradient_sync": "sparse"}))


# ----------------------------------------------------------------------------- two ranks
@pytest.fixture(scope="module")
def nerf_runs(nerf_scene, tmp_path_factory):
    """12 NeRF steps as one process, and as two ranks with each table sum."""
    root = tmp_path_factory.mktemp("dp_nerf")
    one = one_process("nerf", str(nerf_scene), str(root / "one"), "12")
    assert one.returncode == 0, one.stderr[-3000:]
    for sync in ("dense", "rows"):
        two = torchrun(HELPER, "nerf", str(nerf_scene), str(root / sync), "12", sync)
        assert two.returncode == 0, two.stderr[-3000:]
    return root


def test_two_nerf_ranks_train_like_one_process_with_the_combined_batch(nerf_runs):
    one = json.loads((nerf_runs / "one" / "losses.json").read_text())
    two = json.loads((nerf_runs / "dense" / "losses.json").read_text())
    assert len(one) == len(two) == 12
    for a, b in zip(one, two):
        assert abs(a - b) <= 1e-3 * abs(a), (one, two)
    assert one[-1] < one[0]                        # it trains
    assert_same_training(nerf_runs / "one", nerf_runs / "dense")
    ckpt = torch.load(nerf_runs / "dense" / "checkpoint.pt", map_location="cpu", weights_only=False)
    ref = torch.load(nerf_runs / "one" / "checkpoint.pt", map_location="cpu", weights_only=False)
    # The same ray count adaptation (from the summed sample counts) and occupancy grid.
    assert ckpt["n_rays"] == ref["n_rays"] and ckpt["steps"] == 12
    grid = (ckpt["model"]["grid"]["values"] - ref["model"]["grid"]["values"]).abs().max().item()
    assert grid < 1e-3


def test_dense_and_row_table_sums_give_the_same_bits(nerf_runs):
    a, b = field_state(nerf_runs / "dense"), field_state(nerf_runs / "rows")
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert json.loads((nerf_runs / "dense" / "losses.json").read_text()) == \
        json.loads((nerf_runs / "rows" / "losses.json").read_text())


def test_two_image_ranks_train_like_one_process(photo_256, tmp_path):
    one = one_process("image", str(photo_256), str(tmp_path / "one"), "15")
    assert one.returncode == 0, one.stderr[-3000:]
    two = torchrun(HELPER, "image", str(photo_256), str(tmp_path / "two"), "15", "rows")
    assert two.returncode == 0, two.stderr[-3000:]
    a = json.loads((tmp_path / "one" / "losses.json").read_text())
    b = json.loads((tmp_path / "two" / "losses.json").read_text())
    assert len(a) == len(b) == 15 and a[-1] < a[0]
    for x, y in zip(a, b):
        assert abs(x - y) <= 1e-3 * abs(x), (a, b)
    assert_same_training(tmp_path / "one", tmp_path / "two")


# ----------------------------------------------------------------------------- the CLI
def test_torchrun_cli_writes_one_run_from_rank_0(nerf_scene, tmp_path):
    out = tmp_path / "run"
    proc = torchrun("-m", "ngp_engine", "nerf", "train", str(nerf_scene), "--out", str(out),
                    "--steps", "12")
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert len(printed) == 1                       # rank 0 alone reports
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["gradient_sync"] == "dense"
    assert metrics["steps"] == 12 and metrics["psnr"] > 10
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == \
        ["checkpoint.pt", "config.json", "metrics.json"]
    assert "2 processes (dense table sync)" in proc.stderr


def test_a_time_budget_ends_both_ranks_together(nerf_scene, tmp_path):
    t0 = time.monotonic()
    proc = torchrun("-m", "ngp_engine", "nerf", "train", str(nerf_scene), "--out", str(tmp_path / "run"),
                    "--seconds", "3", "--no-eval", "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["steps"] > 0 and 3.0 <= metrics["seconds"] < 10.0
    assert time.monotonic() - t0 < 120


# ----------------------------------------------------------------------------- the service
def _followers_running(run: Path) -> list[str]:
    """Follower processes of this test's run (its folder is in their command line)."""
    out = subprocess.run(["pgrep", "-f", f"ngp_engine.service.followers.*{run}"], capture_output=True, text=True)
    return out.stdout.split()


def test_service_trains_with_two_processes_like_one(nerf_scene, tmp_path):
    from test_server import test_camera
    from ngp_engine.service.protocol import Preview

    # float32 MLPs on both sides, as in tests/data_parallel_run.py (why: there).
    single = run_cli("nerf", "train", str(nerf_scene), "--out", str(tmp_path / "one"), "--steps", "12",
                     "--no-eval", "--mlp-precision", "float32", "--quiet")
    assert single.returncode == 0, single.stderr[-2000:]
    client = EngineClient()
    client.start()
    try:
        client.send(Train(mode="nerf", data=str(nerf_scene), run_dir=str(tmp_path / "two"), steps=12,
                          processes=2, mlp_precision="float32", id="t"))
        config = client.wait_for(lambda e: e.type == "artifact" and e.info.get("processes") == 2, timeout=120)
        assert config.kind == "config"
        client.wait_for(lambda e: e.type == "progress" and e.step >= 3, timeout=120)
        assert len(_followers_running(tmp_path / "two")) == 1
        client.send(Preview(camera=test_camera(nerf_scene), passes=["rgb"], id="p"))
        preview = client.wait_for(lambda e: e.type in ("artifact", "error") and e.request == "p", timeout=60)
        assert preview.type == "artifact" and Path(preview.path).is_file()
        done = client.wait_for(lambda e: e.type in ("done", "error") and e.request == "t", timeout=300)
        assert done.type == "done", done
        assert done.summary["processes"] == 2 and done.summary["steps"] == 12
    finally:
        client.close()
    assert _followers_running(tmp_path / "two") == []
    assert_same_training(tmp_path / "one", tmp_path / "two")


def test_a_rank_killed_mid_training_is_one_line_and_the_steps_are_kept(nerf_scene, tmp_path):
    client = EngineClient()
    client.start()
    try:
        client.send(Train(mode="nerf", data=str(nerf_scene), run_dir=str(tmp_path / "run"), processes=2,
                          id="t"))
        client.wait_for(lambda e: e.type == "progress" and e.step >= 3, timeout=120)
        followers = _followers_running(tmp_path / "run")
        assert len(followers) == 1
        os.kill(int(followers[0]), signal.SIGKILL)
        err = client.wait_for(lambda e: e.type in ("error", "done") and e.request == "t", timeout=60)
        assert err.type == "error"
        assert "\n" not in err.message
        assert "process 1 of 2 exited (killed by signal 9)" in err.message
        assert "steps done are kept in" in err.message
        ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", map_location="cpu", weights_only=False)
        assert ckpt["steps"] >= 3
        # The engine serves on: a one-process job right after.
        client.send(Train(mode="nerf", data=str(nerf_scene), run_dir=str(tmp_path / "again"), steps=2, id="u"))
        done = client.wait_for(lambda e: e.type in ("done", "error") and e.request == "u", timeout=120)
        assert done.type == "done", done
    finally:
        client.close()
    assert _followers_running(tmp_path) == []


def test_a_one_process_job_keeps_the_device_it_asked_for(tmp_path):
    """The service's single-process job trains on the request's device (a GPU job must not
    fall back to the CPU default of the one-process ranks)."""
    from ngp_engine.service.followers import JobRanks

    for device in (torch.device("cuda"), torch.device("mps"), torch.device("cpu")):
        job = JobRanks.start(1, "dense", device, {})
        assert job.ranks.world == 1 and job.ranks.device == device and job.followers is None
