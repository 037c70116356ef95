"""Repeated games: the loss vectors each player sees, the time-averaged play's distance to Nash, and
no-regret baselines in self-play approaching the equilibrium."""

import pytest
import torch

from alignment.tasks import games
from alignment.tasks import online_learning as ol


def test_loss_vectors_by_hand():
    heads = (torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0]]))
    play = games.self_play(ol.uniform, ol.uniform, "matching_pennies", rounds=3, opening=heads)
    # both open with heads: the row player (wants a match) loses nothing on heads, 1 on tails; the column
    # player (wants a mismatch) the opposite
    assert torch.equal(play.row_losses[0, 0], torch.tensor([0.0, 1.0]))
    assert torch.equal(play.column_losses[0, 0], torch.tensor([1.0, 0.0]))
    rock = torch.tensor([[1.0, 0.0, 0.0]])
    rps = games.self_play(ol.uniform, ol.uniform, "rock_paper_scissors", rounds=2, opening=(rock, rock))
    assert torch.equal(rps.row_losses[0, 0], torch.tensor([0.5, 0.0, 1.0]))  # vs rock: tie, win, lose
    assert torch.allclose(rps.column_losses[0, 1], torch.full((3,), 0.5))  # the row player now uniform


def test_distance_of_the_time_average_by_hand():
    # uniform learners play Nash from round 2 on: the average after t rounds is (opening + (t-1) Nash) / t,
    # so its TV distance to Nash is TV(opening) / t
    opening = (torch.tensor([[0.9, 0.1]]), torch.tensor([[0.3, 0.7]]))
    play = games.self_play(ol.uniform, ol.uniform, "matching_pennies", rounds=10, opening=opening)
    t = torch.arange(1, 11, dtype=torch.float32)
    assert torch.allclose(play.distance[0], 0.4 / t)
    assert torch.allclose(play.row_average[0, -1], torch.tensor([0.54, 0.46]))


@pytest.mark.parametrize("game", ["matching_pennies", "rock_paper_scissors"])
def test_no_regret_self_play_approaches_nash(game):
    hedge = lambda losses: ol.hedge(losses, 0.2)  # noqa: E731
    play = games.self_play(hedge, hedge, game, rounds=300, n=8, seed=3)
    d = play.distance.mean(dim=0)
    assert d[0] > 0.2 and d[-1] < 0.05 and d[-1] < d[19] / 3
    # each player's policy at round t used only the losses of rounds < t: replaying the recorded losses
    # through the learner gives the recorded policies
    assert torch.allclose(hedge(play.row_losses)[:, 1:], play.row_policies[:, 1:], atol=1e-5)


def test_clear_errors():
    with pytest.raises(ValueError, match="unknown game 'chess'"):
        games.get_game("chess")
    with pytest.raises(ValueError, match="rounds must be >= 2"):
        games.self_play(ol.ftl, ol.ftl, "matching_pennies", rounds=1)
