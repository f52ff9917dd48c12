"""tiny-cuda-nn's Adam: zero-gradient table entries untouched, L2 on MLP weights only."""
from __future__ import annotations

import pytest
import torch

from ngp_engine.config import AdamConfig
from ngp_engine.nn.optim import TcnnAdam


def _setup(lr=1e-2, l2=1e-6):
    table = torch.nn.Parameter(torch.ones(6))
    weight = torch.nn.Parameter(torch.ones(2, 3))
    opt = TcnnAdam([{"params": [weight], "kind": "matrix"}, {"params": [table], "kind": "encoding"}],
                   AdamConfig(learning_rate=lr, l2_reg=l2))
    return table, weight, opt


def test_first_step_moves_by_learning_rate():
    # Step 1: m = 0.1 g, v = 0.01 g^2, lr_t = lr sqrt(1 - 0.99) / (1 - 0.9) = lr;
    # update = lr * 0.1 g / (0.1 |g| + 1e-15) = lr * sign(g).
    table, weight, opt = _setup(l2=0.0)
    table.grad = torch.tensor([0.5, -2.0, 0.0, 3.0, 0.0, -1e-3])
    weight.grad = torch.full((2, 3), -4.0)
    opt.step()
    torch.testing.assert_close(table.detach(), torch.tensor([0.99, 1.01, 1.0, 0.99, 1.0, 1.01]))
    torch.testing.assert_close(weight.detach(), torch.full((2, 3), 1.01))


def test_zero_gradient_entries_keep_value_and_moments():
    table, _, opt = _setup()
    table.grad = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    opt.step()
    state = opt.state[table]
    m_before, v_before = state["m"].clone(), state["v"].clone()
    w_before = table.detach().clone()
    table.grad = torch.tensor([0.0, 2.0, 0.0, 0.0, 0.0, 0.0])
    opt.step()
    untouched = [0, 2, 3, 4, 5]
    assert torch.equal(table.detach()[untouched], w_before[untouched])
    assert torch.equal(state["m"][untouched], m_before[untouched])     # no decay of momentum
    assert torch.equal(state["v"][untouched], v_before[untouched])
    assert state["steps"].tolist() == [1, 2, 1, 1, 1, 1]
    # A plain Adam would have moved entry 0 again through its momentum.
    plain = torch.nn.Parameter(torch.ones(1))
    adam = torch.optim.Adam([plain], lr=1e-2, betas=(0.9, 0.99), eps=1e-15)
    for g in (1.0, 0.0):
        plain.grad = torch.tensor([g])
        adam.step()
    assert plain.item() != pytest.approx(table[0].item(), abs=1e-6)


def test_per_entry_bias_correction():
    # An entry first reached at step 3 still moves by a full lr on its first update.
    table, _, opt = _setup(l2=0.0)
    for _ in range(2):
        table.grad = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0, 0.0])
        opt.step()
    table.grad = torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    opt.step()
    assert table[1].item() == pytest.approx(0.99, abs=1e-7)


def test_l2_applies_to_matrix_weights_only():
    table, weight, opt = _setup(l2=1e-2)
    table.grad = torch.zeros(6)
    weight.grad = torch.zeros(2, 3)
    opt.step()
    # Matrix: g = 0 + l2 * w = 0.01 > 0, so Adam moves it by lr. Table: skipped entirely.
    torch.testing.assert_close(weight.detach(), torch.full((2, 3), 0.99))
    assert torch.equal(table.detach(), torch.ones(6))


def test_numba_sparse_adam_matches_torch_path():
    # TcnnAdam sends contiguous float32 CPU encoding tables to the numba kernel
    # (_adam_kernel.sparse_adam); the torch path is _adam_update masked by g != 0. Over
    # several steps of random sparse gradients (half of them exact zeros, so entries reach
    # different step counts), both must agree to float32 rounding.
    from ngp_engine.nn.optim import _adam_update, _kernel_applies

    gen = torch.Generator().manual_seed(0)
    n = (1 << 16) + 4321                     # more than one of the kernel's 2^16-entry blocks
    lr, beta1, beta2, eps = 1e-2, 0.9, 0.99, 1e-15
    table = torch.nn.Parameter((torch.rand(n, generator=gen) - 0.5) * 2e-4)   # U(-1e-4, 1e-4)
    w = table.detach().clone()
    m, v = torch.zeros(n), torch.zeros(n)
    steps = torch.zeros(n, dtype=torch.int32)
    opt = TcnnAdam([{"params": [table], "kind": "encoding"}],
                   AdamConfig(learning_rate=lr, beta1=beta1, beta2=beta2, epsilon=eps))
    assert _kernel_applies(table)
    for _ in range(6):
        g = torch.randn(n, generator=gen) * (torch.rand(n, generator=gen) < 0.5)
        g[:100] = 0.0                                    # never touched
        table.grad = g.clone()
        opt.step()
        _adam_update(w, g, m, v, steps, g != 0, lr, beta1, beta2, eps, 0.0)
    state = opt.state[table]
    assert torch.equal(state["steps"], steps)
    assert sorted(set(steps.tolist())) == [0, 1, 2, 3, 4, 5, 6]
    # w and m pass through zero: relative to the tensor's scale. v > 0 where touched: entry by
    # entry (this catches a kernel that rounds 1 - beta2 in float32, 9.3e-7 off 0.01f).
    for got, want in ((table.detach(), w), (state["m"], m)):
        assert (got - want).abs().max() <= 1e-6 * want.abs().max()
    touched = steps > 0
    torch.testing.assert_close(state["v"][touched], v[touched], rtol=1e-6, atol=0)
    assert torch.equal(table.detach()[:100], w[:100]) and not state["v"][:100].any()


def test_adam_step_size_table_is_exact_and_follows_the_learning_rate():
    # The numba kernel looks bias-corrected step sizes up by step count (entries past the
    # table compute theirs): a short table and a long one give the same bits, and a new
    # learning rate (decay) rebuilds the table: the update then matches the torch path.
    import numpy as np

    from ngp_engine.nn import _adam_kernel
    from ngp_engine.nn.optim import _adam_update

    rng = np.random.default_rng(0)
    n = 5000
    runs = []
    for table_len in (3, 64):
        w = rng.standard_normal(n).astype(np.float32) if not runs else runs[0][4].copy()
        state = [w.copy(), np.zeros(n, np.float32), np.zeros(n, np.float32), np.zeros(n, np.int32)]
        g_rng = np.random.default_rng(1)
        sizes = _adam_kernel.step_sizes(table_len, 1e-2, 0.9, 0.99)
        for _ in range(10):
            g = (g_rng.standard_normal(n) * (g_rng.random(n) < 0.7)).astype(np.float32)
            _adam_kernel.sparse_adam(state[0], g, state[1], state[2], state[3], sizes,
                                     1e-2, 0.9, 0.99, 1e-15)
        runs.append((*state, w))
    for a, b in zip(runs[0][:4], runs[1][:4]):
        assert np.array_equal(a, b)
    assert runs[0][3].max() == 10          # counts went past the short table

    gen = torch.Generator().manual_seed(3)
    table = torch.nn.Parameter(torch.rand(4000, generator=gen))
    w, m, v = table.detach().clone(), torch.zeros(4000), torch.zeros(4000)
    steps = torch.zeros(4000, dtype=torch.int32)
    opt = TcnnAdam([{"params": [table], "kind": "encoding"}], AdamConfig(learning_rate=1e-2))
    for lr in (1e-2, 1e-2, 3e-3, 3e-3, 1e-3):
        opt.param_groups[0]["lr"] = lr
        g = torch.randn(4000, generator=gen) * (torch.rand(4000, generator=gen) < 0.5)
        table.grad = g.clone()
        opt.step()
        _adam_update(w, g, m, v, steps, g != 0, lr, 0.9, 0.99, 1e-15, 0.0)
    assert (table.detach() - w).abs().max() <= 1e-6 * w.abs().max()
