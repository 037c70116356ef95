"""Arithmetic: "What is 37 + 58?" -> "95".

Score = -|answer - truth|, an unparseable answer scores -inf (the worst). The preference is
Bradley-Terry-consistent (hard by default, sigmoid of the score difference with ``temperature`` > 0).
Metric: exact-match accuracy of the answers on held-out prompts.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence

from alignment.tasks.base import Task, bt_preference

_PROMPT = re.compile(r"What is (\d+) \+ (\d+)\?")
_NUMBER = re.compile(r"-?\d+")


def parse_prompt(prompt: str) -> tuple[int, int]:
    match = _PROMPT.fullmatch(prompt.strip())
    if match is None:
        raise ValueError(f"not an arithmetic prompt: {prompt!r}")
    return int(match.group(1)), int(match.group(2))


def has_carry(a: int, b: int) -> bool:
    """Whether adding the units digits carries into the tens."""
    return a % 10 + b % 10 >= 10


def parse_answer(response: str) -> int | None:
    """The first integer in the response, or None when there is none."""
    match = _NUMBER.search(response)
    return int(match.group(0)) if match else None


class ArithmeticTask(Task):
    """Two-digit addition with a systematically wrong reference policy.

    The noisy reference's errors are systematic, as a weak model's are: it confuses carries. It forgets the
    carry on carry prompts (answer - 10) and, more rarely, adds one where there is none (answer + 10).
    ``noise`` is the share of wrong answers over all prompts: 90% of the errors are forgotten carries. With
    operands in 0..99, 45% of the prompts carry, so at the default noise 0.3 the reference forgets the
    carry on 60% of the carry prompts (its most likely answer there is wrong, so an SFT model that imitates
    it answers them wrongly even when greedy) and adds a spurious carry on 5.5% of the others. Preference
    pairs (correct vs. carry forgotten, correct vs. spurious carry) then teach the carry rule both ways.
    """

    name = "arithmetic"
    max_new_tokens = 6
    default_noise = 0.3
    # pairs from two 30%-noisy answers: (correct, carry forgotten) on carry prompts, (correct, spurious
    # carry) on the others; the correct answer is always the chosen one
    pair_noise = 0.3
    forgotten_share = 0.9  # of the errors

    def __init__(self, max_operand: int = 99, temperature: float = 0.0):
        self.max_operand = max_operand
        r = range(max_operand + 1)
        self._carry_share = sum(has_carry(a, b) for a in r for b in r) / len(r) ** 2
        self.temperature = temperature

    def all_prompts(self) -> list[str]:
        r = range(self.max_operand + 1)
        return [f"What is {a} + {b}?" for a in r for b in r]

    def truth(self, prompt: str) -> int:
        a, b = parse_prompt(prompt)
        return a + b

    @property
    def carry_share(self) -> float:
        """The share of prompts whose units digits carry (0.45 for operands in 0..99)."""
        return self._carry_share

    def slip_rates(self, noise: float) -> tuple[float, float]:
        """(P(carry forgotten | carry prompt), P(spurious carry | other prompt)) for an overall error rate."""
        forgotten = min(1.0, self.forgotten_share * noise / self._carry_share)
        spurious = (noise - forgotten * self._carry_share) / (1.0 - self._carry_share)
        return forgotten, min(1.0, max(0.0, spurious))

    def reference_response(self, prompt: str, rng: random.Random, noise: float | None = None) -> str:
        noise = self.default_noise if noise is None else noise
        a, b = parse_prompt(prompt)
        forgotten, spurious = self.slip_rates(noise)
        if has_carry(a, b):
            return str(a + b - 10 if rng.random() < forgotten else a + b)
        return str(a + b + 10 if rng.random() < spurious else a + b)

    def score(self, prompt: str, response: str) -> float:
        answer = parse_answer(response)
        if answer is None:
            return -math.inf
        return -float(abs(answer - self.truth(prompt)))

    def preference(self, prompt: str, a: str, b: str) -> float:
        return bt_preference(self.score(prompt, a), self.score(prompt, b), self.temperature)

    def metrics(self, prompts: Sequence[str], responses: Sequence[str]) -> dict[str, float]:
        scores = [self.score(p, r) for p, r in zip(prompts, responses, strict=True)]
        n = max(len(scores), 1)
        parsed = [s for s in scores if s != -math.inf]
        return {
            "accuracy": sum(s == 0 for s in scores) / n,
            "parse_rate": len(parsed) / n,
            "mean_abs_error": -sum(parsed) / len(parsed) if parsed else math.inf,
            "n": float(len(scores)),
        }
