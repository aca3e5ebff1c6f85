"""fp16 with several optimisers: one loss-scale update per training step (coz/train_sr/amp.py)."""

from __future__ import annotations

import torch

from coz.train_sr.amp import step_with_one_scale


def test_an_overflow_in_one_optimiser_halves_the_scale_once_and_the_others_step_with_true_gradients():
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=1)
    scaler.scale(torch.ones(1))  # as the scaled backward of a training step does, this sets the scale up
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt_a, opt_b = torch.optim.SGD([a], lr=1.0), torch.optim.SGD([b], lr=1.0)
    a.grad = torch.tensor([float("inf")])  # the first optimiser's gradients overflowed
    b.grad = torch.tensor([1.0]) * scaler.get_scale()  # a true gradient of 1, scaled as backward leaves it
    step_with_one_scale(scaler, [opt_a, opt_b])
    assert a.item() == 0.0  # skipped
    assert b.item() == -1.0  # stepped with the true gradient (Lightning's per-optimiser update: -2)
    assert scaler.get_scale() == 512.0  # halved once
    assert a.grad is None and b.grad is None


def test_clipping_applies_to_the_true_gradients_and_the_scale_grows_once():
    scaler = torch.amp.GradScaler("cpu", init_scale=8.0, growth_interval=1)
    scaler.scale(torch.ones(1))
    w = torch.nn.Parameter(torch.zeros(2))
    v = torch.nn.Parameter(torch.zeros(1))
    opt_w, opt_v = torch.optim.SGD([w], lr=1.0), torch.optim.SGD([v], lr=1.0)
    w.grad = torch.tensor([3.0, 4.0]) * 8.0  # norm 5 before scaling
    v.grad = torch.tensor([0.5]) * 8.0
    step_with_one_scale(scaler, [opt_w, opt_v], max_norm=1.0)
    torch.testing.assert_close(w.detach(), torch.tensor([-0.6, -0.8]))
    torch.testing.assert_close(v.detach(), torch.tensor([-0.5]))
    assert scaler.get_scale() == 16.0  # one growth step, not two
