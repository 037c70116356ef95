"""The regret-loss: a soft maximum of squared positive regrets (docs/regret.md)."""

import pytest
import torch

from alignment.losses.regret import regret_loss


def test_worked_example_and_limits():
    loss, metrics = regret_loss(torch.tensor([1.0, -2.0]), k=1.0)
    assert loss.item() == pytest.approx(torch.e / (torch.e + torch.e**-2), rel=1e-6)
    regrets = torch.tensor([0.5, 2.0, -1.0, 1.5])
    assert regret_loss(regrets, k=0.0)[0].item() == pytest.approx((0.25 + 4.0 + 0.0 + 2.25) / 4)  # the mean
    assert regret_loss(regrets, k=200.0)[0].item() == pytest.approx(4.0, rel=1e-6)  # h(max R)
    assert regret_loss(torch.tensor([1e4, 1.0]), k=50.0)[0].item() == pytest.approx(1e8)  # no overflow
    assert metrics["regret/max"].item() == 1.0 and metrics["regret/mean"].item() == -0.5


def test_horizons_are_summed_and_gradcheck():
    curves = torch.tensor([[0.1, 0.5, 1.0], [0.2, -0.3, 0.4]])
    total = sum(regret_loss(curves[:, t], k=2.0)[0] for t in range(3))
    assert regret_loss(curves, k=2.0)[0].item() == pytest.approx(total.item())
    x = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda r: regret_loss(r, k=1.5)[0], (x + 0.3,))


def test_bad_input():
    with pytest.raises(ValueError, match="k must be >= 0"):
        regret_loss(torch.zeros(3), k=-1.0)
    with pytest.raises(ValueError, match="regrets must be"):
        regret_loss(torch.zeros(2, 2, 2))
