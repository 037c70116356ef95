"""The numeric-mode learner: a causal LM over loss vectors, trained with the regret-loss in a plain loop."""

import torch

from alignment.learners.regret_learner import NumericRegretLearner
from alignment.losses.regret import regret_loss
from alignment.tasks import online_learning as ol
from tests.helpers import FRESH_SEED


def test_policies_are_distributions_that_see_only_the_past():
    torch.manual_seed(FRESH_SEED)
    learner = NumericRegretLearner(3)
    losses = ol.make_losses("uniform", 4, 12, 3, seed=FRESH_SEED)
    pi = learner(losses)
    assert pi.shape == (4, 12, 3) and torch.allclose(pi, torch.full_like(pi, 1 / 3))  # untrained: uniform
    torch.nn.init.normal_(learner.head.weight)
    changed = losses.clone()
    changed[:, 6] = 1.0 - changed[:, 6]
    assert torch.allclose(learner(losses).sum(-1), torch.ones(4, 12))
    # compared before the softmax, which a random head may saturate
    a, b = learner.scores(losses), learner.scores(changed)
    assert torch.allclose(a[:, :7], b[:, :7], atol=1e-5) and (a[:, 7:] - b[:, 7:]).abs().amax() > 1e-3


def test_the_regret_loss_teaches_it_to_beat_uniform_on_held_out_sequences():
    torch.manual_seed(FRESH_SEED % 1000)
    learner = NumericRegretLearner(3)
    opt = torch.optim.Adam(learner.parameters(), lr=1e-3)
    held = ol.make_losses("gaussian", 128, 20, 3, seed=10_000 + FRESH_SEED % 1000)
    for step in range(80):
        x = ol.make_losses("gaussian", 32, 20, 3, seed=FRESH_SEED % 1000 + step)
        loss, _ = regret_loss(ol.regret_curve(learner(x), x), k=1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        trained = ol.regret(learner(held), held).mean()
    assert trained < 0.75 * ol.regret(ol.uniform(held), held).mean()
