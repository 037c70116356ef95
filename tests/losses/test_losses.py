"""Worked numbers from the loss docstrings, limit identities and gradient checks."""

import math

import pytest
import torch

from alignment.losses import LOSS_VARIANTS, LossVariant, dpo_loss, rpo_loss, rpo_sft_term, sft_loss

T = torch.tensor


def one(x):
    return T([float(x)], dtype=torch.float64)


def worked(loss_type, eps=0.0, **kw):
    losses, metrics = dpo_loss(
        one(-10), one(-12), one(-11), one(-11), beta=0.1, loss_type=loss_type, label_smoothing=eps, **kw
    )
    return losses.item(), metrics


def test_dpo_worked_numbers():
    sig, metrics = worked("sigmoid")
    assert sig == pytest.approx(0.598139, abs=1e-6)
    assert metrics["rewards/chosen"].item() == pytest.approx(0.1)
    assert metrics["rewards/rejected"].item() == pytest.approx(-0.1)
    assert metrics["rewards/margins"].item() == pytest.approx(0.2)
    assert metrics["rewards/accuracies"].item() == 1.0
    assert metrics["logps/chosen"].item() == -10 and metrics["logps/rejected"].item() == -12
    assert worked("sigmoid", 0.1)[0] == pytest.approx(0.618139, abs=1e-6)
    assert worked("hinge")[0] == pytest.approx(0.8)
    assert worked("robust", 0.1)[0] == pytest.approx(0.573139, abs=1e-6)
    ipo, _ = worked("ipo", chosen_tokens=one(2), rejected_tokens=one(4))
    assert ipo == pytest.approx(18.0625)


def test_dpo_limits_and_errors():
    # robust with eps = 0 and cDPO with eps = 0 are plain sigmoid DPO
    assert worked("robust", 0.0)[0] == pytest.approx(worked("sigmoid")[0])
    # a zero margin gives log 2
    losses, _ = dpo_loss(one(-3), one(-3), one(-3), one(-3))
    assert losses.item() == pytest.approx(math.log(2))
    with pytest.raises(ValueError, match="loss_type"):
        dpo_loss(one(0), one(0), one(0), one(0), loss_type="kto")
    with pytest.raises(ValueError, match="chosen_tokens"):
        dpo_loss(one(0), one(0), one(0), one(0), loss_type="ipo")


def test_dpo_gradient_matches_the_closed_form():
    # d(-log sigmoid(m))/d logp_w = -beta * sigmoid(-m)
    w = one(-10).requires_grad_()
    losses, _ = dpo_loss(w, one(-12), one(-11), one(-11), beta=0.1)
    losses.sum().backward()
    assert w.grad.item() == pytest.approx(-0.1 * torch.sigmoid(T(-0.2, dtype=torch.float64)).item())


@pytest.mark.parametrize("loss_type", list(LOSS_VARIANTS))
def test_dpo_gradcheck(loss_type):
    gen = torch.Generator().manual_seed(0)
    args = [torch.randn(5, generator=gen, dtype=torch.float64, requires_grad=i < 2) * 3 for i in range(4)]
    counts = torch.tensor([3.0, 1, 4, 2, 5], dtype=torch.float64)

    def fn(w, lose):
        return dpo_loss(
            w,
            lose,
            args[2],
            args[3],
            beta=0.2,
            loss_type=loss_type,
            label_smoothing=0.1,
            chosen_tokens=counts,
            rejected_tokens=counts + 1,
        )[0]

    assert torch.autograd.gradcheck(fn, (args[0].detach().requires_grad_(), args[1].detach().requires_grad_()))


def test_rpo_worked_numbers_for_each_normalization():
    chosen, tokens = one(-50), one(100)
    assert rpo_sft_term(chosen, tokens, 0.005, 0.1, "sum").item() == pytest.approx(0.025)
    assert rpo_sft_term(chosen, tokens, 0.005, 0.1, "seq_mean").item() == pytest.approx(0.0025)
    assert rpo_sft_term(chosen, tokens, 0.005, 0.1, "token_mean").item() == pytest.approx(0.0025)
    # token_mean and seq_mean differ when lengths differ: sums -10 (10 tokens) and -90 (30 tokens)
    c, n = T([-10.0, -90.0]), T([10.0, 30.0])
    assert rpo_sft_term(c, n, 1.0, 0.1, "seq_mean").mean().item() == pytest.approx((1 + 3) / 2)
    assert rpo_sft_term(c, n, 1.0, 0.1, "token_mean").mean().item() == pytest.approx(100 / 40)
    # the global token count (several processes / accumulation steps) replaces the local one
    assert rpo_sft_term(c, n, 1.0, 0.1, "token_mean", total_chosen_tokens=80).mean().item() == pytest.approx(100 / 80)
    with pytest.raises(ValueError, match="sft_normalization"):
        rpo_sft_term(c, n, 1.0, 0.1, "mean")


@pytest.mark.parametrize("norm", ["sum", "seq_mean", "token_mean"])
def test_rpo_with_eta_zero_is_dpo(norm):
    gen = torch.Generator().manual_seed(1)
    w, lo, rw, rl = (torch.randn(6, generator=gen) * 4 for _ in range(4))
    n = torch.randint(1, 9, (6,), generator=gen).float()
    rpo, rpo_metrics = rpo_loss(w, lo, rw, rl, n, beta=0.3, eta=0.0, sft_normalization=norm)
    dpo, _ = dpo_loss(w, lo, rw, rl, beta=0.3)
    assert torch.equal(rpo, dpo) and torch.all(rpo_metrics["rpo/sft_term"] == 0)


def test_rpo_gradient_of_the_sft_term():
    # sum: d/d logp_w of eta*beta*(-logp_w) = -eta*beta on top of DPO's
    w = T([-10.0], dtype=torch.float64, requires_grad=True)
    rpo_loss(w, one(-12), one(-11), one(-11), one(5), beta=0.1, eta=0.5)[0].sum().backward()
    dpo_grad = -0.1 * torch.sigmoid(T(-0.2, dtype=torch.float64)).item()
    assert w.grad.item() == pytest.approx(dpo_grad - 0.05)


def test_sft_loss_worked_example_and_global_count():
    logps = T([-1.0, -2.0, 0.0, -3.0])
    mask = T([1.0, 1.0, 0.0, 1.0])
    loss, metrics = sft_loss(logps, mask)
    assert loss.item() == pytest.approx(2.0) and metrics["nll_per_token"].item() == pytest.approx(2.0)
    assert sft_loss(logps, mask, total_tokens=6)[0].item() == pytest.approx(1.0)
    assert sft_loss(logps * 0, mask * 0)[0].item() == 0.0


def test_the_variant_table_drives_validation_help_and_the_loss(monkeypatch, tmp_path):
    """One entry in LOSS_VARIANTS is all a new variant needs: dpo_loss and DPOConfig's validation read the
    table when called; the help text lists every entry."""
    from alignment.trainers import DPOConfig

    help_text = next(f for f in DPOConfig.__dataclass_fields__.values() if f.name == "loss_type").metadata["help"]
    assert all(f"{name}:" in help_text for name in LOSS_VARIANTS)
    with pytest.raises(ValueError, match="loss_type must be one of"):
        DPOConfig(output_dir=str(tmp_path), use_cpu=True, loss_type="squared")
    squared = LossVariant(lambda r: (1 - r.margin) ** 2, "(1 - m)^2 (a test variant)")
    monkeypatch.setitem(LOSS_VARIANTS, "squared", squared)
    assert DPOConfig(output_dir=str(tmp_path), use_cpu=True, loss_type="squared").loss_type == "squared"
    losses, _ = dpo_loss(one(-10), one(-12), one(-11), one(-11), beta=0.1, loss_type="squared")
    assert losses.item() == pytest.approx(0.64)  # m = 0.2


def test_a_variant_that_needs_token_counts_says_so():
    assert [name for name, v in LOSS_VARIANTS.items() if v.needs_token_counts] == ["ipo", "sigmoid_norm"]
