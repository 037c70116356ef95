"""Repeated two-player games between online learners (Park et al. 2024, arXiv 2403.16843, section 4;
docs/regret.md): two copies of a learner play each other; each sees, after every round, the expected loss of
each of its actions against the other's mixed strategy (full information). When both have no regret in a
two-player zero-sum game, their time-averaged play approaches the Nash equilibrium.

A learner here is any function ``losses [n, t, d] -> policies [n, t, d]`` whose row s depends only on the
losses before s (the baselines of alignment.tasks.online_learning and ``RegretLearner.policies`` all are).

Games (loss matrices in [0, 1], ``row[a, b]`` = the row player's loss when it plays a and the column player
b; ``column[a, b]`` the column player's):

- ``matching_pennies``: the row player loses on a mismatch, the column player on a match; Nash (1/2, 1/2)
  for both;
- ``rock_paper_scissors``: loss (1 - payoff) / 2 (win 0, tie 1/2, lose 1); Nash uniform for both.

The first round is an ``opening`` (by default both players' distributions softmax(3 z), z ~ N(0, I), from the seed),
so that play starts away from the equilibrium; the learners play every later round.

Example::

    out = self_play(lambda l: hedge(l, 0.3), lambda l: hedge(l, 0.3), "matching_pennies", rounds=200)
    out.distance[:, -1]        # TV distance of the time-averaged play to Nash after 200 rounds
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from alignment.tasks.online_learning import next_policy

Learner = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Game:
    name: str
    row: torch.Tensor  # [d, d]
    column: torch.Tensor  # [d, d]
    nash_row: torch.Tensor  # [d]
    nash_column: torch.Tensor  # [d]


def _rps() -> Game:
    beats = torch.tensor([[0, -1, 1], [1, 0, -1], [-1, 1, 0]], dtype=torch.float32)  # rock, paper, scissors
    row = (1 - beats) / 2
    third = torch.full((3,), 1 / 3)
    return Game("rock_paper_scissors", row, row.T.clone(), third, third.clone())


def _pennies() -> Game:
    row = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    half = torch.full((2,), 0.5)
    return Game("matching_pennies", row, 1 - row, half, half.clone())


GAMES = {"matching_pennies": _pennies, "rock_paper_scissors": _rps}


def get_game(name: str) -> Game:
    if name not in GAMES:
        raise ValueError(f"unknown game {name!r}; expected one of {', '.join(GAMES)}")
    return GAMES[name]()


@dataclass
class Play:
    """The record of n repeated games of T rounds: policies and losses per player [n, T, d], the
    time-averaged play [n, T, d] and its total-variation distance to the Nash equilibrium, the larger of
    the two players' [n, T]."""

    game: str
    row_policies: torch.Tensor
    column_policies: torch.Tensor
    row_losses: torch.Tensor
    column_losses: torch.Tensor
    row_average: torch.Tensor
    column_average: torch.Tensor
    distance: torch.Tensor


def _tv(average: torch.Tensor, nash: torch.Tensor) -> torch.Tensor:
    return 0.5 * (average - nash).abs().sum(dim=-1)


def self_play(row: Learner, column: Learner, game: str, rounds: int, n: int = 1, seed: int = 0,
              opening: tuple[torch.Tensor, torch.Tensor] | None = None) -> Play:  # fmt: skip
    """Play ``rounds`` rounds of ``game`` (n games at once) between the ``row`` and ``column`` learners."""
    g = get_game(game)
    d = g.row.shape[0]
    if rounds < 2:
        raise ValueError(f"rounds must be >= 2, got {rounds}")
    if opening is None:
        gen = torch.Generator().manual_seed(seed)
        opening = tuple(torch.softmax(3 * torch.randn(n, d, generator=gen), dim=-1) for _ in range(2))
    p_row, p_col = [opening[0].float()], [opening[1].float()]
    l_row, l_col = [], []
    for t in range(rounds):
        if t > 0:
            p_row.append(next_policy(row, torch.stack(l_row, dim=1)))
            p_col.append(next_policy(column, torch.stack(l_col, dim=1)))
        l_row.append(p_col[t] @ g.row.T)  # l_row[a] = sum_b pi_col[b] row[a, b]
        l_col.append(p_row[t] @ g.column)  # l_col[b] = sum_a pi_row[a] column[a, b]
    pr, pc = torch.stack(p_row, dim=1), torch.stack(p_col, dim=1)
    steps = torch.arange(1, rounds + 1, dtype=torch.float32).view(1, -1, 1)
    ar, ac = pr.cumsum(dim=1) / steps, pc.cumsum(dim=1) / steps
    distance = torch.maximum(_tv(ar, g.nash_row), _tv(ac, g.nash_column))
    return Play(game, pr, pc, torch.stack(l_row, dim=1), torch.stack(l_col, dim=1), ar, ac, distance)
