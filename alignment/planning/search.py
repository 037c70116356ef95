"""The longest length (or largest batch) whose planned peak fits a budget, in few plans.

A step's peak is its resident part plus a part that grows with the tokens: linear for flash attention and the
fused op, faster where attention makes a mask or weights of T x T. So the search interpolates: the last two plans
give a line, its crossing of the budget (rounded down to the grain) is planned next, and once a bracket [longest
that fits, shortest that does not] exists it shrinks by interpolation, or by halving when one end has stayed put
twice (so a curved peak cannot stall it), until the two are one grain apart. An affine peak takes four plans;
bisection from 64 tokens to 1M takes about 25, each of them minutes at 200k tokens. Every reported length is a
planned step, never an extrapolation.
"""

from __future__ import annotations

from collections.abc import Callable

from alignment.errors import RecipeError

MAX_PLANS = 40
#: seconds a search may take (ALIGNMENT_PLAN_TIME_LIMIT overrides): past it, the next plan is not started
TIME_LIMIT = 3600.0


def time_limit() -> float:
    import os

    text = os.environ.get("ALIGNMENT_PLAN_TIME_LIMIT")
    try:
        value = float(text) if text else TIME_LIMIT
    except ValueError:
        raise RecipeError(f"ALIGNMENT_PLAN_TIME_LIMIT {text!r}: give seconds, e.g. 600") from None
    if not value > 0:
        raise RecipeError(f"ALIGNMENT_PLAN_TIME_LIMIT {text!r}: give a positive number of seconds")
    return value


def longest(peak_at: Callable[[int], int], budget: int, grain: int, limit: int, start: int | None = None,
            known: dict[int, int] | None = None) -> int | None:  # fmt: skip
    """The largest multiple of ``grain`` in [grain, limit] with ``peak_at(x) <= budget`` (``peak_at`` growing with
    x), or None when ``grain`` itself does not fit. ``start``: the first length planned (default 1024); ``known``:
    peaks already planned (another budget's search of the same step), whose line gives the first guess."""
    import time

    top = max(grain, limit // grain * grain)
    seen: dict[int, int] = dict(known or {})
    order: list[int] = sorted(seen)
    began, seconds = time.monotonic(), time_limit()

    def peak(x: int) -> int:
        if x not in seen:
            if len(seen) >= MAX_PLANS:
                raise RecipeError(
                    f"the search for the longest length that fits stopped after {MAX_PLANS} plans (does the peak "
                    "grow with the length?); plan one length with --max_length N"
                )
            if time.monotonic() - began > seconds:
                raise RecipeError(
                    f"the search stopped after {time.monotonic() - began:.0f} s and {len(seen)} plans (limit "
                    f"{seconds:.0f} s, ALIGNMENT_PLAN_TIME_LIMIT); the longest that fit so far: "
                    f"{max((k for k, v in seen.items() if v <= budget), default='none')}; plan one length with "
                    "--max_length N"
                )
            seen[x] = peak_at(x)
            order.append(x)
        return seen[x]

    def snap(x: float) -> int:
        return max(grain, min(top, int(x) // grain * grain))

    fits = misses = None
    moved: list[str] = []  # which end each plan moved
    for x in order:
        if seen[x] <= budget:
            fits = x if fits is None else max(fits, x)
        else:
            misses = x if misses is None else min(misses, x)
    if len(order) > 1 and start is None:  # the known line's crossing
        guess = _crossing(order[-2], seen[order[-2]], order[-1], seen[order[-1]], budget)
        start = guess if guess else None
    x = snap(start or 1024)
    while True:
        if peak(x) <= budget:
            fits, end = (x if fits is None else max(fits, x)), "fits"
        else:
            misses, end = (x if misses is None else min(misses, x)), "misses"
        moved.append(end)
        if fits is None and misses <= grain:
            return None
        if fits is not None and (fits >= top or (misses is not None and misses - fits <= grain)):
            return fits
        x = _next(fits, misses, order, seen, budget, grain, snap, moved)


def _next(fits, misses, order, seen, budget, grain, snap, moved) -> int:
    if fits is not None and misses is not None:
        if len(moved) >= 3 and moved[-1] == moved[-2] == moved[-3]:  # one end stuck: halve the bracket
            guess = (fits + misses) / 2
        else:
            guess = _crossing(fits, seen[fits], misses, seen[misses], budget) or (fits + misses) / 2
        return min(max(snap(guess), fits + grain), misses - grain)
    a, b = order[-2:] if len(order) > 1 else (order[-1], order[-1])
    guess = _crossing(a, seen[a], b, seen[b], budget) if a != b else None
    if misses is None:  # everything so far fits: grow towards the line's crossing (at most 8x per plan)
        nxt = snap(min(guess, 8 * fits)) if guess else snap(2 * fits)
        return nxt if nxt > fits else fits + grain
    nxt = snap(guess) if guess and guess < misses else snap(misses // 2)  # nothing fits yet: shrink
    return nxt if nxt < misses else misses - grain


def _crossing(a: int, pa: int, b: int, pb: int, budget: int) -> float | None:
    """Where the line through (a, pa) and (b, pb) reaches ``budget``, when the line rises."""
    if b == a or (pb - pa) / (b - a) <= 0:
        return None
    x = a + (budget - pa) * (b - a) / (pb - pa)
    return x if x > 0 else None
