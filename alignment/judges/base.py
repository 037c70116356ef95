"""The judge protocol, a judge from any Python function, and a counting wrapper."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable


@runtime_checkable
class Judge(Protocol):
    """``judge(prompts, responses_a, responses_b)`` -> P(a > b | prompt) in [0, 1] per item (three lists of the
    same length). P(a > a) should be 0.5. A pointwise judge (a reward model) also has
    ``scores(prompts, responses) -> list[float]``."""

    def __call__(
        self, prompts: Sequence[str], responses_a: Sequence[str], responses_b: Sequence[str]
    ) -> list[float]: ...


def check_lengths(prompts, responses_a, responses_b) -> None:
    if not len(prompts) == len(responses_a) == len(responses_b):
        raise ValueError(
            f"a judge needs as many prompts as responses: got {len(prompts)} prompts, {len(responses_a)} "
            f"responses a and {len(responses_b)} responses b"
        )


def check_probabilities(values, source: str) -> list[float]:
    out = [float(v) for v in values]
    bad = [i for i, v in enumerate(out) if not 0.0 <= v <= 1.0]  # also catches NaN
    if bad:
        raise ValueError(f"{source} returned {out[bad[0]]!r} for item {bad[0]}: a judge returns P(a > b) in [0, 1]")
    return out


class CallableJudge:
    """A judge from a Python function: ``fn(prompt, a, b) -> P(a > b)`` per item, or with ``batched=True``
    ``fn(prompts, responses_a, responses_b) -> list of P(a > b)``."""

    def __init__(self, fn: Callable, batched: bool = False):
        self.fn, self.batched = fn, batched

    def __call__(self, prompts, responses_a, responses_b) -> list[float]:
        check_lengths(prompts, responses_a, responses_b)
        name = getattr(self.fn, "__name__", repr(self.fn))
        if self.batched:
            values = list(self.fn(list(prompts), list(responses_a), list(responses_b)))
            if len(values) != len(prompts):
                raise ValueError(f"judge {name} returned {len(values)} values for {len(prompts)} items")
        else:
            values = [self.fn(p, a, b) for p, a, b in zip(prompts, responses_a, responses_b)]
        return check_probabilities(values, f"judge {name}")


class CountingJudge:
    """Wraps a judge and counts its calls and the comparisons (items) it was asked for."""

    def __init__(self, judge):
        self.judge, self.calls, self.comparisons = judge, 0, 0
        if hasattr(judge, "scores"):
            self.scores = self._scores

    def __call__(self, prompts, responses_a, responses_b) -> list[float]:
        self.calls += 1
        self.comparisons += len(prompts)
        return self.judge(prompts, responses_a, responses_b)

    def _scores(self, prompts, responses) -> list[float]:
        self.calls += 1
        self.comparisons += len(prompts)
        return self.judge.scores(prompts, responses)
