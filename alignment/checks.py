"""Value checks shared by every settings dataclass (training configs, recipe arguments, the self-play loop's
settings): numbers are finite, and bounded fields hold a value inside their bounds. Each failure is one
``ValueError`` naming the field, the bound and the value; the recipe loader turns it into one line naming the
recipe file. Imports nothing of ours.

Bounds are written as text: ``">= 1"``, ``"> 0"``, ``"[0, 1)"`` (an interval, brackets inclusive), and a field
whose value is None is not checked (None means "unset" in every settings class here).
"""

from __future__ import annotations

import math
from dataclasses import fields


def _numbers(value):
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [value]
    if isinstance(value, (list, tuple)):
        return [v for v in value if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if isinstance(value, dict):
        return [v for v in value.values() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return []


def check_finite(settings, allowed_infinite: tuple[str, ...] = ()) -> None:
    """Every number of a dataclass (and of its list and mapping fields) is finite: NaN never, infinity only for
    the fields in ``allowed_infinite``."""
    for f in fields(settings):
        for number in _numbers(getattr(settings, f.name, None)):
            if math.isnan(number) or (math.isinf(number) and f.name not in allowed_infinite):
                raise ValueError(f"{f.name} must be a finite number, got {number}")


def within(bound: str, value: float) -> bool:
    """``value`` satisfies ``bound`` (``">= 1"``, ``"> 0"``, ``"<= 1"``, ``"[0, 1)"``, ``"(0, 1]"``...)."""
    bound = bound.strip()
    if bound[0] in "[(":
        low, high = (float(x) for x in bound[1:-1].split(","))
        above = value >= low if bound[0] == "[" else value > low
        below = value <= high if bound[-1] == "]" else value < high
        return above and below
    op, _, number = bound.partition(" ")
    limit = float(number)
    return {">=": value >= limit, ">": value > limit, "<=": value <= limit, "<": value < limit}[op]


def check_bounds(settings, bounds: dict[str, str]) -> None:
    """Each named field (when set) is a number inside its bound; one line naming the field otherwise."""
    for name, bound in bounds.items():
        value = getattr(settings, name, None)
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if not within(bound, value):
            raise ValueError(f"{name} must be {_words(bound)}, got {value}")


def _words(bound: str) -> str:
    return f"in {bound}" if bound[0] in "[(" else bound
