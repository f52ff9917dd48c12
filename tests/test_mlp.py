"""The tiny MLP's hand-written float32 backward on the CPU, and its precision option:
bfloat16 products (torch.autocast) with float32 weights.

bfloat16 keeps 8 bits of mantissa: one product agrees with float32 to about 0.3%, but
through two hidden layers the first layer's weight gradient differs by about 6% (in norm;
measured here, and the same with a hand-written bfloat16 chain), so the bounds below are
loose; what they catch is a missing or misplaced gradient. On the CPU the rows are padded
to a multiple of BF16_CPU_ROWS (oneDNN builds a kernel per shape), and the padding must
leave outputs and gradients of the real rows alone.
"""
from __future__ import annotations

import os

import pytest
import torch

from ngp_engine.config import MLPConfig
from ngp_engine.nn import mlp as mlp_module
from ngp_engine.nn.mlp import BF16_CPU_ROWS, MLP


def _autograd_layers(net: MLP, x: torch.Tensor) -> torch.Tensor:
    """The same layers through autograd's own ReLU and linear backward (the reference)."""
    for layer in net.layers[:-1]:
        x = torch.relu(layer(x)) if net.activation_name == "ReLU" else layer(x)
    return net.output_activation(net.layers[-1](x))


@pytest.mark.parametrize("activation,output,hidden,n", [
    ("ReLU", "None", 1, 4097), ("ReLU", "Sigmoid", 2, 3001), ("None", "None", 2, 1),
    ("ReLU", "Exponential", 3, 0)])
def test_cpu_backward_is_autograds_bit_for_bit(activation, output, hidden, n, monkeypatch):
    """Outputs, the input gradient and every weight gradient equal autograd's exactly, and
    the hand-written path (with its in-place ReLU mask) is the one that ran."""
    masks = []
    real_mask = mlp_module._relu_mask_
    monkeypatch.setattr(mlp_module, "_relu_mask_", lambda g, h: masks.append(1) or real_mask(g, h))
    cfg = MLPConfig(n_neurons=64, n_hidden_layers=hidden, activation=activation,
                    output_activation=output)
    net = MLP(32, 3, cfg, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n, 32, generator=gen)
    # Some exactly-zero pre-activations: ReLU's gradient there is 0 (autograd's convention).
    x[: n // 3] = 0.0
    dy = torch.randn(n, 3, generator=gen)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya = net(xa)
    (ya * dy).sum().backward()
    grads_a = [xa.grad] + [layer.weight.grad.clone() for layer in net.layers]
    net.zero_grad()
    yb = _autograd_layers(net, xb)
    (yb * dy).sum().backward()
    grads_b = [xb.grad] + [layer.weight.grad for layer in net.layers]
    assert torch.equal(ya, yb)
    for a, b in zip(grads_a, grads_b):
        assert torch.equal(a, b)
    assert len(masks) == (hidden if activation == "ReLU" else 0)
    layers_node = ya.grad_fn if output == "None" else ya.grad_fn.next_functions[0][0]
    assert type(layers_node).__name__ == "_ReluLayersBackward"


def test_cpu_backward_with_frozen_weights_gives_the_input_gradient_only():
    """As the renderer's normals: the weights need no gradient, the positions do."""
    net = MLP(32, 1, MLPConfig(n_neurons=64, n_hidden_layers=2),
              generator=torch.Generator().manual_seed(0))
    net.requires_grad_(False)
    x = torch.randn(500, 32, generator=torch.Generator().manual_seed(1), requires_grad=True)
    (g,) = torch.autograd.grad(net(x).sum(), x)
    net.hand_backward = False
    (g_ref,) = torch.autograd.grad(net(x).sum(), x)
    assert torch.equal(g, g_ref) and g.abs().sum() > 0
    assert all(layer.weight.grad is None for layer in net.layers)


def test_cpu_backward_without_input_gradient_and_refuses_second_derivatives_in_one_line():
    net = MLP(8, 2, MLPConfig(n_neurons=16, n_hidden_layers=2))
    x = torch.randn(100, 8)
    net(x).sum().backward()                  # x needs no gradient: weights only
    assert all(layer.weight.grad is not None for layer in net.layers)
    xg = torch.randn(100, 8, requires_grad=True)
    with pytest.raises(RuntimeError, match="no second derivatives; set hand_backward = False"):
        torch.autograd.grad(net(xg).sum(), xg, create_graph=True)
    net.hand_backward = False                # autograd's backward: second derivatives exist
    (g,) = torch.autograd.grad(net(xg).sum(), xg, create_graph=True)
    g.square().sum().backward()
    assert net.layers[0].weight.grad.abs().sum() > 0


def _pair(n_in: int, n_out: int, cfg: MLPConfig) -> tuple[MLP, MLP]:
    gen = torch.Generator().manual_seed(0)
    f32 = MLP(n_in, n_out, cfg, generator=gen)
    bf16 = MLP(n_in, n_out, cfg, precision="bfloat16")
    bf16.load_state_dict(f32.state_dict())
    return f32, bf16


@pytest.mark.parametrize("n", [1, 5000, 2 * BF16_CPU_ROWS])
def test_bfloat16_mlp_agrees_with_float32_to_bfloat16_rounding(n):
    f32, bf16 = _pair(32, 16, MLPConfig(n_neurons=64, n_hidden_layers=2))
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n, 32, generator=gen)
    dy = torch.randn(n, 16, generator=gen)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = f32(xa), bf16(xb)
    assert yb.dtype == torch.float32 and yb.shape == (n, 16)
    scale = ya.abs().max().item()
    assert (yb - ya).abs().max().item() <= 0.02 * scale
    assert not torch.equal(ya, yb)                     # the products did run in bfloat16
    (ya * dy).sum().backward()
    (yb * dy).sum().backward()
    for a, b in [(xa.grad, xb.grad)] + [(p.grad, q.grad) for p, q in zip(f32.parameters(), bf16.parameters())]:
        assert b.dtype == torch.float32                # weights and their gradients stay float32
        assert (b - a).norm().item() <= 0.1 * a.norm().item()


def test_bfloat16_padding_leaves_the_real_rows_alone():
    # The same rows in calls padded by different amounts (5000 -> 8192, 1234 -> 4096,
    # 3766 -> 4096): each row's output is the same, and the weight gradient of all 5000 rows
    # equals the sum of its two parts' (to float32 summation order): the padded rows' outputs
    # are cut off and get no gradient.
    _, mlp = _pair(32, 3, MLPConfig(n_neurons=64, n_hidden_layers=1, output_activation="Sigmoid"))
    x = torch.randn(5000, 32, generator=torch.Generator().manual_seed(2))
    y = mlp(x)
    with torch.no_grad():
        parts = torch.cat([mlp(x[:1234]), mlp(x[1234:])])
    assert (parts - y.detach()).abs().max().item() <= 1e-2
    y.sum().backward()
    whole = [p.grad.clone() for p in mlp.parameters()]
    mlp.zero_grad()
    mlp(x[:1234]).sum().backward()
    mlp(x[1234:]).sum().backward()
    for w, parts in zip(whole, (p.grad for p in mlp.parameters())):
        assert (parts - w).norm().item() <= 1e-2 * w.norm().item()


@pytest.mark.parametrize("kernels", [True, False])
@pytest.mark.parametrize("activation,hidden,n", [("ReLU", 1, 5000), ("ReLU", 3, 4096),
                                                 ("None", 2, 3), ("ReLU", 2, 0)])
def test_bfloat16_cpu_path_is_autocasts_bit_for_bit(activation, hidden, n, kernels, monkeypatch):
    """The CPU's hand-written bfloat16 path (`_ReluLayers` in bfloat16: the ReLU and its mask
    on the bits, numba or, without it, torch) gives autocast's outputs and gradients exactly:
    the same bfloat16 products, the same rounding, the padding rows without effect. (With a
    sigmoid or exp output the two differ: the hand path applies it to the float32 output.)"""
    if not kernels:
        monkeypatch.setattr(mlp_module, "_kernel", lambda t: None)
    f32, net = _pair(32, 16, MLPConfig(n_neurons=64, n_hidden_layers=hidden, activation=activation))
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(n, 32, generator=gen)
    x[: n // 3] = 0.0                      # exact zeros before and after the ReLU
    dy = torch.randn(n, 16, generator=gen)
    runs = []
    for hand in (True, False):
        net.hand_backward = hand
        net.zero_grad()
        xg = x.clone().requires_grad_()
        y = net(xg)
        (y * dy).sum().backward()
        runs.append([y.detach(), xg.grad] + [layer.weight.grad for layer in net.layers])
        if hand:
            assert type(y.grad_fn).__name__ == "_ReluLayersBackward"
        with torch.no_grad():
            runs[-1].append(net(x))
    for a, b in zip(*runs):
        assert a.dtype == torch.float32 and torch.equal(a, b)
    if n:
        assert not torch.equal(runs[0][0], f32(x))          # bfloat16 products did run


@pytest.mark.parametrize("kernels", [True, False])
def test_bfloat16_cpu_path_keeps_nans_and_infinities_as_autocast(kernels, monkeypatch):
    """Rows with infinities: a hidden unit of +inf - inf is a NaN (on x86 with the sign bit
    set), which the ReLU must keep (not zero as a negative), and -inf rectifies to 0; the
    outputs and input gradients are autocast's, NaN for NaN."""
    if not kernels:
        monkeypatch.setattr(mlp_module, "_kernel", lambda t: None)
    _, net = _pair(4, 2, MLPConfig(n_neurons=8, n_hidden_layers=2))
    with torch.no_grad():
        net.layers[0].weight.copy_(torch.tensor([[1.0, 1.0, 0, 0]] + [[0.5, -0.25, 1.0, -1.0]] * 7))
    x = torch.tensor([[float("inf"), float("-inf"), 1.0, 2.0],     # unit 0: inf - inf = NaN
                      [float("-inf"), 0.0, 1.0, 2.0],              # unit 0: -inf, ReLU 0
                      [0.5, 0.25, -1.0, 3.0]])
    runs = []
    for hand in (True, False):
        net.hand_backward = hand
        xg = x.clone().requires_grad_()
        y = net(xg)
        y.sum().backward()
        runs.append((y.detach(), xg.grad))
    for a, b in zip(*runs):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
    assert runs[0][0][0].isnan().all() and runs[0][0][2].isfinite().all()


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision"):
        MLP(4, 4, MLPConfig(), precision="float16")


def test_every_field_runs_its_mlps_in_the_configured_precision():
    from ngp_engine import config as cfgmod
    from ngp_engine.config import ImageFitConfig, NerfConfig, SdfConfig
    from ngp_engine.fields.image import ImageField
    from ngp_engine.fields.nerf import NerfField
    from ngp_engine.fields.sdf import SdfField

    def mlps(module: torch.nn.Module) -> list[MLP]:
        return [m for m in module.modules() if isinstance(m, MLP)]

    for precision in ("float32", "bfloat16"):
        fields = [ImageField(cfgmod.replace(ImageFitConfig(), mlp_precision=precision), 3),
                  NerfField(cfgmod.replace(NerfConfig(), mlp_precision=precision), 0.0, 1.0, 1.0),
                  SdfField(cfgmod.replace(SdfConfig(), mlp_precision=precision))]
        found = [m.precision for f in fields for m in mlps(f)]
        assert found == [precision] * 4      # image 1, NeRF density + colour, SDF 1


def test_bfloat16_where_it_cannot_run_is_one_clear_error():
    from ngp_engine.errors import UserError
    from ngp_engine.nn.mlp import check_precision

    with pytest.raises(UserError, match="mlp_precision: bfloat16 is not supported on MPS"):
        check_precision("bfloat16", torch.device("mps"))
    check_precision("float32", torch.device("mps"))          # float32 runs anywhere
    check_precision("bfloat16", torch.device("cpu"))          # the CPU runs it (maybe emulated)


def test_auto_precision_is_bfloat16_only_on_a_cpu_with_bfloat16_units(monkeypatch):
    """`auto` (the NeRF's and SDF's default) resolves per device: bfloat16 on a CPU with AMX or
    AVX-512 BF16, float32 on one without (it would only emulate bfloat16) and on GPUs and
    MPS (not measured there); given precisions pass through, and auto never fails a check."""
    from ngp_engine.config import ImageFitConfig, NerfConfig, SdfConfig
    from ngp_engine.device import cpu_bfloat16_units
    from ngp_engine.nn import mlp as mlp_mod

    cpu = torch.device("cpu")
    for amx, avx in ((True, False), (False, True), (False, False)):
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda amx=amx: amx, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda avx=avx: avx, raising=False)
        cpu_bfloat16_units.cache_clear()
        want = "bfloat16" if amx or avx else "float32"
        assert mlp_mod.resolve_precision("auto", cpu) == want
        mlp_mod.check_precision("auto", cpu)
    cpu_bfloat16_units.cache_clear()
    for kind in ("cuda", "mps"):
        assert mlp_mod.resolve_precision("auto", torch.device(kind)) == "float32"
        mlp_mod.check_precision("auto", torch.device(kind))      # no error where bfloat16 has one
    for given in ("float32", "bfloat16"):
        assert mlp_mod.resolve_precision(given, cpu) == given
    assert (NerfConfig().mlp_precision, ImageFitConfig().mlp_precision,
            SdfConfig().mlp_precision) == ("auto", "float32", "auto")


def test_an_auto_mlp_computes_what_its_resolved_precision_computes():
    """An MLP built with precision auto gives, forward and backward, bit for bit what one
    built with the precision auto resolves to on this CPU gives (and not the other's)."""
    from ngp_engine.nn.mlp import resolve_precision

    resolved = resolve_precision("auto", torch.device("cpu"))
    other = "float32" if resolved == "bfloat16" else "bfloat16"
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(300, 32, generator=gen)
    dy = torch.randn(300, 16, generator=gen)
    results = {}
    for precision in ("auto", resolved, other):
        net = MLP(32, 16, MLPConfig(n_neurons=64, n_hidden_layers=2), precision=precision,
                  generator=torch.Generator().manual_seed(0))
        xi = x.clone().requires_grad_(True)
        y = net(xi)
        y.backward(dy)
        results[precision] = (y.detach(), xi.grad, [layer.weight.grad for layer in net.layers])
    for a, b in zip(results["auto"], results[resolved]):
        assert all(torch.equal(u, v) for u, v in zip(a if isinstance(a, list) else [a],
                                                      b if isinstance(b, list) else [b]))
    assert not torch.equal(results["auto"][0], results[other][0])


def test_bfloat16_calls_that_train_nothing_run_in_blocks_of_a_few_shapes(monkeypatch):
    """A bfloat16 call that trains no weight (rendering, the density-only search, normals)
    runs in blocks of at most BF16_CPU_BLOCK rows, each padded to a multiple of
    BF16_CPU_ROWS: whatever the row counts, its products see at most 16 row counts (each a
    oneDNN kernel built once), and the outputs are the unblocked call's up to bfloat16's
    rounding (oneDNN may round a row differently at another row count; on the AMD EPYC of
    2026-12-05 they were equal bit for bit)."""
    from ngp_engine.nn.mlp import BF16_CPU_BLOCK

    net = MLP(32, 16, MLPConfig(n_neurons=64, n_hidden_layers=1), precision="bfloat16",
              generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2 * BF16_CPU_BLOCK + 4321, 32, generator=gen)
    rows: set[int] = set()
    real_mm = torch.mm

    def mm(a, b, *args, **kw):
        rows.add(a.shape[0])
        return real_mm(a, b, *args, **kw)

    whole = net(x).detach()                      # trains the weights: one call, one shape
    monkeypatch.setattr(torch, "mm", mm)
    with torch.no_grad():
        for n in (x.shape[0], 100_003, 70_001, 5_000, BF16_CPU_BLOCK + 1):
            out = net(x[:n])
            torch.testing.assert_close(out, whole[:n], rtol=1e-2, atol=1e-3)
    assert rows and max(rows) <= BF16_CPU_BLOCK
    assert all(r % BF16_CPU_ROWS == 0 for r in rows) and len(rows) <= BF16_CPU_BLOCK // BF16_CPU_ROWS
    # The input gradient alone (normals: the weights frozen) goes in blocks too, and is the
    # unblocked call's (the weights trained along), up to bfloat16's rounding.
    dy = torch.randn(x.shape[0], 16, generator=gen)
    x_whole = x.clone().requires_grad_(True)
    net(x_whole).backward(dy)
    rows.clear()
    for layer in net.layers:
        layer.weight.requires_grad_(False)
    xi = x.clone().requires_grad_(True)
    net(xi).backward(dy)
    assert max(rows) <= BF16_CPU_BLOCK
    torch.testing.assert_close(xi.grad, x_whole.grad, rtol=1e-2, atol=1e-3)


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads Linux's /proc/self/statm")
def test_bfloat16_rendering_of_many_sizes_keeps_memory_bounded():
    """With the CPU task's allocator settings (freed blocks kept), bfloat16 inference over
    50 different row counts up to 600 k rows keeps the process's resident memory within a
    few hundred MiB of where it started. Unblocked, every new shape's oneDNN kernel pinned
    its buffers: 937 MiB of growth in this test on the AMD EPYC of 2026-12-05."""
    from ngp_engine import cpu_allocator

    cpu_allocator.keep_freed_memory()
    net = MLP(32, 16, MLPConfig(n_neurons=64, n_hidden_layers=1), precision="bfloat16",
              generator=torch.Generator().manual_seed(0))
    x = torch.randn(600_000, 32, generator=torch.Generator().manual_seed(2))

    def resident_mib() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096 / 2**20

    with torch.no_grad():
        net(x)                                   # the blocks' shapes built once
        start = resident_mib()
        for k in range(50):
            net(x[:12_000 * (k + 1) - 7 * k])
    assert resident_mib() - start < 300, resident_mib() - start
