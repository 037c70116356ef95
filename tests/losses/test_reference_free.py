"""CPO / SimPO / AlphaPO and ORPO as pure functions: the docstrings' worked numbers, trl 1.16's own loss
functions (called on the same log-probabilities) as the twin, and the NLL's token mean over chunks."""

from types import SimpleNamespace

import pytest
import torch

from alignment.losses.cpo import CPO_LOSS_TYPES, alphapo_reward, cpo_loss
from alignment.losses.orpo import log1mexp, orpo_loss


def _pairs(k=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    chosen_tokens = torch.randint(1, 9, (k,), generator=g).float()
    rejected_tokens = torch.randint(1, 9, (k,), generator=g).float()
    chosen = -torch.rand(k, generator=g, dtype=torch.float64) * 3 * chosen_tokens
    rejected = -torch.rand(k, generator=g, dtype=torch.float64) * 3 * rejected_tokens
    return chosen, rejected, chosen_tokens.double(), rejected_tokens.double()


def test_cpo_worked_examples():
    c, r, n = torch.tensor([-10.0]), torch.tensor([-14.0]), torch.tensor([4.0])
    losses, metrics = cpo_loss(c, r, n, n, beta=0.1, loss_type="sigmoid")
    assert losses.item() == pytest.approx(0.5130 + 2.5, abs=1e-4)
    assert metrics["nll_loss"].item() == pytest.approx(2.5) and metrics["rewards/chosen"].item() == pytest.approx(-1.0)
    losses, metrics = cpo_loss(c, r, n, n, beta=0.1, loss_type="simpo", cpo_alpha=0.0)
    assert losses.item() == pytest.approx(0.9130, abs=1e-4) and metrics["nll_loss"].item() == 0
    assert metrics["logps/chosen"].item() == pytest.approx(-2.5)  # simpo and ipo read averaged log-probabilities


@pytest.mark.parametrize("loss_type", list(CPO_LOSS_TYPES))
@pytest.mark.parametrize("alpha", [0.0, 0.7, -0.4])
def test_cpo_equals_trls_cpo_loss(loss_type, alpha):
    from trl.experimental.cpo import CPOTrainer

    chosen, rejected, nc, nr = _pairs()
    beta, smoothing, gamma = 0.3, 0.1 if loss_type in ("sigmoid", "simpo") else 0.0, 0.8
    losses, metrics = cpo_loss(chosen, rejected, nc, nr, beta=beta, loss_type=loss_type, label_smoothing=smoothing,
                               simpo_gamma=gamma, alpha=alpha, cpo_alpha=0.0)  # fmt: skip
    averaged = CPO_LOSS_TYPES[loss_type][1]
    c, r = (chosen / nc, rejected / nr) if averaged else (chosen, rejected)
    this = SimpleNamespace(alpha=alpha, beta=beta, loss_type=loss_type, label_smoothing=smoothing, simpo_gamma=gamma,
                           accelerator=SimpleNamespace(device="cpu"))  # fmt: skip
    theirs, chosen_rewards, rejected_rewards = CPOTrainer.cpo_loss(this, c, r)
    torch.testing.assert_close(losses, theirs, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(metrics["rewards/chosen"], chosen_rewards, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(metrics["rewards/rejected"], rejected_rewards, rtol=1e-10, atol=1e-10)


def test_alphapo_reward_is_one_minus_p_to_the_minus_alpha_over_alpha():
    logps = torch.tensor([-0.1, -1.0, -3.0], dtype=torch.float64)
    p = logps.exp()
    torch.testing.assert_close(alphapo_reward(logps, 0.5), (1 - p ** (-0.5)) / 0.5)
    assert torch.equal(alphapo_reward(logps, 0.0), logps)


def test_the_nll_term_is_the_token_mean_over_the_whole_batch_in_any_chunking():
    chosen, rejected, nc, nr = _pairs(k=6)
    whole, metrics = cpo_loss(chosen, rejected, nc, nr, beta=0.2, cpo_alpha=1.0)
    pref, _ = cpo_loss(chosen, rejected, nc, nr, beta=0.2, cpo_alpha=0.0)
    assert (whole - pref).mean().item() == pytest.approx((-chosen.sum() / nc.sum()).item())
    total = nc.sum()
    parts = [cpo_loss(chosen[s], rejected[s], nc[s], nr[s], beta=0.2, token_scale=total, batch_pairs=6)[0]
             for s in (slice(0, 2), slice(2, 6))]  # fmt: skip
    torch.testing.assert_close(torch.cat(parts), whole)
    assert metrics["nll_loss"].mean().item() == pytest.approx((-chosen.sum() / total).item())


def test_cpo_rejects_an_unknown_loss_type():
    c = torch.zeros(1)
    with pytest.raises(ValueError, match="loss_type must be one of"):
        cpo_loss(c, c, c + 1, c + 1, loss_type="kto_pair")


def test_orpo_worked_example_and_trls_odds_ratio_loss():
    from trl.experimental.orpo import ORPOTrainer

    losses, metrics = orpo_loss(torch.tensor([-2.0]), torch.tensor([-2.0]), torch.tensor([4.0]), torch.tensor([2.0]))
    assert losses.item() == pytest.approx(0.5320, abs=1e-4)
    assert metrics["log_odds_chosen"].item() == pytest.approx(0.9741, abs=1e-4)
    chosen, rejected, nc, nr = _pairs()
    losses, metrics = orpo_loss(chosen, rejected, nc, nr, beta=0.25)
    this = SimpleNamespace(beta=0.25, accelerator=SimpleNamespace(device="cpu"))
    theirs, chosen_rewards, _, ratio, log_odds = ORPOTrainer.odds_ratio_loss(this, chosen / nc, rejected / nr)
    nll = -chosen.sum() / nc.sum()
    assert losses.mean().item() == pytest.approx((nll - theirs.mean()).item(), rel=1e-6)
    assert metrics["log_odds_ratio"].mean().item() == pytest.approx(ratio.item(), rel=1e-6)
    assert metrics["log_odds_chosen"].mean().item() == pytest.approx(log_odds.item(), rel=1e-6)
    torch.testing.assert_close(metrics["rewards/chosen"], chosen_rewards.float())


def test_orpo_nll_may_cover_other_tokens_and_stays_finite_at_certainty():
    c, n = torch.tensor([-2.0]), torch.tensor([4.0])
    _, metrics = orpo_loss(c, c, n, n, nll_logps=torch.tensor([-5.0]), nll_tokens=torch.tensor([10.0]))
    assert metrics["nll_loss"].item() == pytest.approx(0.5)
    certain, _ = orpo_loss(torch.zeros(1), torch.tensor([-1.0]), n, n)
    assert torch.isfinite(certain).all()


def test_log1mexp_is_log_of_one_minus_exp_on_both_branches():
    x = torch.tensor([-30.0, -2.0, -0.7, -0.69, -1e-3], dtype=torch.float64)
    torch.testing.assert_close(log1mexp(x), torch.log(1 - torch.exp(x)))
