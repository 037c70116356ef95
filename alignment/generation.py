"""Batched sampling and greedy decoding from any causal LM: ``alignment eval``, on-policy pairs and
self-play all generate through here.

Prompts are strings or conversations (lists of ``{"role", "content"}`` messages). With a chat template the
prompt is rendered as a user turn with the generation prompt; without one the text is used as it is.
Batches are left-padded, each row stops at EOS, and the decoded responses drop special tokens.

Seeds: batch ``b`` (of ``batch_size`` prompts) and sample ``k`` (of ``num_samples``) draw with the global
torch seed ``seed + b * num_samples + k``, so a run is reproducible and does not depend on what ran
before it.

Example::

    from alignment.generation import SamplingConfig, generate_responses
    responses = generate_responses(model, tokenizer, ["What is 2 + 3?"], SamplingConfig(max_new_tokens=6))
    responses[0][0]    # the greedy answer to the first prompt
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

Prompt = str | list[dict[str, str]]


@dataclass
class SamplingConfig:
    """How to decode. ``do_sample=False`` is greedy (temperature, top_p and top_k are then ignored);
    ``top_p``/``top_k`` None leave the model's own generation defaults."""

    max_new_tokens: int = 32
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float | None = None
    top_k: int | None = None
    num_samples: int = 1
    batch_size: int = 64
    seed: int = 0

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.do_sample and not self.temperature > 0:
            raise ValueError(f"temperature must be > 0 when sampling, got {self.temperature}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        for name in ("num_samples", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@contextmanager
def _left_padding(tokenizer):
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        yield
    finally:
        tokenizer.padding_side = side


def render_prompts(tokenizer, prompts: Sequence[Prompt]) -> tuple[list[str], bool]:
    """The prompt texts to tokenize and whether a chat template rendered them (then no special tokens are
    added by the tokenizer: the template has them)."""
    if tokenizer.chat_template is None:
        if any(not isinstance(p, str) for p in prompts):
            raise ValueError("conversational prompts need a tokenizer with a chat template")
        return list(prompts), False
    texts = []
    for p in prompts:
        messages = [{"role": "user", "content": p}] if isinstance(p, str) else list(p)
        texts.append(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    return texts, True


def _generate_batch(model: nn.Module, tokenizer, texts: list[str], chat: bool, config: SamplingConfig, seed: int):
    device = next(model.parameters()).device
    with _left_padding(tokenizer):
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=not chat).to(device)
    torch.manual_seed(seed)
    sampling = {"temperature": config.temperature, "top_p": config.top_p, "top_k": config.top_k}
    with torch.no_grad():
        out = model.generate(
            **enc,
            max_new_tokens=config.max_new_tokens,
            do_sample=config.do_sample,
            **(sampling if config.do_sample else {"temperature": None, "top_p": None, "top_k": None}),
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    return tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)


def generate_responses(
    model: nn.Module,
    tokenizer,
    prompts: Sequence[Prompt],
    config: SamplingConfig | None = None,
    progress: bool = True,
    desc: str = "Generating",
) -> list[list[str]]:
    """``config.num_samples`` responses per prompt: a list (one per prompt) of lists of strings."""
    from tqdm.auto import tqdm

    config = config or SamplingConfig()
    texts, chat = render_prompts(tokenizer, prompts)
    was_training = model.training
    model.eval()
    out: list[list[str]] = [[] for _ in texts]
    starts = range(0, len(texts), config.batch_size)
    try:
        for b, start in enumerate(tqdm(starts, desc=desc, disable=not progress or len(starts) < 2)):
            batch = texts[start : start + config.batch_size]
            for k in range(config.num_samples):
                seed = config.seed + b * config.num_samples + k
                for i, response in enumerate(_generate_batch(model, tokenizer, batch, chat, config, seed)):
                    out[start + i].append(response)
    finally:
        model.train(was_training)
    return out


def generation_fn(model: nn.Module, tokenizer, config: SamplingConfig | None = None) -> Callable:
    """prompts -> one response each, for ``Task.evaluate``; call number ``c`` draws with ``seed + c``."""
    config = config or SamplingConfig()
    calls = [0]

    def generate(prompts: list[Prompt]) -> list[str]:
        one = SamplingConfig(**{**vars(config), "num_samples": 1, "seed": config.seed + calls[0]})
        calls[0] += 1
        return [r[0] for r in generate_responses(model, tokenizer, prompts, one, progress=False)]

    return generate
