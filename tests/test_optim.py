"""tiny-cuda-nn's Adam: zero-gradient table entries untouched, L2 on MLP weights only."""
from __future__ import annotations

import pytest
import torch

from ngp_engine.config import AdamConfig
from ngp_engine.optim import TcnnAdam


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
