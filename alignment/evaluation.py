"""Task evaluation (greedy and sampled metrics on held-out prompts) and the JSON run records, shared by
``alignment train`` / ``eval`` (alignment.run) and the self-play loop (alignment.loops.selfplay)."""

from __future__ import annotations

import json
from pathlib import Path

from alignment.io import atomic_write_text
from alignment.secrets import redact


def plain_value(value) -> bool:
    """A value a run record keeps as it is (a JSON scalar, or a list of them)."""
    return isinstance(value, (str, int, float, bool, type(None))) or (
        isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value)
    )


def write_record(path: Path, data: dict) -> None:
    """A run record, its secrets masked (alignment.secrets)."""
    atomic_write_text(path, json.dumps(redact(data), indent=1, default=str))


def evaluate(model, tokenizer, task_name: str, n: int = 500, modes=("greedy", "sampled"), seed: int = 0,
             max_new_tokens: int | None = None) -> dict:  # fmt: skip
    """Task metrics on ``n`` held-out prompts, with greedy decoding and with sampling (temperature 1);
    responses of at most ``max_new_tokens`` tokens (default: the task's)."""
    from alignment.generation import SamplingConfig, generate_responses
    from alignment.tasks import get_task

    task = get_task(task_name)
    prompts = task.prompts("eval", n, seed)
    results = {}
    for mode in modes:
        length = max_new_tokens or task.max_new_tokens
        config = SamplingConfig(max_new_tokens=length, do_sample=mode == "sampled", seed=seed)
        responses = generate_responses(model, tokenizer, prompts, config, desc=f"Evaluating {task_name} ({mode})")
        results[mode] = task.metrics(prompts, [r[0] for r in responses])
    return results


def eval_command(model_path: str, task: str, n: int, modes, output: str | None) -> dict:
    from alignment.models import load_model, load_tokenizer

    model = load_model(model_path)  # first: a folder that is not a model says so
    tokenizer = load_tokenizer(model_path)
    results = {"model": model_path, "task": task, "n": n, **evaluate(model, tokenizer, task, n, modes)}
    if output:
        write_record(Path(output), results)
    return results
