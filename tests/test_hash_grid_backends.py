"""The compiled CPU kernel against the PyTorch reference: outputs and gradients."""
from __future__ import annotations

import pytest
import torch

from ngp_engine.config import HashGridConfig
from ngp_engine.encoding import backends
from ngp_engine.encoding.hash_grid import HashGrid

CASES = [
    # (d, L, F, log2 T, N_min, per_level_scale, interpolation)
    (2, 4, 2, 8, 4, 2.0, "Linear"),        # dense then hashed
    (2, 6, 1, 12, 2, 1.6, "Smoothstep"),
    (2, 3, 4, 16, 8, 1.5, "Nearest"),      # all dense
    (3, 5, 2, 10, 4, 1.9, "Linear"),
    (3, 3, 8, 6, 2, 2.0, "Linear"),        # tiny T: all but the first hashed
    (3, 4, 2, 14, 16, 1.4, "Smoothstep"),
    (3, 2, 1, 19, 16, 2.0, "Nearest"),
]


def _pair(d, levels, f, log2t, nmin, b, interp, backend="cpu"):
    """The reference and `backend` on one case, with the same random table in U(-1, 1)."""
    cfg = HashGridConfig(n_levels=levels, n_features_per_level=f, log2_hashmap_size=log2t,
                         base_resolution=nmin, per_level_scale=b, interpolation=interp)
    ref, fast = HashGrid(d, cfg, backend="torch"), HashGrid(d, cfg, backend=backend)
    with torch.no_grad():
        ref.params.uniform_(-1, 1, generator=torch.Generator().manual_seed(0))
        fast.params.copy_(ref.params)
    return ref, fast


@pytest.mark.parametrize("case", CASES, ids=lambda c: "d{}-L{}-F{}-T{}-{}".format(c[0], c[1], c[2], c[3], c[6]))
def test_cpu_kernel_matches_reference(case):
    ref, fast = _pair(*case)
    d = case[0]
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(3000, d, generator=gen)
    x[:4] = torch.tensor([0.0, 1.0, 0.5, 1.0 - 1e-7])[:, None]   # faces and the far corner
    xr, xf = x.clone().requires_grad_(), x.clone().requires_grad_()
    yr, yf = ref(xr), fast(xf)
    # Same corners, same weights, same order of the per-corner sum: bit-identical up to the
    # order of float summation (<= a few ulps of the feature magnitude).
    torch.testing.assert_close(yf, yr, rtol=0, atol=2e-6)
    dy = torch.randn(yr.shape, generator=gen)
    (yr * dy).sum().backward()
    (yf * dy).sum().backward()
    # Table gradients: scatter-adds of many points in different orders.
    scale = ref.params.grad.abs().max().item()
    torch.testing.assert_close(fast.params.grad, ref.params.grad, rtol=0, atol=1e-5 * max(scale, 1))
    if case[6] == "Nearest":
        assert xr.grad is None or torch.all(xr.grad == 0)
        assert torch.all(xf.grad == 0)
    else:
        gscale = xr.grad.abs().max().item()
        torch.testing.assert_close(xf.grad, xr.grad, rtol=0, atol=1e-5 * max(gscale, 1))


def test_kernel_touches_only_table_entries_that_points_reach():
    ref, fast = _pair(3, 4, 2, 12, 4, 2.0, "Linear")
    x = torch.full((1, 3), 0.3)
    fast(x).sum().backward()
    # One point, 4 levels x 8 corners x 2 features: at most 64 non-zero gradient values.
    assert 0 < int((fast.params.grad != 0).sum()) <= 64


@pytest.mark.parametrize("interp", ["Linear", "Smoothstep"])
def test_reference_gradcheck_float64(interp):
    cfg = HashGridConfig(n_levels=3, n_features_per_level=2, log2_hashmap_size=6,
                         base_resolution=3, per_level_scale=1.7, interpolation=interp)
    g = HashGrid(2, cfg, backend="torch").double()
    # Keep points away from cell faces, where the encoding is only piecewise smooth.
    x = (torch.rand(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 0.8 + 0.1)
    x.requires_grad_()
    params = g.params.detach().clone().uniform_(-1, 1).requires_grad_()
    from ngp_engine.encoding._torch_impl import hash_grid_encode

    def enc(x_, p_):
        return hash_grid_encode(x_, p_, g.scales, g.sizes, g.offsets, g.hashed, g.strides, 2, interp)

    assert torch.autograd.gradcheck(enc, (x, params), eps=1e-7, atol=1e-6)


def test_auto_picks_compiled_kernel_on_cpu():
    g = HashGrid(3, HashGridConfig(n_levels=2, log2_hashmap_size=8, base_resolution=4,
                                   per_level_scale=2.0))
    assert g.backend_for("cpu") == "cpu"
    assert "cpu" in backends.available("cpu")


@pytest.mark.parametrize("d", [1, 4])
def test_other_dimensions_use_the_reference(d):
    """The compiled kernel is for 2-D and 3-D; auto falls back to the reference elsewhere
    and an explicit request is a clear error."""
    cfg = HashGridConfig(n_levels=3, log2_hashmap_size=8, base_resolution=4, per_level_scale=2.0)
    g = HashGrid(d, cfg)
    assert g.backend_for("cpu") == "torch"
    assert g(torch.rand(7, d)).shape == (7, 6)
    with pytest.raises(backends.BackendUnavailable, match="2-D and 3-D"):
        HashGrid(d, cfg, backend="cpu")(torch.rand(2, d))


def test_tcnn_on_cpu_is_a_clear_error():
    with pytest.raises(backends.BackendUnavailable, match="CUDA"):
        backends.resolve("tcnn", "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_tcnn_matches_reference_on_cuda():
    pytest.importorskip("tinycudann", reason="needs tiny-cuda-nn's PyTorch bindings")
    cfg = HashGridConfig(n_levels=8, log2_hashmap_size=14, base_resolution=8, per_level_scale=1.5)
    ref = HashGrid(3, cfg, backend="torch").cuda()
    fast = HashGrid(3, cfg, backend="tcnn").cuda()
    with torch.no_grad():
        fast.params.copy_(ref.params.uniform_(-1, 1))
    x = torch.rand(4096, 3, device="cuda")
    yf, yr = fast(x), ref(x)
    torch.testing.assert_close(yf, yr, rtol=0, atol=1e-5)
    dy = torch.randn_like(yr)
    (yf * dy).sum().backward()
    (yr * dy).sum().backward()
    torch.testing.assert_close(fast.params.grad, ref.params.grad, rtol=0, atol=1e-4)
    # tiny-cuda-nn's own module stays out of our state: checkpoints load on any backend.
    assert list(fast.state_dict()) == ["params"]


def test_kernel_backward_allocates_one_table_sized_buffer():
    """The table gradient is one buffer of n_params floats: no per-corner, per-level or
    per-thread copies (tracemalloc sees numpy's allocations)."""
    import tracemalloc

    import numpy as np

    from ngp_engine.encoding import _cpu_kernel

    cfg = HashGridConfig(n_levels=16, log2_hashmap_size=16, base_resolution=16, max_resolution=1024)
    g = HashGrid(3, cfg, backend="cpu")
    n = 1 << 15
    x = np.random.default_rng(0).random((n, 3), dtype=np.float32)
    dy = np.ones((n, 16 * 2), dtype=np.float32)
    _cpu_kernel.backward_params(x, dy, g._np_tables, g.layout.n_params, 2, 0)   # compile
    tracemalloc.start()
    grad = _cpu_kernel.backward_params(x, dy, g._np_tables, g.layout.n_params, 2, 0)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    table_bytes = g.layout.n_params * 4
    assert grad.nbytes == table_bytes
    # A dense per-corner buffer would be n * 16 levels * 8 corners * 2 * 4 B = 33.5 MB, a
    # per-level copy of the table 16x the table (~57 MB here); we allow the table + 1 MiB.
    assert table_bytes <= peak < table_bytes + (1 << 20), (peak, table_bytes)


@pytest.mark.parametrize("backend", ["cpu", "torch"])
def test_precomputed_features_give_the_same_output_and_gradients(backend):
    # HashGrid(x, features=grid(x) computed without gradients): the forward is skipped (cpu,
    # triton) or recomputed (torch); output, table and input gradients are the same.
    _, grid = _pair(3, 8, 2, 12, 8, 1.5, "Linear", backend=backend)
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(2000, 3, generator=gen)
    dy = torch.randn(2000, 16, generator=gen)
    with torch.no_grad():
        before = grid(x)
    runs = []
    for features in (None, before):
        grid.params.grad = None
        xg = x.clone().requires_grad_()
        y = grid(xg, features=features)
        (y * dy).sum().backward()
        runs.append((y.detach(), grid.params.grad.clone(), xg.grad.clone()))
    for a, b in zip(*runs):     # (the torch reference's scatter-adds sum in a varying order)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6) if backend == "torch" else \
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert runs[0][1].abs().max() > 0 and runs[0][2].abs().max() > 0
    with pytest.raises(ValueError, match=r"features: expected \(2000, 16\), got \(2000, 8\)"):
        grid(x, features=before[:, :8])


@pytest.mark.parametrize("case", CASES, ids=lambda c: "d{}-L{}-F{}-T{}-{}".format(c[0], c[1], c[2], c[3], c[6]))
def test_kernels_overwrite_every_entry_of_a_given_buffer(case):
    # The autograd wrapper hands the kernels torch.empty buffers (any contents): NaN-filled
    # buffers give exactly what fresh ones do, so no entry is left unwritten.
    import numpy as np

    from ngp_engine.encoding import _cpu_kernel

    _, fast = _pair(*case)
    d, f, interp = case[0], case[2], fast._interp_code
    rng = np.random.default_rng(2)
    x = (rng.random((1000, d), dtype=np.float32) * 1.2 - 0.1).astype(np.float32)   # some outside
    p, tables, n_params = fast.params.detach().numpy(), fast._np_tables, fast.layout.n_params
    dy = rng.standard_normal((1000, fast.n_output_dims), dtype=np.float32)
    for name, fresh, given in (
            ("forward", lambda: _cpu_kernel.forward(x, p, tables, f, interp),
             lambda b: _cpu_kernel.forward(x, p, tables, f, interp, b)),
            ("grad", lambda: _cpu_kernel.backward_params(x, dy, tables, n_params, f, interp),
             lambda b: _cpu_kernel.backward_params(x, dy, tables, n_params, f, interp, b)),
            ("dx", lambda: _cpu_kernel.backward_input(x, dy, p, tables, f, interp),
             lambda b: _cpu_kernel.backward_input(x, dy, p, tables, f, interp, b))):
        expected = fresh()
        buffer = np.full(expected.shape, np.nan, np.float32)
        assert given(buffer) is buffer
        np.testing.assert_array_equal(buffer, expected, err_msg=name)
    with pytest.raises(ValueError, match=r"out: expected a writeable C-contiguous float32 array"):
        _cpu_kernel.forward(x, p, tables, f, interp, np.empty((999, fast.n_output_dims), np.float32))
