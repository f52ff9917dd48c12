"""Find the places where engine code would wait for a GPU, by running it on any device.

On a GPU the host queues work and goes on; an operation whose result the host needs (a
value read back, or an output whose size depends on the data) waits until the device has
done everything queued before it, and the device then idles while the host queues more.
`HostSyncs` records such operations called from `ngp_engine` code while it is active:

- aten operations that synchronise on CUDA, seen through a `TorchDispatchMode`: reading a
  scalar (`.item()`, `int(t)`, `bool(t)`, `float(t)`: `_local_scalar_dense`), `nonzero`,
  `masked_select`, indexing with a boolean mask, `bincount`, `unique`, `repeat_interleave`
  without an output size, `equal`, `is_nonzero`; `torch.tensor(values)` (`lift_fresh`:
  on a GPU, a blocking copy from host memory, which waits for the queue too);
- `Tensor.tolist()` and `Tensor.cpu()` (not dispatched as operations of their own).

Copies of existing CPU tensors to the device (`.to(device)`) are invisible on the CPU,
where they do nothing.

It runs on CPU tensors too, which is how the tests check a GPU training step without a
GPU (the Triton kernels in Triton's interpreter): the operations are the same. Operations
that Triton's interpreter makes for itself are not counted, nor are `.numpy()` calls (only
the CPU's kernels make those).

    with HostSyncs() as syncs:
        task.step()
    syncs.counts   # Counter of (operation, file under ngp_engine, line, function)
"""
from __future__ import annotations

import collections
import os
import sys
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

ENGINE = os.path.dirname(os.path.abspath(__file__))
_aten = torch.ops.aten
WAITING_OPS = frozenset({
    _aten._local_scalar_dense.default, _aten.nonzero.default, _aten.masked_select.default,
    _aten.bincount.default, _aten.repeat_interleave.Tensor, _aten._unique2.default,
    _aten.unique_dim.default, _aten.unique_consecutive.default, _aten.equal.default,
    _aten.is_nonzero.default, _aten.lift_fresh.default,
})
MASK_INDEXING_OPS = frozenset({_aten.index.Tensor, _aten.index_put.default, _aten.index_put_.default})
WAITING_METHODS = ("tolist", "cpu")


class HostSyncs(TorchDispatchMode):
    """Counts, while active, the operations from engine code that wait for the device."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter = collections.Counter()
        self._saved: dict[str, Any] = {}

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def _record(self, name: str, frame) -> None:
        """Count `name` at the innermost engine frame at or above `frame`, unless Triton's
        own code (its interpreter) sits between."""
        while frame is not None:
            path = frame.f_code.co_filename
            if path.startswith(ENGINE):
                self.counts[(name, os.path.relpath(path, ENGINE), frame.f_lineno,
                             frame.f_code.co_name)] += 1
                return
            if f"{os.sep}triton{os.sep}" in path:
                return
            frame = frame.f_back

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        waits = func in WAITING_OPS
        if func in MASK_INDEXING_OPS:
            waits = any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1])
        if func is _aten.repeat_interleave.Tensor and (kwargs or {}).get("output_size") is not None:
            waits = False
        if waits:
            self._record(str(func.overloadpacket.__name__), sys._getframe(1))
        return func(*args, **(kwargs or {}))

    def __enter__(self) -> "HostSyncs":
        for name in WAITING_METHODS:
            original = getattr(torch.Tensor, name)
            self._saved[name] = original

            def counted(t, *a, _name=name, _original=original, **k):
                self._record(_name, sys._getframe(1))
                return _original(t, *a, **k)
            setattr(torch.Tensor, name, counted)
        return super().__enter__()

    def __exit__(self, *exc) -> None:
        for name, original in self._saved.items():
            setattr(torch.Tensor, name, original)
        self._saved.clear()
        return super().__exit__(*exc)

    def report(self, per: int = 1) -> str:
        """One line per place, most frequent first (counts divided by `per`, e.g. steps)."""
        return "\n".join(f"{n / per:6.1f}  {op:20s} {where}:{line} ({func})"
                         for (op, where, line, func), n in self.counts.most_common())
