"""Online-learning environments and baselines on hand-computed sequences (docs/regret.md)."""

import math

import pytest
import torch

from alignment.tasks import online_learning as ol
from tests.helpers import FRESH_SEED


def alternating(horizon):
    """The classic sequence on which Follow-the-Leader has linear regret: (0.5, 0), then (0, 1), (1, 0), ..."""
    rounds = [[0.5, 0.0]] + [[0.0, 1.0] if t % 2 else [1.0, 0.0] for t in range(1, horizon)]
    return torch.tensor([rounds])


def test_ftl_regret_on_the_alternating_sequence_grows_as_t_over_2():
    for horizon in (10, 11, 50, 51):
        losses = alternating(horizon)
        # FTL: uniform at t = 1 (pays 0.25), then always the leader, which loses 1
        paid = 0.25 + (horizon - 1)
        best = min(0.5 + (horizon - 1) // 2, (horizon - 1) - (horizon - 1) // 2)
        assert ol.regret(ol.ftl(losses), losses).item() == pytest.approx(paid - best)
        assert ol.regret(ol.ftl(losses), losses).item() == pytest.approx(horizon / 2, abs=1.0)
    # the adversarial family with d = 2 and this first round is exactly that sequence
    generated = ol.make_losses("adversarial", 1, 12, 2, seed=0)
    generated[0, 0] = torch.tensor([0.5, 0.0])
    for t in range(1, 12):  # regenerate after the first round from the FTL rule
        total = generated[0, :t].sum(0)
        generated[0, t] = torch.nn.functional.one_hot(total.argmin(), 2).float()
    assert torch.equal(generated, alternating(12))


def test_the_adversarial_family_gives_ftl_linear_regret_and_hedge_sublinear():
    for d in (2, 3, 5):
        losses = ol.make_losses("adversarial", 32, 100, d, seed=1)
        ftl_regret = ol.regret(ol.ftl(losses), losses)
        assert ftl_regret.mean().item() == pytest.approx(99 * (1 - 1 / d), rel=0.05)
        assert ol.growth_exponent(ol.regret_curve(ol.ftl(losses), losses)) > 0.95
        lr = ol.default_hedge_lr(100, d)
        hedge = ol.regret(ol.hedge(losses, lr), losses)
        assert (hedge <= math.sqrt(100 * math.log(d) / 2) + 1e-4).all()  # Hedge's worst-case bound


def test_hedge_by_hand_and_policies_use_only_the_past():
    losses = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]])
    pi = ol.hedge(losses, lr=math.log(2.0))
    assert torch.allclose(pi[0, 0], torch.tensor([0.5, 0.5]))
    assert torch.allclose(pi[0, 1], torch.tensor([1 / 3, 2 / 3]))  # weights (1/2, 1) after l_1
    assert torch.allclose(pi[0, 2], torch.tensor([0.5, 0.5]))
    # changing round t's loss never changes the policies up to and including round t
    big = ol.make_losses("uniform", 4, 20, 3, seed=2)
    changed = big.clone()
    changed[:, 10] = 1.0 - changed[:, 10]
    for policy in (ol.ftl, lambda x: ol.hedge(x, 0.5), lambda x: ol.ftpl(x, seed=3), ol.uniform):
        a, b = policy(big), policy(changed)
        assert (torch.equal(a[:, :11], b[:, :11]) and not torch.equal(a, b)) or policy is ol.uniform
        assert torch.allclose(a.sum(-1), torch.ones(4, 20))


def test_regret_by_hand_and_the_families():
    losses = torch.tensor([[[0.2, 0.8], [0.6, 0.4]]])
    policies = torch.tensor([[[1.0, 0.0], [0.5, 0.5]]])
    assert ol.regret_curve(policies, losses)[0].tolist() == pytest.approx([0.0, 0.7 - 0.8])
    for family in ol.FAMILIES:
        x = ol.make_losses(family, 8, 30, 4, seed=5)
        assert x.shape == (8, 30, 4) and x.min() >= 0 and x.max() <= 1
        assert torch.equal(x, ol.make_losses(family, 8, 30, 4, seed=5))
        assert not torch.equal(x, ol.make_losses(family, 8, 30, 4, seed=6))
    with pytest.raises(ValueError, match="unknown loss family"):
        ol.make_losses("cyclic", 1, 2, 2)


def test_best_hedge_lr_generalizes_to_held_out_sequences():
    def mean_regret(policy, losses):
        return ol.regret(policy(losses), losses).mean().item()

    # i.i.d. losses with a fixed best action: a large rate (close to FTL) is best
    lr = ol.best_hedge_lr(ol.make_losses("gaussian", 256, 50, 3, seed=7))
    held = ol.make_losses("gaussian", 256, 50, 3, seed=8)
    best = mean_regret(lambda x: ol.hedge(x, lr), held)
    assert best < mean_regret(ol.uniform, held) / 5 and best < mean_regret(lambda x: ol.ftpl(x, seed=1), held)
    assert best <= mean_regret(lambda x: ol.hedge(x, ol.default_hedge_lr(50, 3)), held)
    # FTL's adversary: a small rate is best, far below FTL's linear regret
    lr = ol.best_hedge_lr(ol.make_losses("adversarial", 256, 50, 3, seed=7))
    held = ol.make_losses("adversarial", 256, 50, 3, seed=8)
    assert lr < 1.0 and mean_regret(lambda x: ol.hedge(x, lr), held) < mean_regret(ol.ftl, held) / 10


def test_adaptive_adversary_targets_each_learner():
    """Loss 1 on the learner's likeliest action: FTL and uniform (ties to the first action) pay about 1 and 1/d a
    round with a best action at ~0, Hedge stays within its worst-case bound; the record is the learner's play."""
    horizon, d = 60, 3
    losses, policies = ol.adaptive_adversary(ol.ftl, 8, horizon, d, seed=FRESH_SEED)
    assert torch.equal(policies, ol.ftl(losses))  # the adversary records what the learner played
    assert (ol.regret(policies, losses) > 0.6 * horizon).all()
    losses, policies = ol.adaptive_adversary(ol.uniform, 8, horizon, d, seed=FRESH_SEED)
    assert (losses[:, 1:, 0] == 1).all() and ol.regret(policies, losses).mean() > horizon / d - 2
    lr = ol.default_hedge_lr(horizon, d)
    losses, policies = ol.adaptive_adversary(lambda x: ol.hedge(x, lr), 8, horizon, d, seed=FRESH_SEED)
    assert (ol.regret(policies, losses) <= math.sqrt(horizon * math.log(d) / 2) + 1e-4).all()
