"""On-policy preference pairs: sample responses from a model, let the task's oracle rank them.

For each prompt, ``samples`` responses are drawn from the policy (temperature 1); the pair is (the best,
the worst) by the oracle, skipped when they tie. This is the data of iterative / online DPO: the rejected
responses are the policy's own mistakes, which is what preference training can correct.

    alignment data pairs data/sft_model --task arithmetic --n 3000 --samples 4 --out pairs.jsonl
"""

from __future__ import annotations

from alignment.generation import SamplingConfig, generate_responses
from alignment.io import write_jsonl
from alignment.models import load_model, load_tokenizer
from alignment.tasks import get_task


def _rank(task, prompt: str, responses: list[str]) -> tuple[str, str] | None:
    """(best, worst) under the oracle's pairwise preferences (sum of wins), or None when all tie."""
    wins = [sum(task.preference(prompt, a, b) for b in responses) for a in responses]
    best = max(range(len(responses)), key=lambda i: wins[i])
    worst = min(range(len(responses)), key=lambda i: wins[i])
    if task.preference(prompt, responses[best], responses[worst]) <= 0.5:
        return None
    return responses[best], responses[worst]


def onpolicy_pairs(model, tokenizer, task_name: str, n: int, samples: int = 4, seed: int = 0, batch_size: int = 128):
    """Conversational preference rows from ``samples`` sampled responses per training prompt."""
    task = get_task(task_name)
    prompts = task.prompts("train", n, seed)
    config = SamplingConfig(
        max_new_tokens=task.max_new_tokens, do_sample=True, num_samples=samples, batch_size=batch_size, seed=seed
    )
    drawn = generate_responses(model, tokenizer, prompts, config, desc="Sampling on-policy pairs")
    rows = []
    for prompt, sampled in zip(prompts, drawn):
        responses = [r for r in sampled if r.strip()]  # an empty response is not a valid message
        ranked = _rank(task, prompt, responses) if len(responses) > 1 else None
        if ranked is not None:
            rows.append(
                {
                    "prompt": [{"role": "user", "content": prompt}],
                    "chosen": [{"role": "assistant", "content": ranked[0]}],
                    "rejected": [{"role": "assistant", "content": ranked[1]}],
                }
            )
    return rows


def write_pairs(model_path: str, task_name: str, n: int, samples: int, out: str, seed: int = 0) -> int:
    tokenizer = load_tokenizer(model_path)
    model = load_model(model_path)
    rows = onpolicy_pairs(model, tokenizer, task_name, n, samples, seed)
    write_jsonl(out, rows)
    return len(rows)
