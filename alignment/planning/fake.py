"""What the planner builds a step from: the model from its config alone (fake parameters, or real random ones
for a measurement), the shipped tokenizer, and a synthetic batch of real token ids."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from alignment.errors import RecipeError
from alignment.models import config_only

PROMPT_SHARE = 0.25  # of each synthetic sequence's tokens
SHORTER = 0.75  # the shorter completion of a synthetic pair, as a share of the longer


@dataclass(frozen=True)
class PairShape:
    """How a planned pair of ``length`` tokens (its longer sequence) splits: the prompt's share of it, the shorter
    completion's share of the longer one, and which completion is the longer. Real pairs differ: a padded batch
    then needs a mask (sdpa, eager) or an unpadding (flash attention), which the plan counts."""

    prompt_share: float = PROMPT_SHARE
    shorter: float = SHORTER
    chosen_longer: bool = True
    source: str = f"synthetic: prompt {PROMPT_SHARE:.0%} of the longer sequence, the shorter completion {SHORTER:.0%}"

    @classmethod
    def from_tokens(cls, prompt: int, chosen: int, rejected: int, source: str) -> PairShape:
        longer = max(chosen, rejected)
        return cls(prompt / (prompt + longer), min(chosen, rejected) / longer, chosen >= rejected, source)

    def tokens(self, length: int) -> tuple[int, int, int]:
        """(prompt, chosen, rejected) tokens of a pair whose longer sequence has ``length`` tokens."""
        prompt = min(max(1, round(length * self.prompt_share)), length - 1) if length > 1 else 0
        longer = max(1, length - prompt)
        shorter = max(1, round(longer * self.shorter))
        return (prompt, longer, shorter) if self.chosen_longer else (prompt, shorter, longer)

    def describe(self, length: int) -> str:
        prompt, chosen, rejected = self.tokens(length)
        return f"prompt {prompt} + chosen {chosen} / rejected {rejected} tokens ({self.source})"


DEFAULT_SHAPE = PairShape()


#: the largest model the planner simulates (a config beyond them is refused before any simulation: a million
#: layers would plan for hours)
MODEL_CAPS = {"num_hidden_layers": 1024, "hidden_size": 1 << 17, "intermediate_size": 1 << 20, "vocab_size": 1 << 23,
              "num_attention_heads": 4096}  # fmt: skip


def model_config(script, trust_remote_code: bool = False):
    """The model's config without its weights (:func:`alignment.models.config_only`), refused in one line beyond
    :data:`MODEL_CAPS`."""
    cfg = config_only(script, trust_remote_code)
    for name, cap in MODEL_CAPS.items():
        value = getattr(cfg, name, None)
        if isinstance(value, int) and not 1 <= value <= cap:
            raise RecipeError(f"{name} {value} in the model's config: the planner simulates models with 1 to {cap:,} "
                              f"(check the config, e.g. --init_from_config)")  # fmt: skip
    return cfg


def lengths(batch: int, length: int, skew: bool) -> list[int]:
    """Each pair's tokens: all ``length``, or length-skewed (pair i of ``length / 2**i``, at least 64)."""
    return [max(64, length >> i) if skew else length for i in range(batch)]


def batch_rows(batch: int, length: int, vocab: int, skew: bool = False, shape: PairShape = DEFAULT_SHAPE) -> list[dict]:
    """``batch`` synthetic pairs of real token ids, each of ``shape`` with its longer sequence ``length`` tokens
    (length-skewed with ``skew``)."""
    rows, token = [], min(5, vocab - 1)
    for i, n in enumerate(lengths(batch, length, skew)):
        prompt, chosen, rejected = shape.tokens(n)
        rows.append(
            {
                "prompt_ids": [token] * prompt,
                "chosen_ids": [token] * chosen,
                "rejected_ids": [token] * rejected,
                "label": i % 2 == 0,
            }
        )  # fmt: skip (label: KTO's rows)
    return rows


def fake_model(cfg, dtype: torch.dtype, fake: bool = True, attention: str = "sdpa", head: str = "causal_lm"):
    """The model of ``cfg`` in ``dtype``: fake parameters (no memory), or real random ones (seed 0); built with
    ``attention`` (flash attention, which cannot load here, is built as sdpa and switched by
    alignment.planning.attention for the step). ``head``: alignment.models.HEADS (``reward``: the backbone and a
    one-output ``score`` head, no LM head)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from alignment.models import auto_class

    auto = auto_class(head)
    if head == "reward":
        cfg.num_labels = 1

    implementation = attention if attention in ("sdpa", "eager") else "sdpa"
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # fake modules cannot be cast after they are built
    try:
        if fake:
            with FakeTensorMode(allow_non_fake_inputs=True):
                return auto.from_config(cfg, attn_implementation=implementation)
        torch.manual_seed(0)
        return auto.from_config(cfg, attn_implementation=implementation)
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
