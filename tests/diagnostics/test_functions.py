"""Pure diagnostics functions: worked numbers and limit cases."""

import math

import pytest
import torch

from alignment.diagnostics import (
    collapse_stats,
    displacement_stats,
    entanglement_stats,
    first_order_change,
    grad_dot,
    sign_agreement,
)


def test_entanglement_worked_numbers():
    # inner 3, |g_w|^2 2, |g_l|^2 8: cosine 3/4, rho 3/2; chosen predicted down (2 - 3 < 0), rejected down (3 - 8)
    s = entanglement_stats(torch.tensor([3.0]), torch.tensor([2.0]), torch.tensor([8.0]))
    assert s["cosine"].item() == pytest.approx(0.75)
    assert s["rho"].item() == pytest.approx(1.5)
    assert s["norm_w"].item() == pytest.approx(math.sqrt(2))
    assert s["predicted_dlogp_w"].item() == pytest.approx(-1.0)
    assert s["predicted_dlogp_l"].item() == pytest.approx(-5.0)
    assert s["chosen_down"].item() and not s["rejected_up"].item() and s["entangled"].item()


def test_rho_uses_the_smaller_norm_of_both():
    # |g_w|^2 = 8 > |g_l|^2 = 2: the authors' code (|g_w| twice) would give 3/8 and miss "rejected up"
    s = entanglement_stats(torch.tensor([3.0]), torch.tensor([8.0]), torch.tensor([2.0]))
    assert s["rho"].item() == pytest.approx(1.5)
    assert s["rejected_up"].item() and not s["chosen_down"].item()


def test_orthogonal_and_opposite_gradients_are_not_entangled():
    s = entanglement_stats(torch.tensor([0.0, -2.0]), torch.tensor([1.0, 4.0]), torch.tensor([1.0, 1.0]))
    assert not s["entangled"].any()
    assert s["cosine"].tolist() == pytest.approx([0.0, -1.0])
    assert (s["predicted_dlogp_w"] > 0).all() and (s["predicted_dlogp_l"] < 0).all()


def test_identical_gradients_are_entangled_with_rho_one_boundary():
    # g_w = g_l: inner = |g|^2, rho = 1 exactly, neither strictly predicted (the margin step leaves both still)
    s = entanglement_stats(torch.tensor([4.0]), torch.tensor([4.0]), torch.tensor([4.0]))
    assert s["rho"].item() == pytest.approx(1.0) and not s["entangled"].item()
    s = entanglement_stats(torch.tensor([4.0]), torch.tensor([4.0]), torch.tensor([5.0]))
    assert s["chosen_down"].item() is False and s["rejected_up"].item() is False


def test_zero_gradient_gives_finite_values():
    s = entanglement_stats(torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([3.0]))
    assert torch.isfinite(s["cosine"]).all() and torch.isfinite(s["rho"]).all()


def test_grad_dot_and_first_order_change_over_parameter_lists():
    a = [torch.tensor([1.0, 2.0]), None, torch.tensor([[3.0]])]
    b = [torch.tensor([4.0, -1.0]), torch.tensor([9.0]), torch.tensor([[2.0]])]
    assert grad_dot(a, b).item() == pytest.approx(1 * 4 - 2 + 6)
    assert first_order_change(a, b).dtype == torch.float64
    with pytest.raises(ValueError):
        grad_dot(a, b[:2])


def test_first_order_change_is_exact_for_a_linear_function():
    w = torch.randn(5, dtype=torch.float64, requires_grad=True)
    x = torch.randn(5, dtype=torch.float64)
    (g,) = torch.autograd.grad((w * x).sum(), [w])
    delta = torch.randn(5, dtype=torch.float64) * 0.1
    observed = ((w.detach() + delta) * x).sum() - (w.detach() * x).sum()
    assert first_order_change([delta], [g]).item() == pytest.approx(observed.item())


def test_displacement_worked_numbers():
    out = displacement_stats(
        torch.tensor([-1.5, -0.5]), torch.tensor([-5.0, -2.0]), torch.tensor([-1.0, -1.0]), torch.tensor([-3.0, -3.0])
    )
    assert out["chosen_delta"] == pytest.approx(0.0)
    assert out["rejected_delta"] == pytest.approx(-0.5)
    assert out["margin_delta"] == pytest.approx(0.5)
    assert out["chosen_fell_share"] == pytest.approx(0.5)
    assert out["rejected_rose_share"] == pytest.approx(0.5)
    assert displacement_stats(*(torch.zeros(0) for _ in range(4))) == {}


def test_collapse_worked_numbers():
    collapsed = torch.tensor([[True, False, False, True]])
    logps = torch.tensor([[0.0, -0.1, -2.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0]])  # the last position is not scored
    out = collapse_stats(collapsed, logps, mask)
    assert out["softmax_collapse"] == pytest.approx(1 / 3)
    assert out["zero_loss_tokens"] == pytest.approx(1 / 3)
    none = collapse_stats(collapsed, logps, torch.zeros_like(mask))
    assert none == {"softmax_collapse": 0.0, "zero_loss_tokens": 0.0}


def test_sign_agreement():
    assert sign_agreement(torch.tensor([1.0, -1.0, 2.0, -3.0]), torch.tensor([0.5, -2.0, -1.0, 1.0])) == 0.5
    assert math.isnan(sign_agreement(torch.zeros(0), torch.zeros(0)))


def test_the_collapse_finding_names_z_loss(monkeypatch):
    """A run whose softmax collapsed is told what z_loss would do (and its lse^2 when z_loss was on)."""
    from alignment.diagnostics import report

    facts = {"name": "run", "method": "dpo", "chosen_delta": None, "max_collapse": 0.02, "lse_squared": None}
    monkeypatch.setattr(report, "RUN_FINDINGS", [])
    monkeypatch.setattr(report, "run_facts", lambda run: dict(facts))
    line = report.findings([object()])[0]
    assert "2.00% of the scored tokens had a collapsed softmax" in line and "z_loss: 1e-4" in line
    facts["lse_squared"] = 12.5
    assert "here z_loss was on (mean lse^2 12.5)" in report.findings([object()])[0]
    facts["max_collapse"] = 0.0
    assert "no softmax collapse" in report.findings([object()])[0]
