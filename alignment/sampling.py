"""K sampled responses per prompt from a policy folder, shared by the processes of a launch: the self-play
loop's sampling stage and the Bradley-Terry fit's both go through :func:`sample_rows`."""

from __future__ import annotations

import dataclasses
import logging

logger = logging.getLogger("alignment")


def sample_rows(policy_path: str, prompts: list, config, processes, dtype: str = "float32",
                backend: str = "transformers", desc: str = "Sampling") -> list[dict]:  # fmt: skip
    """``{"prompt", "responses": [K]}`` per prompt, in the prompts' order, on every process. ``config`` is a
    :class:`alignment.generation.SamplingConfig`; each process samples every world-th prompt with its own
    seed (``config.seed + 100003 * rank``), through ``model.generate`` or vLLM (``backend``)."""
    from alignment.generation import generate_responses
    from alignment.models import load_model, load_tokenizer

    shard = processes.shard(prompts)
    config = dataclasses.replace(config, seed=processes.seed(config.seed))
    tokenizer = load_tokenizer(policy_path)
    if backend == "vllm":
        from alignment.vllm_backend import generate_vllm

        drawn = generate_vllm(policy_path, tokenizer, shard, config) if shard else []
    else:
        policy = load_model(policy_path, dtype).eval()
        drawn = generate_responses(policy, tokenizer, shard, config, desc=desc)
        del policy
    if processes.world > 1:
        logger.warning("%s: process %d sampled %d of %d prompts", desc, processes.rank, len(shard), len(prompts))
    return processes.gather([{"prompt": p, "responses": list(r)} for p, r in zip(shard, drawn)])
