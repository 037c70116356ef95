"""What the planner builds a step from: the model from its config alone (fake parameters, or real random ones
for a measurement), the shipped tokenizer, and a synthetic batch of real token ids."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from alignment.errors import RecipeError

PROMPT_SHARE = 0.25  # of each synthetic sequence's tokens


def model_config(script, trust_remote_code: bool = False):
    """The model's config without its weights: ``init_from_config`` (JSON) or the model folder's config.json
    (a Hub name works where the Hub or its cache is reachable)."""
    from transformers import AutoConfig

    if script.init_from_config:
        return AutoConfig.for_model(**json.loads(Path(script.init_from_config).read_text()))
    try:
        return AutoConfig.from_pretrained(script.model_name_or_path, trust_remote_code=trust_remote_code)
    except OSError as e:
        raise RecipeError(
            f"{script.model_name_or_path}: no model config to plan from ({str(e).splitlines()[0]})"
        ) from None


def lengths(batch: int, length: int, skew: bool) -> list[int]:
    """Each pair's tokens: all ``length``, or length-skewed (pair i of ``length / 2**i``, at least 64)."""
    return [max(64, length >> i) if skew else length for i in range(batch)]


def batch_rows(batch: int, length: int, vocab: int, skew: bool = False) -> list[dict]:
    rows, token = [], min(5, vocab - 1)
    for i, n in enumerate(lengths(batch, length, skew)):
        prompt = max(1, int(n * PROMPT_SHARE))
        completion = max(1, n - prompt)
        rows.append(
            {
                "prompt_ids": [token] * prompt,
                "chosen_ids": [token] * completion,
                "rejected_ids": [token] * completion,
                "label": i % 2 == 0,
            }
        )  # fmt: skip (label: KTO's rows)
    return rows


def fake_model(cfg, dtype: torch.dtype, fake: bool = True):
    """The model of ``cfg`` in ``dtype``: fake parameters (no memory), or real random ones (seed 0)."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from transformers import AutoModelForCausalLM

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # fake modules cannot be cast after they are built
    try:
        if fake:
            with FakeTensorMode(allow_non_fake_inputs=True):
                return AutoModelForCausalLM.from_config(cfg)
        torch.manual_seed(0)
        return AutoModelForCausalLM.from_config(cfg)
    finally:
        torch.set_default_dtype(previous)


def model_dtype(model_args) -> torch.dtype:
    return {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(model_args.dtype, torch.float32)


def planning_tokenizer():
    from alignment.models import load_tokenizer

    return load_tokenizer(str(Path(__file__).resolve().parents[2] / "data" / "tokenizer"))


def checkpointing(model) -> None:
    if hasattr(model, "activation_checkpointing_enable"):  # transformers 5's name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
