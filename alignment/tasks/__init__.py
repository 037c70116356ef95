"""Synthetic tasks with programmatic oracles: arithmetic, sentiment, rock-paper-scissors (README, "Synthetic tasks")."""

from alignment.tasks.arithmetic import ArithmeticTask
from alignment.tasks.base import SPLITS, Task, bt_preference, split_of
from alignment.tasks.rps import RPSTask
from alignment.tasks.sentiment import SentimentTask

TASKS: dict[str, type[Task]] = {"arithmetic": ArithmeticTask, "sentiment": SentimentTask, "rps": RPSTask}


def get_task(name: str, **kwargs) -> Task:
    """Build a task by name (``arithmetic``, ``sentiment`` or ``rps``)."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {sorted(TASKS)}")
    return TASKS[name](**kwargs)


__all__ = [
    "SPLITS",
    "TASKS",
    "ArithmeticTask",
    "RPSTask",
    "SentimentTask",
    "Task",
    "bt_preference",
    "get_task",
    "split_of",
]
