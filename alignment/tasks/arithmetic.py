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
# Wrong answers of the noisy reference policy: off by a little, a carry forgotten or a digit slip.
_OFFSETS = (-10, -2, -1, 1, 2, 10)


def parse_prompt(prompt: str) -> tuple[int, int]:
    match = _PROMPT.fullmatch(prompt.strip())
    if match is None:
        raise ValueError(f"not an arithmetic prompt: {prompt!r}")
    return int(match.group(1)), int(match.group(2))


def parse_answer(response: str) -> int | None:
    """The first integer in the response, or None when there is none."""
    match = _NUMBER.search(response)
    return int(match.group(0)) if match else None


class ArithmeticTask(Task):
    name = "arithmetic"
    default_noise = 0.3
    # pairs from two 30%-noisy answers: most decisive pairs are (correct, near miss), so chosen is the
    # correct answer in about 85% of rows (the rest rank two wrong answers by distance)
    pair_noise = 0.3

    def __init__(self, max_operand: int = 99, temperature: float = 0.0):
        self.max_operand = max_operand
        self.temperature = temperature

    def all_prompts(self) -> list[str]:
        r = range(self.max_operand + 1)
        return [f"What is {a} + {b}?" for a in r for b in r]

    def truth(self, prompt: str) -> int:
        a, b = parse_prompt(prompt)
        return a + b

    def reference_response(self, prompt: str, rng: random.Random, noise: float | None = None) -> str:
        noise = self.default_noise if noise is None else noise
        answer = self.truth(prompt)
        if rng.random() < noise:
            answer = max(0, answer + rng.choice(_OFFSETS))
            if answer == self.truth(prompt):
                answer += 1
        return str(answer)

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
