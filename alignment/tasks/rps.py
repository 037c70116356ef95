"""Rock-paper-scissors: "Play rock, paper or scissors." -> one move word, with a little free text.

A general, intransitive preference: paper > rock, scissors > paper, rock > scissors, the same move 0.5,
a valid move beats a response without exactly one move, two invalid responses tie. No Bradley-Terry
reward explains it; the Nash policy is uniform over the three moves.
Metrics: the distribution over moves, the total-variation distance to uniform and the exploitability
max_y P(y > pi) - 1/2 (0 at the Nash policy, 1/2 for a policy that always plays the same move).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from alignment.tasks.base import Task

MOVES = ("rock", "paper", "scissors")
BEATS = {"paper": "rock", "scissors": "paper", "rock": "scissors"}  # key beats value
_MOVE = re.compile(r"\b(rock|paper|scissors)\b")
_TEMPLATES = ("{m}", "{M}!", "I play {m}.", "My move is {m}.", "Let me go with {m}.", "{M}, final answer.")
_INVALID = ("I pass.", "Hmm, let me think.", "No move this time.", "Pick one for me.")
_PREFIXES = ("Round {k}. ", "Game {k}: ", "Match {k}. ")


def parse_move(response: str) -> str | None:
    """The one move named in the response, or None when it names none or more than one."""
    found = set(_MOVE.findall(response.lower()))
    return found.pop() if len(found) == 1 else None


def move_preference(a: str | None, b: str | None) -> float:
    """P(a > b) for two parsed moves (None = invalid)."""
    if a == b:
        return 0.5
    if a is None or b is None:
        return 0.0 if a is None else 1.0
    return 1.0 if BEATS[a] == b else 0.0


class RPSTask(Task):
    name = "rps"
    max_new_tokens = 12
    default_noise = 0.05
    pair_noise = 0.05

    def __init__(self, rounds: int = 3000, move_probs: Sequence[float] = (0.5, 0.3, 0.2)):
        if len(move_probs) != 3 or abs(sum(move_probs) - 1.0) > 1e-9 or min(move_probs) < 0:
            raise ValueError(f"move_probs must be 3 non-negative numbers summing to 1, got {move_probs}")
        self.rounds = rounds
        # The reference policy is biased (rock-heavy), so that self-play has a Nash gap to close.
        self.move_probs = tuple(move_probs)

    def all_prompts(self) -> list[str]:
        return [f"{p.format(k=k)}Play rock, paper or scissors." for p in _PREFIXES for k in range(1, self.rounds + 1)]

    def reference_response(self, prompt: str, rng: random.Random, noise: float | None = None) -> str:
        noise = self.default_noise if noise is None else noise
        if rng.random() < noise:
            return rng.choice(_INVALID)
        move = rng.choices(MOVES, weights=self.move_probs)[0]
        return rng.choice(_TEMPLATES).format(m=move, M=move.capitalize())

    def preference(self, prompt: str, a: str, b: str) -> float:
        return move_preference(parse_move(a), parse_move(b))

    def metrics(self, prompts: Sequence[str], responses: Sequence[str]) -> dict[str, float]:
        n = max(len(responses), 1)
        moves = [parse_move(r) for r in responses]
        dist = {m: sum(x == m for x in moves) / n for m in MOVES}
        invalid = sum(x is None for x in moves) / n
        tv = 0.5 * (sum(abs(dist[m] - 1 / 3) for m in MOVES) + invalid)
        # P(y > pi) for each pure move y: beats what it beats, ties itself, beats every invalid response.
        win = {y: dist[BEATS[y]] + 0.5 * dist[y] + invalid for y in MOVES}
        out = {f"p_{m}": dist[m] for m in MOVES}
        out.update(
            invalid_rate=invalid,
            tv_to_uniform=tv,
            exploitability=max(win.values()) - 0.5,
            n=float(len(moves)),
        )
        return out
