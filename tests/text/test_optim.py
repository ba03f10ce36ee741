"""The shared training loop (``kdtutorial.text.optim``): what it returns, and the copies it makes without waiting.

``train_steps`` keeps each step's loss on the device and hands back plain floats at the end; they must be the
losses a by-hand loop with the same optimiser and schedule computes. ``to_device`` must give the same tensor on
any device (the page-locked path is checked only where a GPU is present).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from kdtutorial.text import optim

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # fixture in conftest.py


def data(n: int = 24, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g, dtype=torch.float64)
    y = x @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64) + 0.1 * torch.randn(n, generator=g, dtype=torch.float64)
    return x, y


def batches_of(x, batch_size):
    def batches(epoch):
        order = np.random.default_rng(epoch).permutation(len(x))
        for start in range(0, len(x), batch_size):
            rows = order[start : start + batch_size]
            yield rows, (x[rows],)
    return batches


def test_train_steps_returns_each_steps_loss_as_a_float():
    x, y = data()
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1, dtype=torch.float64)
    reference = torch.nn.Linear(3, 1, dtype=torch.float64)
    reference.load_state_dict(model.state_dict())

    def loss_of(logits, rows):
        return ((logits.squeeze(-1) - optim.to_device(y[rows], logits.device)) ** 2).mean()

    losses = optim.train_steps(model, batches_of(x, 5), loss_of, n_rows=len(x), epochs=2, batch_size=5, lr=0.05,
                               weight_decay=0.01, warmup=0.2, device="cpu", progress=False)
    assert all(type(v) is float for v in losses)
    assert len(losses) == optim.planned_steps(len(x), 5, 2) == 10

    optimiser, schedule = optim.adamw_with_warmup(reference.parameters(), lr=0.05, weight_decay=0.01, warmup=0.2,
                                                  steps=10, device="cpu")
    by_hand = []
    for epoch in range(2):
        for rows, (xb,) in batches_of(x, 5)(epoch):
            loss = loss_of(reference(xb).float(), rows)  # the loop hands loss_of float32 logits
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            by_hand.append(loss.item())
    np.testing.assert_allclose(losses, by_hand, rtol=1e-12)
    assert not model.training
    assert optim.train_steps(model, lambda epoch: iter(()), loss_of, n_rows=0, epochs=1, batch_size=5, lr=0.05,
                             weight_decay=0.0, warmup=0.1, device="cpu", progress=False) == []


def test_to_device_copies_exactly():
    t = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    same = optim.to_device(t, "cpu")
    assert torch.equal(same, t)
    if torch.cuda.is_available():
        on_gpu = optim.to_device(t[[2, 0]], "cuda")
        assert on_gpu.device.type == "cuda"
        assert torch.equal(on_gpu.cpu(), t[[2, 0]])
        assert torch.equal(optim.to_device(on_gpu, "cuda"), on_gpu)
