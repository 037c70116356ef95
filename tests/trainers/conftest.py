"""Fixtures the trainer tests share."""

import pytest

TASKS = ("sentiment", "rps", "arithmetic")


@pytest.fixture(scope="module")
def pool(data_dir):
    """30 preference rows of each shipped task, per format (standard, conversational): the random draws' source."""
    from datasets import load_dataset

    out = {}
    for fmt in ("standard", "conversational"):
        rows = []
        for task in TASKS:
            path = data_dir / "tasks" / task / f"pref_train_{fmt}.jsonl"
            rows += load_dataset("json", data_files=str(path), split="train").select(range(30)).to_list()
        out[fmt] = rows
    return out
