"""The tiny MLP: bias-free linear layers, as tiny-cuda-nn's FullyFusedMLP."""
from __future__ import annotations

import logging
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config import MLP_PRECISIONS, MLPConfig
from ..device import cpu_bfloat16_units
from ..errors import UserError
from ..encoding.backends import try_import

log = logging.getLogger(__name__)

_ACTIVATIONS = {
    "None": lambda t: t,
    "ReLU": torch.relu,
    "Sigmoid": torch.sigmoid,
    "Exponential": torch.exp,
}
# In place on a layer's fresh output (a matmul's backward needs its inputs, not its output):
# one [N, width] buffer fewer per hidden layer.
_IN_PLACE = {"ReLU": torch.relu_, "None": lambda t: t}   # the hidden layers' choices
# bfloat16 on the CPU: rows padded to a multiple of this. oneDNN builds (and caches) a
# kernel per matrix shape, and a NeRF step's sample count changes every step: unpadded,
# building them made a bfloat16 training run slower than float32 (scripts/bench_mlp.py).
# The padded rows' outputs are cut off, so they get no gradient: nothing else changes.
BF16_CPU_ROWS = 4096
# ... and a call that trains no weight (rendering, the training's density-only search,
# normals) runs in blocks of at most this many rows. Its row counts range widely (a
# renderer's windows: thousands to a million rows), and each new padded shape leaves oneDNN
# a cached kernel: a small long-lived allocation made after the call's big buffers, so
# with the CPU task's allocator settings (cpu_allocator: freed blocks kept, not unmapped)
# every new shape left its buffers as a hole no larger one could reuse. Rendering four
# held-out fox views took the process from 1.5 to 7.0 GiB; in blocks, at most 16 shapes
# per layer ever appear.
BF16_CPU_BLOCK = 16 * BF16_CPU_ROWS


def native_bfloat16(device_type: str) -> bool:
    """Whether a `device_type` device runs bfloat16 products in hardware of its own, as the
    engine measured it: a CPU with AMX or AVX-512 BF16 units. GPUs answer False: their
    bfloat16 MLPs have not been measured yet (no GPU lent so far), so auto keeps them in
    float32."""
    return device_type == "cpu" and bool(cpu_bfloat16_units())


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision the MLPs' products run in on `device`: float32 or bfloat16 as given;
    auto: bfloat16 where `native_bfloat16` (a CPU with AMX or AVX-512 BF16, where the MLPs'
    float32 products cost more than the hash grid in a NeRF step and bfloat16 ones train
    as well or better per minute: README "bfloat16 MLPs by default"), float32 everywhere
    else (a CPU without those units would only emulate bfloat16)."""
    if precision == "auto":
        return "bfloat16" if native_bfloat16(device.type) else "float32"
    return precision


def check_precision(precision: str, device: torch.device) -> None:
    """A one-line UserError when `device` cannot run the MLPs' products in `precision`; a log
    line when it can only emulate them (bfloat16 on a CPU without AMX or AVX-512 BF16); auto
    never asks for what the device lacks."""
    if precision != "bfloat16":
        return
    if device.type == "mps":
        # torch's MPS autocast is float16-only up to 2.5 (it warns and runs float32) and
        # bfloat16 needs macOS 14 after that: refuse rather than record what did not run.
        raise UserError("mlp_precision: bfloat16 is not supported on MPS; use float32")
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError(f"mlp_precision: {torch.cuda.get_device_name(device)} has no bfloat16 "
                        "support; use float32")
    if device.type == "cpu":
        if not native_bfloat16("cpu"):
            log.warning("mlp_precision bfloat16: this CPU has no bfloat16 units (AMX, AVX-512 "
                        "BF16); it is emulated and likely slower than float32")


def _kernel(t: torch.Tensor) -> Any:
    """The numba kernels' module for a contiguous CPU tensor, else None (numba missing)."""
    if t.device.type != "cpu" or not t.is_contiguous():
        return None
    return try_import("ngp_engine.nn._mlp_kernel")[0]


def _relu_(h: torch.Tensor) -> torch.Tensor:
    """ReLU in place on a layer's fresh output h [N, W] (float32 or bfloat16); returns h.

    bfloat16 through its bits in a numba loop: torch's CPU clamp on bfloat16 converts to
    float32 and back, about twice its float32 time."""
    kernel = _kernel(h) if h.dtype == torch.bfloat16 else None
    if kernel is not None:
        kernel.relu_bits_(h.view(torch.int16).numpy())
        return h
    return h.clamp_min_(0.0)


def _relu_mask_(g: torch.Tensor, h: torch.Tensor) -> None:
    """g [N, W] = 0 where h [N, W] <= 0, in place (ReLU's backward through its output h, as
    `_relu_` left it); both float32 or both bfloat16."""
    kernel = _kernel(g) if h.is_contiguous() else None
    if kernel is not None and g.dtype == torch.float32:
        kernel.relu_mask_(g.numpy(), h.numpy())
    elif kernel is not None and g.dtype == torch.bfloat16:
        kernel.relu_mask_bits_(g.view(torch.int16).numpy(), h.view(torch.int16).numpy())
    else:
        g.masked_fill_(h <= 0, 0.0)


class _ReluLayers(torch.autograd.Function):
    """x [N, n_in] float32 -> [N, n_out] float32 through bias-free layers with ReLU (or
    nothing) between, forward and backward by hand for training on the CPU, with the
    products in float32 or bfloat16.

    What autograd would do, minus its buffers: each hidden output is rectified in place and
    saved as the next layer's input (as `relu_` does), and the backward zeroes the gradient
    of the rectified entries in place in the product it has just computed, instead of
    writing a new [N, width] buffer per layer (`_relu_mask_`).

    In bfloat16 (tiny-cuda-nn's MLPs run in half precision the same way) the input is cast
    once into a buffer of rows padded to a multiple of BF16_CPU_ROWS (zero rows: no output
    kept, no gradient), the weights once per call, and every product, saved activation and
    backpropagated gradient stays bfloat16 (oneDNN accumulates in float32); the output, the
    input's gradient and the weights' gradients come back as float32. Against autocast,
    which does the same products, this skips autograd's per-layer casts and buffers and
    torch's slow bfloat16 elementwise ops (`scripts/bench_mlp.py`).

    No second derivatives (as tiny-cuda-nn's MLPs): a backward with create_graph=True is
    refused in one line rather than leaving them silently out of a loss. Nor forward-mode
    AD or torch.func transforms (jvp, jacrev, vmap), which the engine does not use.
    `MLP.hand_backward = False` gives autograd's backward, which has all of these.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, relu: bool, dtype: torch.dtype,
                *weights: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        a = x
        if dtype != torch.float32:
            a = x.new_empty(n + (-n) % BF16_CPU_ROWS, x.shape[1], dtype=dtype)
            a[:n].copy_(x)
            a[n:].zero_()
            weights = tuple(w.detach().to(dtype) for w in weights)
        inputs = [a]
        for w in weights[:-1]:
            h = torch.mm(inputs[-1], w.t())
            inputs.append(_relu_(h) if relu else h)
        ctx.relu, ctx.n = relu, n
        ctx.save_for_backward(*inputs, *weights)
        y = torch.mm(inputs[-1], weights[-1].t())
        return y if dtype == torch.float32 else y[:n].float()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        """dL/dy [N, n_out] -> (dL/dx [N, n_in] or None, None, None, dL/dW per layer
        [out, in]), all float32."""
        if torch.is_grad_enabled():
            raise RuntimeError("the MLP's CPU backward has no second derivatives; set "
                               "hand_backward = False on the MLP for losses on its gradients")
        saved = ctx.saved_tensors
        n = len(saved) // 2
        inputs, weights = saved[:n], saved[n:]
        dtype = inputs[0].dtype
        if dtype == torch.float32:
            g = grad.contiguous()
        else:
            g = grad.new_empty(inputs[0].shape[0], grad.shape[1], dtype=dtype)
            g[:ctx.n].copy_(grad)
            g[ctx.n:].zero_()
        d_weights: list[torch.Tensor | None] = [None] * n
        for k in range(n - 1, -1, -1):
            if ctx.needs_input_grad[3 + k]:
                d_weights[k] = torch.mm(g.t(), inputs[k]).float()   # [out, in] like the weight
            if k == 0 and not ctx.needs_input_grad[0]:
                break
            g = torch.mm(g, weights[k])                             # fresh [N, in]: ours
            if k and ctx.relu:
                _relu_mask_(g, inputs[k])
        d_x = None
        if ctx.needs_input_grad[0]:
            d_x = g if dtype == torch.float32 else g[:ctx.n].float()
        return (d_x, None, None, *d_weights)


class MLP(nn.Module):
    """[N, n_input] -> [N, n_output]; hidden layers of `n_neurons`, no biases.

    On the CPU, training (and in bfloat16 every call) goes through `_ReluLayers` (a
    hand-written backward without second derivatives) unless `hand_backward` is False.

    Weights are Xavier-uniform initialised like tiny-cuda-nn's networks. Every weight
    matrix is an "MLP weight" for the optimiser (L2 applies; see `optim.TcnnAdam`).
    """

    hand_backward = True

    def __init__(self, n_input_dims: int, n_output_dims: int, cfg: MLPConfig,
                 generator: torch.Generator | None = None, precision: str = "float32") -> None:
        super().__init__()
        if precision not in MLP_PRECISIONS:
            raise ValueError(f"precision: {precision!r} is not auto, float32 or bfloat16")
        self.precision = precision
        widths = [n_input_dims] + [cfg.n_neurons] * cfg.n_hidden_layers + [n_output_dims]
        self.layers = nn.ModuleList(nn.Linear(a, b, bias=False) for a, b in zip(widths, widths[1:]))
        for layer in self.layers:
            fan_out, fan_in = layer.weight.shape
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            with torch.no_grad():
                layer.weight.uniform_(-bound, bound, generator=generator)
        self.activation = _IN_PLACE[cfg.activation]
        self.activation_name = cfg.activation
        self.output_activation = _ACTIVATIONS[cfg.output_activation]
        self.n_output_dims = n_output_dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, n_input] -> [N, n_output] float32 (in bfloat16 precision the products run in
        bfloat16 with float32 weights, and the output comes back as float32; auto: as
        `resolve_precision` picks for x's device)."""
        if resolve_precision(self.precision, x.device) == "float32":
            return self._layers(x)
        if self.hand_backward and x.device.type == "cpu" and x.dtype == torch.float32:
            return self.output_activation(self._hand(x, torch.bfloat16))
        n = x.shape[0]
        pad = (-n) % BF16_CPU_ROWS if x.device.type == "cpu" else 0
        if pad:
            x = F.pad(x, (0, 0, 0, pad))
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            y = self._layers(x)
        return y[:n].float()

    def _hand(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """x [N, n_input] -> [N, n_output] float32 before the output activation, through
        `_ReluLayers` with products in `dtype`; in bfloat16, a call that trains no weight
        goes in blocks of BF16_CPU_BLOCK rows (rows are independent: the same values up to
        bfloat16's rounding, which oneDNN may do differently at another row count)."""
        weights = [layer.weight for layer in self.layers]
        relu = self.activation_name == "ReLU"
        trains = torch.is_grad_enabled() and any(w.requires_grad for w in weights)
        if dtype != torch.float32 and not trains and x.shape[0] > BF16_CPU_BLOCK:
            return torch.cat([_ReluLayers.apply(part, relu, dtype, *weights)
                              for part in x.split(BF16_CPU_BLOCK)])
        return _ReluLayers.apply(x, relu, dtype, *weights)

    def _layers(self, x: torch.Tensor) -> torch.Tensor:
        if (self.hand_backward and x.device.type == "cpu" and x.dtype == torch.float32
                and torch.is_grad_enabled() and not torch.is_autocast_enabled("cpu")):
            # Training on the CPU: the hand-written backward (see _ReluLayers).
            return self.output_activation(self._hand(x, torch.float32))
        for layer in self.layers[:-1]:
            x = self.activation(layer(x))
        return self.output_activation(self.layers[-1](x))
