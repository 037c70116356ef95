"""Where the self-play loop's prompts come from: a synthetic task's training prompts, or a prompt dataset.

A dataset (a jsonl/json/parquet/csv file, a ``save_to_disk`` folder or a Hub name, as everywhere in this
library) gives its ``prompt_column``: a string, or a conversation whose only message is the user's (its text
is taken). The prompts are shuffled once with the run's seed and cut into consecutive slices, one per
iteration (the paper splits UltraFeedback's prompts the same way), wrapping around when the dataset has
fewer than iterations x prompts_per_iteration.
"""

from __future__ import annotations

import logging
import random

from alignment.data.errors import DataFormatError

logger = logging.getLogger("alignment")


def prompt_text(value, source: str, row: int, column: str) -> str:
    """The prompt of one row, or a DataFormatError naming the source, row and field."""
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict) and value[0].get("role") == "user":
        value = value[0].get("content")
    if isinstance(value, list):
        raise DataFormatError(f"{source}: row {row}, field '{column}': a conversation of {len(value)} messages; the "
                              "self-play loop takes one user message per prompt")  # fmt: skip
    if not isinstance(value, str) or not value.strip():
        raise DataFormatError(f"{source}: row {row}, field '{column}': expected a non-empty string, got {value!r}")
    return value


def load_prompts(source: str, split: str = "train", column: str = "prompt") -> list[str]:
    from alignment.data.loading import iter_source_rows

    prompts = []
    for number, row in iter_source_rows(source, split):
        if not isinstance(row, dict) or column not in row:
            raise DataFormatError(f"{source}: row {number} has no field '{column}' (set prompt_column)")
        prompts.append(prompt_text(row[column], source, number, column))
    if not prompts:
        raise DataFormatError(f"{source}: no prompts in split {split!r}")
    return prompts


class PromptSource:
    """``prompts(t, n, seed)``: the n training prompts of iteration t."""

    def __init__(self, task=None, dataset: str | None = None, split: str = "train", column: str = "prompt"):
        if task is None and dataset is None:
            raise ValueError("the self-play loop needs prompt_task or prompt_dataset")
        self.task, self.dataset, self.split, self.column = task, dataset, split, column
        self._all: list[str] | None = None

    def prompts(self, t: int, n: int, seed: int) -> list[str]:
        if self.dataset is None:
            return self.task.prompts("train", n, seed=seed + t)
        if self._all is None:
            self._all = load_prompts(self.dataset, self.split, self.column)
            random.Random(seed).shuffle(self._all)
        start = (t - 1) * n
        if start + n > len(self._all):
            logger.warning("%s has %d prompts: iteration %d reuses some (wraps around)", self.dataset,
                           len(self._all), t)  # fmt: skip
        return [self._all[(start + i) % len(self._all)] for i in range(n)]
