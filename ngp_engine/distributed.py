"""Data-parallel training over several processes (torch.distributed: gloo on CPUs, NCCL on
CUDA GPUs), as `torchrun --nproc-per-node N -m ngp_engine <mode> train ...` starts it or the
service's `train` request with `processes` > 1 asks for.

Every rank holds the whole model and draws the same combined batch from the same seeded
generator; it trains on its own contiguous share of that batch and its loss is weighted by
the share's size (n_rank / n), so the SUM of the ranks' gradients is the gradient of the
combined batch's mean loss. After the backward pass one reduction sums the gradients (and
a few figures: loss, squared error, sample count) over the ranks; every rank then takes the
same optimiser step, so parameters, occupancy grids and sampler states stay equal on every
rank, step after step, and one process with the combined batch gives the same results up
to the order of floating-point sums.

The hash tables' gradients are summed one of two ways (`GRADIENT_SYNCS`):
- "dense": an all-reduce of the whole table gradient (its size every step, whatever the
  batch touched);
- "rows": each rank sends only its non-zero gradient entries (int32 index + float32 value,
  all-gathered, padded to the largest count) and every rank adds them up in rank order.
  Cheaper while a step touches less than about half the table (8 bytes per touched entry
  against 4 per entry); see scripts/bench_distributed.py for the measurement.
Both keep entries that no rank touched exactly zero, as tiny-cuda-nn's Adam needs (it skips
them).

Rank 0 alone decides when training pauses or ends (`agree`, one tiny broadcast per step,
so a time budget or a stop request cannot leave ranks waiting on each other), writes
checkpoints, metrics and progress; the other ranks follow (tasks/base.follow_training).
That broadcast travels host to host in a gloo group of its own (`Ranks.commands`): beside
NCCL a broadcast of a GPU tensor, read back as a step's go-ahead, would wait for the
GPU to finish everything queued before it, every step, where the step itself reads
nothing back. (With `gradient_sync` "rows" the touched-entry counts are still read back
each step.)
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field
from typing import Any, Iterable

import torch

from .errors import UserError

GRADIENT_SYNCS = ("dense", "rows")
DEFAULT_GRADIENT_SYNC = "dense"
STEP, PAUSE, END = 1, 0, -1            # what rank 0 tells the followers before a step
DEFAULT_TIMEOUT = datetime.timedelta(minutes=30)
MAX_EXACT_COUNT = 1 << 24              # sample counts travel as float32: exact below this


@dataclass(eq=False)           # compared and hashed by identity: one object per process
class Ranks:
    """The processes that train one model together; `world` 1 (the default) is a plain
    single process, for which every method is free."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    gradient_sync: str = DEFAULT_GRADIENT_SYNC
    group: Any = None                  # the torch.distributed process group (None: single)
    commands: Any = None               # a gloo group for rank 0's commands (host tensors)
    _owns_group: bool = False

    def __post_init__(self) -> None:
        if self.gradient_sync not in GRADIENT_SYNCS:
            raise UserError(f"gradient_sync: {self.gradient_sync!r} is not one of "
                            f"{', '.join(GRADIENT_SYNCS)}")

    # ------------------------------------------------------------------ set-up
    @classmethod
    def from_env(cls, device: torch.device, gradient_sync: str = DEFAULT_GRADIENT_SYNC,
                 timeout: datetime.timedelta = DEFAULT_TIMEOUT) -> "Ranks":
        """The ranks torchrun started (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT in
        the environment), joined into a process group; a single process without them.
        `device` is the device asked for; a CUDA rank gets cuda:LOCAL_RANK."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls(device=device, gradient_sync=gradient_sync)
        rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        return cls.join(rank, world, _rank_device(device, local, world), "env://",
                        gradient_sync=gradient_sync, timeout=timeout)

    @classmethod
    def join(cls, rank: int, world: int, device: torch.device, init_method: str | None = None,
             store: Any = None, gradient_sync: str = DEFAULT_GRADIENT_SYNC,
             timeout: datetime.timedelta = DEFAULT_TIMEOUT) -> "Ranks":
        """Join (create) the default process group as `rank` of `world`, by `init_method`
        (a URL) or an existing `store`; NCCL for CUDA devices, gloo otherwise."""
        import torch.distributed as dist  # noqa: PLC0415

        if not dist.is_available():
            raise UserError("processes: this torch build has no torch.distributed")
        if device.type == "mps":
            raise UserError("processes: data-parallel training runs on CUDA GPUs or CPUs, not MPS")
        backend = "nccl" if device.type == "cuda" else "gloo"
        if dist.is_initialized():
            raise UserError("processes: a process group is already running in this process")
        kwargs: dict[str, Any] = {"store": store} if store is not None else {"init_method": init_method}
        if device.type == "cuda":
            torch.cuda.set_device(device)
            kwargs["device_id"] = device
        else:
            cpu_threads()             # numba as few threads as torch was given
        # First, while no group exists: its functions take `group=group.WORLD` as a default
        # argument, evaluated at import. Imported later (torch.optim imports it, through
        # torch._dynamo, when a task builds its optimiser) they would hold our group to the
        # interpreter's exit, and `close` could not free it (see there).
        import torch.distributed.nn  # noqa: F401, PLC0415
        dist.init_process_group(backend, rank=rank, world_size=world, timeout=timeout, **kwargs)
        # Every rank creates it, in the same order, right after the main group (new_group's
        # contract). On CPUs too, though gloo already carries host tensors there: one code
        # path, the one GPUs take, is the one the CPU tests run.
        try:
            commands = dist.new_group(backend="gloo", timeout=timeout)
        except BaseException:
            # Left running, the main group would refuse every later join in this process
            # (the service's, which lives on): "a process group is already running".
            dist.destroy_process_group()
            raise
        return cls(rank=rank, world=world, device=device, gradient_sync=gradient_sync,
                   group=dist.group.WORLD, commands=commands, _owns_group=True)

    def close(self, wait_for_all: bool = True) -> None:
        """Leave the process group (once; a single process has none). With `wait_for_all`
        the ranks first meet in a barrier, so none tears its connections down while another
        still uses them; leave it out when a rank is gone or stuck."""
        if self._owns_group:
            import torch.distributed as dist  # noqa: PLC0415

            self._owns_group = False
            group, self.group = self.group, None
            commands, self.commands = self.commands, None
            if dist.is_initialized():
                if wait_for_all:
                    try:
                        dist.barrier()
                    except RuntimeError:       # a rank already gone: nothing to wait for
                        pass
                dist.destroy_process_group()   # every group, the commands' one included
            # Our references were the last: dropping them now runs the groups' destructors
            # (torch releases the GIL for them), which join gloo's worker threads. Kept until
            # the interpreter's exit, a worker still freeing the last collective's tensors
            # there needs the GIL, is told to exit instead, and aborts the process
            # ("terminate called without an active exception"; 1 exit in ~10 of a loaded
            # machine).
            del group, commands

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes files and reports progress."""
        return self.rank == 0

    # ------------------------------------------------------------------ the batch
    def share(self, n: int) -> slice:
        """This rank's contiguous part of a combined batch of `n` items (sizes differ by at
        most one between ranks)."""
        return slice(n * self.rank // self.world, n * (self.rank + 1) // self.world)

    def weight(self, n: int) -> float:
        """The factor of this rank's mean loss (its share of the `n` items): the ranks'
        weighted losses (and gradients) sum to the combined batch's mean."""
        s = self.share(n)
        return (s.stop - s.start) / n if n else 0.0

    # ------------------------------------------------------------------ collectives
    def align(self, params: Iterable[torch.Tensor]) -> None:
        """Give every rank rank 0's values of `params` (as DistributedDataParallel does at
        start): equal seeds make them equal already; this makes it certain."""
        if self.world == 1:
            return
        import torch.distributed as dist  # noqa: PLC0415

        with torch.no_grad():
            for t in params:
                dist.broadcast(t.data, src=0)

    def agree(self, go: bool) -> bool:
        """Rank 0's `go` (train one more step, or pause) told to every rank; each rank
        passes its own, only rank 0's counts."""
        if self.world == 1:
            return go
        return self._command(STEP if go else PAUSE) == STEP

    def end(self) -> None:
        """Rank 0: the job is over; the followers return from `follow_training`."""
        if self.world > 1 and self.is_main:
            self._command(END)

    def next_command(self) -> int:
        """A follower: what rank 0 says next (STEP, PAUSE or END); blocks until it does."""
        return self._command(PAUSE)

    def _command(self, value: int) -> int:
        import torch.distributed as dist  # noqa: PLC0415

        t = torch.tensor([value], dtype=torch.int32)           # on the host: see `commands`
        dist.broadcast(t, src=0, group=self.commands)
        return int(t.item())

    def reduce_gradients(self, groups: Iterable[dict], figures: torch.Tensor,
                         count: int | torch.Tensor = 0) -> tuple[torch.Tensor, int | torch.Tensor]:
        """After each rank's backward pass: sum the gradients of the optimiser `groups`
        over the ranks (missing gradients count as zeros; "encoding" groups by
        `gradient_sync`), together with `figures` [K] (float) and `count` (an int, or a []
        int64 device tensor: then the sum is one too, not read). Returns the sums (figures
        [K] and count); a single process returns its own, untouched and unread."""
        if self.world == 1:
            return figures, count
        import torch.distributed as dist  # noqa: PLC0415

        on_device = isinstance(count, torch.Tensor)
        if not on_device and not 0 <= count * self.world < MAX_EXACT_COUNT:
            raise ValueError(f"count {count} x {self.world} ranks is outside what a float32 sum keeps exact")
        small: list[torch.Tensor] = []
        for group in groups:
            for p in group["params"]:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                if group.get("kind") == "encoding":
                    self._sum_table(p.grad)
                else:
                    small.append(p.grad)
        counted = (count.float().reshape(1).to(figures.device) if on_device
                   else torch.tensor([float(count)], device=figures.device))
        tail = torch.cat([figures.detach().float().reshape(-1), counted]).to(self.device)
        flat = torch.cat([g.reshape(-1) for g in small] + [tail])
        dist.all_reduce(flat)
        offset = 0
        for g in small:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()
        figures_sum = flat[offset:offset + figures.numel()].view_as(figures)
        if on_device:
            return figures_sum, flat[-1].round().long()
        return figures_sum, int(flat[-1].item())

    def sum_counts(self, counts: torch.Tensor) -> torch.Tensor:
        """counts [K] int64 on the device summed over the ranks (not read back)."""
        if self.world == 1:
            return counts
        import torch.distributed as dist  # noqa: PLC0415

        total = counts.to(self.device, torch.int64).clone()
        dist.all_reduce(total)
        return total

    def _sum_table(self, grad: torch.Tensor) -> None:
        """Sum one hash table's gradient over the ranks in place (dense or touched rows)."""
        import torch.distributed as dist  # noqa: PLC0415

        g = grad.view(-1)
        if self.gradient_sync == "dense":
            dist.all_reduce(g)
            return
        idx = torch.nonzero(g).squeeze(1)                                  # [K] touched entries
        counts = [torch.zeros(1, dtype=torch.int64, device=g.device) for _ in range(self.world)]
        dist.all_gather(counts, torch.tensor([idx.numel()], dtype=torch.int64, device=g.device))
        sizes = [int(c.item()) for c in counts]
        width = max(sizes)
        if width == 0:
            return
        # int32 indices halve what travels (a table has < 2^31 entries); padded to one width.
        mine_i = torch.zeros(width, dtype=torch.int32, device=g.device)
        mine_v = torch.zeros(width, dtype=g.dtype, device=g.device)
        mine_i[:idx.numel()] = idx.to(torch.int32)
        mine_v[:idx.numel()] = g[idx]
        all_i = [torch.empty_like(mine_i) for _ in range(self.world)]
        all_v = [torch.empty_like(mine_v) for _ in range(self.world)]
        dist.all_gather(all_i, mine_i)
        dist.all_gather(all_v, mine_v)
        # Summed in rank order on every rank, so every rank gets the same bits.
        g.zero_()
        for size, i, v in zip(sizes, all_i, all_v):
            if size:
                g.index_add_(0, i[:size].long(), v[:size])


SINGLE = Ranks()
"""The one-process default (tasks use it unless a Session gives them other ranks)."""


def cpu_threads(threads: int | None = None) -> int:
    """Set (with `threads`) and return the threads this process computes with, for torch
    and for the numba kernels alike: ranks sharing one CPU must split its cores between
    them (torchrun gives torch OMP_NUM_THREADS=1; numba would still start one thread per
    core in every process and the ranks would thrash)."""
    n = max(1, threads) if threads is not None else torch.get_num_threads()
    from .encoding.backends import try_import  # noqa: PLC0415

    numba = try_import("numba")[0]
    if numba is not None:
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    # After numba: starting its OpenMP thread pool resets the process-wide OpenMP thread
    # count that torch reads too (to numba's pool size).
    torch.set_num_threads(n)
    return n


def _rank_device(device: torch.device, local_rank: int, world: int) -> torch.device:
    """The device of one rank: cuda:LOCAL_RANK on a CUDA machine with enough GPUs."""
    if device.type != "cuda":
        return device
    n = torch.cuda.device_count()
    if local_rank >= n:
        raise UserError(f"processes: rank {local_rank} needs GPU {local_rank}, but torch sees {n} "
                        f"CUDA device(s) for {world} processes per node")
    return torch.device("cuda", local_rank)
