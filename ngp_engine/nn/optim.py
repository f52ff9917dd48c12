"""tiny-cuda-nn's Adam, for any torch device.

Differences from `torch.optim.Adam` (they matter for hash tables):
- L2 regularisation (`l2_reg * w` added to the gradient) on MLP weights only.
- Encoding parameters whose gradient is exactly zero are skipped: value, moments and
  step count stay as they are, so rarely-seen table entries keep their momentum.
- Bias correction uses a per-parameter step count (tiny-cuda-nn's `param_steps`).
"""
from __future__ import annotations

from typing import Iterable

import torch

from ..config import AdamConfig


class TcnnAdam(torch.optim.Optimizer):
    """Adam over two kinds of parameter groups: {"params": [...], "kind": "matrix"} for
    MLP weights and {"params": [...], "kind": "encoding"} for tables."""

    def __init__(self, groups: Iterable[dict], cfg: AdamConfig) -> None:
        defaults = dict(lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2), eps=cfg.epsilon,
                        l2_reg=cfg.l2_reg, kind="matrix")
        super().__init__(list(groups), defaults)
        self._calls = 0                 # step() calls: no entry's step count exceeds it ...
        self._loaded_steps = 0          # ... plus the largest count a loaded state brought
        self._sizes: tuple[tuple[float, float, float], object] | None = None

    def _step_size_table(self, lr: float, beta1: float, beta2: float):
        """The numba kernel's step sizes by step count, rebuilt when lr or the betas change
        (learning-rate decay) or the counts outgrow it (then doubled)."""
        from . import _adam_kernel  # noqa: PLC0415 - numba loads on first use
        need = self._calls + self._loaded_steps + 2
        key = (lr, beta1, beta2)
        if self._sizes is None or self._sizes[0] != key or len(self._sizes[1]) < need:
            n = 1 << max(need - 1, 1).bit_length()
            self._sizes = (key, _adam_kernel.step_sizes(n, lr, beta1, beta2))
        return self._sizes[1]

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        self._calls += 1
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, eps = group["lr"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["m"] = torch.zeros_like(p, memory_format=torch.contiguous_format)
                    state["v"] = torch.zeros_like(p, memory_format=torch.contiguous_format)
                    state["steps"] = torch.zeros_like(p, dtype=torch.int32,
                                                      memory_format=torch.contiguous_format)
                m, v, steps = state["m"].view(-1), state["v"].view(-1), state["steps"].view(-1)
                w, g = p.view(-1), p.grad.reshape(-1)
                if group["kind"] == "encoding" and _kernel_applies(p):
                    from . import _adam_kernel  # noqa: PLC0415 - numba loads on first use
                    _adam_kernel.sparse_adam(w.numpy(), g.contiguous().numpy(), m.numpy(), v.numpy(),
                                             steps.numpy(), self._step_size_table(lr, beta1, beta2),
                                             lr, beta1, beta2, eps)
                elif group["kind"] == "encoding":
                    # Every entry, masked where no gradient came: on a GPU that is a few
                    # passes over the table, where picking the touched entries out would
                    # read their count back to the host (a wait for the device) every step.
                    _adam_update(w, g, m, v, steps, g != 0, lr, beta1, beta2, eps, 0.0)
                else:
                    _adam_update(w, g, m, v, steps, None, lr, beta1, beta2, eps, group["l2_reg"])
        return None

    def load_state_dict(self, state_dict: dict) -> None:  # type: ignore[override]
        super().load_state_dict(state_dict)
        # torch casts floating state to the parameter dtype; step counts must stay integers.
        for state in self.state.values():
            if "steps" in state:
                state["steps"] = state["steps"].round().to(torch.int32)
                self._loaded_steps = max(self._loaded_steps, int(state["steps"].max()))


def _kernel_applies(p: torch.Tensor) -> bool:
    """The numba sparse update runs for contiguous float32 CPU tables when numba imports."""
    if p.device.type != "cpu" or p.dtype != torch.float32 or not p.is_contiguous():
        return False
    from ..encoding.backends import try_import  # noqa: PLC0415
    return try_import("ngp_engine.nn._adam_kernel")[0] is not None


def _adam_update(w: torch.Tensor, g: torch.Tensor, m: torch.Tensor, v: torch.Tensor,
                 steps: torch.Tensor, touched: torch.Tensor | None, lr: float, beta1: float,
                 beta2: float, eps: float, l2_reg: float) -> None:
    """One Adam update of the flat views w, g, m, v, steps, where `touched` [P] bool is true
    (everywhere when None); the other entries keep their values and step counts."""
    gi = g + l2_reg * w if l2_reg else g
    mi = m.mul(beta1).add_(gi, alpha=1 - beta1)
    vi = v.mul(beta2).addcmul_(gi, gi, value=1 - beta2)
    si = steps + 1
    sf = si.to(w.dtype)
    step_lr = lr * torch.sqrt(1 - torch.pow(beta2, sf)) / (1 - torch.pow(beta1, sf))
    new_w = w - step_lr / (torch.sqrt(vi) + eps) * mi
    if touched is not None:
        mi, vi = torch.where(touched, mi, m), torch.where(touched, vi, v)
        si, new_w = torch.where(touched, si, steps), torch.where(touched, new_w, w)
    m.copy_(mi)
    v.copy_(vi)
    steps.copy_(si)
    w.copy_(new_w)


def param_groups(encodings: Iterable[torch.nn.Module], networks: Iterable[torch.nn.Module]) -> list[dict]:
    """Optimiser groups: encoding parameters (zero-gradient skipping) and MLP weights (L2)."""
    enc = [p for e in encodings for p in e.parameters()]
    net = [p for n in networks for p in n.parameters()]
    groups = [{"params": net, "kind": "matrix"}]
    if enc:
        groups.append({"params": enc, "kind": "encoding"})
    return groups
