"""The INPO loss (arXiv 2407.00617): worked numbers, its reductions (t = 1: IPO; tau = 0; tau = eta), gradcheck."""

import pytest
import torch

from alignment.losses import dpo_loss
from alignment.losses.inpo import inpo_loss
from tests.helpers import FRESH_SEED


def logps(n=6, seed=FRESH_SEED, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [(-5 * torch.rand(n, generator=g, dtype=dtype) - 1) for _ in range(6)]


def test_worked_example_of_the_docstring():
    t = torch.tensor
    losses, metrics = inpo_loss(t([-1.0]), t([-3.0]), t([-2.0]), t([-2.0]), t([-1.5]), t([-2.5]), eta=0.5, tau=0.25)
    assert losses.item() == pytest.approx(0.25)
    assert metrics["inpo/h"].item() == pytest.approx(1.5)
    assert metrics["inpo/margin_vs_ref"].item() == pytest.approx(2.0)
    assert metrics["inpo/margin_vs_prev"].item() == pytest.approx(1.0)
    default, _ = inpo_loss(t([-1.0]), t([-3.0]), t([-2.0]), t([-2.0]), t([-1.5]), t([-2.5]), eta=0.5)  # tau = eta/3
    h = 2 - (1 / 3) * 0 - (2 / 3) * 1
    assert default.item() == pytest.approx((h - 1) ** 2)


def test_first_iteration_is_ipo_on_sequence_sums():
    pc, pr, rc, rr, _, _ = logps()
    eta = 0.05
    inpo, _ = inpo_loss(pc, pr, rc, rr, rc, rr, eta=eta, tau=eta / 3)  # pi_1 = pi_ref
    ones = torch.ones_like(pc)  # token counts 1: the IPO variant's length normalization is the identity
    ipo, _ = dpo_loss(pc, pr, rc, rr, beta=eta, loss_type="ipo", chosen_tokens=ones, rejected_tokens=ones)
    assert torch.allclose(inpo, ipo, rtol=1e-5, atol=1e-4)


def test_tau_zero_ignores_the_reference_and_tau_eta_ignores_the_previous_iterate():
    pc, pr, rc, rr, qc, qr = (x.requires_grad_() for x in logps(dtype=torch.float64))
    inpo_loss(pc, pr, rc, rr, qc, qr, eta=0.1, tau=0.0)[0].sum().backward()
    assert torch.count_nonzero(rc.grad) == 0 and torch.count_nonzero(rr.grad) == 0
    assert torch.count_nonzero(qc.grad) > 0
    for x in (rc, rr, qc, qr):
        x.grad = None
    inpo_loss(pc, pr, rc, rr, qc, qr, eta=0.1, tau=0.1)[0].sum().backward()
    assert qc.grad is None or torch.count_nonzero(qc.grad) == 0
    assert torch.count_nonzero(rc.grad) > 0


def test_gradcheck_and_errors():
    inputs = [x.requires_grad_() for x in logps(n=4, dtype=torch.float64)]
    assert torch.autograd.gradcheck(lambda *x: inpo_loss(*x, eta=0.2, tau=0.05)[0], inputs)
    with pytest.raises(ValueError, match="tau must be in"):
        inpo_loss(*logps(), eta=0.1, tau=0.2)
    with pytest.raises(ValueError, match="eta must be > 0"):
        inpo_loss(*logps(), eta=0.0)
