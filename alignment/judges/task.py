"""A synthetic task's oracle as a judge (README, "Synthetic tasks")."""

from __future__ import annotations

from alignment.judges.base import check_lengths


class TaskJudge:
    """P(a > b | prompt) from a task's oracle, e.g. ``TaskJudge("rps")`` (cyclic: no reward explains it).
    Pairwise: rankings of K candidates use the knockout tournament."""

    def __init__(self, task):
        from alignment.tasks import get_task

        self.task = get_task(task) if isinstance(task, str) else task

    def __call__(self, prompts, responses_a, responses_b) -> list[float]:
        check_lengths(prompts, responses_a, responses_b)
        return [float(self.task.preference(p, a, b)) for p, a, b in zip(prompts, responses_a, responses_b)]

    def __repr__(self) -> str:
        return f"TaskJudge({self.task.name!r})"
