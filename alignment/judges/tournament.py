"""Ranking K candidates per prompt into one (winner, loser) pair: the knockout tournament for pairwise judges
(INPO, Zhang et al. 2024, section 4) and best/worst of K for pointwise ones (reward models)."""

from __future__ import annotations

import random
from collections.abc import Sequence

Pair = tuple[int, int] | None


class _Bracket:
    """One prompt's tournament: the winners' and the losers' brackets, then the final."""

    def __init__(self, k: int):
        self.k, self.phase = k, "split" if k >= 2 else "done"
        self.winners: list[int] = []
        self.losers: list[int] = []
        self.result: Pair = None

    def matches(self) -> list[tuple[str, int, int]]:
        """This round's matches: (kind, a, b), kind "split", "win", "lose" or "final"."""
        if self.phase == "split":
            return [("split", i, i + 1) for i in range(0, self.k - 1, 2)]
        if self.phase == "brackets":
            out = [("win", *self.winners[i : i + 2]) for i in range(0, len(self.winners) - 1, 2)]
            return out + [("lose", *self.losers[i : i + 2]) for i in range(0, len(self.losers) - 1, 2)]
        if self.phase == "final":
            return [("final", self.winners[0], self.losers[0])]
        return []

    def apply(self, played: list[tuple[str, int, int, bool]]) -> None:
        """Advance by the outcomes (kind, a, b, a_won) of this round's matches."""
        if self.phase == "split":
            for _, a, b, a_won in played:
                self.winners.append(a if a_won else b)
                self.losers.append(b if a_won else a)
            if self.k % 2:  # the odd one out has not played: it enters both brackets
                self.winners.append(self.k - 1)
                self.losers.append(self.k - 1)
        elif self.phase == "brackets":
            win = [a if a_won else b for kind, a, b, a_won in played if kind == "win"]
            lose = [b if a_won else a for kind, a, b, a_won in played if kind == "lose"]
            self.winners = win + self.winners[len(self.winners) - len(self.winners) % 2 :]  # a bye carries over
            self.losers = lose + self.losers[len(self.losers) - len(self.losers) % 2 :]
        elif self.phase == "final":
            (_, w, l_, w_won), = played  # fmt: skip
            self.result = (w, l_) if w_won else None
            self.phase = "done"
            return
        if len(self.winners) == 1 and len(self.losers) == 1:
            same = self.winners[0] == self.losers[0]
            self.phase = "done" if same else "final"
        else:
            self.phase = "brackets"


def knockout(prompts: Sequence[str], candidates: Sequence[Sequence[str]], judge, seed: int = 0,
             sample: bool = False) -> list[Pair]:  # fmt: skip
    """(winner index, loser index) per prompt, or None: the knockout tournament over its K candidates.

    Round 1 splits the K into K/2 pairs; then winners play winners and losers play losers (an odd one out
    gets a bye) until one final winner and one final loser remain; they meet in a final and the pair is kept
    only if the winner wins it. With a total order the winner is the best candidate and the loser the worst,
    in at most 2K comparisons (1.5K - 1 for even K). Every round of every prompt goes to the judge in ONE call;
    a pair that already met is not judged again. A match goes to the side the judge prefers (P(a > b) > 0.5;
    ties by a coin seeded with ``seed``), or with ``sample=True`` to a with probability P(a > b). A final
    that is a tie, and a prompt with fewer than 2 candidates, give None.
    """
    if len(prompts) != len(candidates):
        raise ValueError(f"{len(prompts)} prompts but {len(candidates)} candidate lists")
    rng = random.Random(seed)
    brackets = [_Bracket(len(c)) for c in candidates]
    known: dict[tuple[int, int, int], float] = {}
    while True:
        rounds = [(i, m) for i, b in enumerate(brackets) for m in b.matches()]
        if not rounds:
            break
        todo = sorted({(i, a, b) for i, (_, a, b) in rounds if (i, a, b) not in known and (i, b, a) not in known})
        if todo:
            verdicts = judge([prompts[i] for i, _, _ in todo], [candidates[i][a] for i, a, _ in todo],
                             [candidates[i][b] for i, _, b in todo])  # fmt: skip
            if len(verdicts) != len(todo):
                raise ValueError(f"the judge returned {len(verdicts)} verdicts for {len(todo)} comparisons")
            known.update(zip(todo, (float(v) for v in verdicts)))
        played: dict[int, list] = {}
        for i, (kind, a, b) in rounds:
            p = known[(i, a, b)] if (i, a, b) in known else 1.0 - known[(i, b, a)]
            if sample:
                a_won = rng.random() < p
            elif p == 0.5:
                a_won = False if kind == "final" else rng.random() < 0.5  # a tied final keeps no pair
            else:
                a_won = p > 0.5
            played.setdefault(i, []).append((kind, a, b, a_won))
        for i, outcomes in played.items():
            brackets[i].apply(outcomes)
    return [b.result for b in brackets]


def best_and_worst(prompts: Sequence[str], candidates: Sequence[Sequence[str]], judge) -> list[Pair]:
    """(index of the best, index of the worst) by a pointwise judge's ``scores`` (one call for all), or None
    when a prompt has fewer than 2 candidates or all its scores tie."""
    flat_prompts = [p for p, c in zip(prompts, candidates) for _ in c]
    scores = judge.scores(flat_prompts, [r for c in candidates for r in c])
    out, start = [], 0
    for c in candidates:
        s = scores[start : start + len(c)]
        start += len(c)
        best = max(range(len(s)), key=s.__getitem__) if s else 0
        worst = min(range(len(s)), key=s.__getitem__) if s else 0
        out.append((best, worst) if len(s) >= 2 and s[best] > s[worst] else None)
    return out


def rank_candidates(prompts, candidates, judge, seed: int = 0, sample: bool = False) -> list[Pair]:
    """best/worst of K for a pointwise judge (one with ``scores``), the knockout tournament otherwise."""
    if hasattr(judge, "scores"):
        return best_and_worst(prompts, candidates, judge)
    return knockout(prompts, candidates, judge, seed=seed, sample=sample)
