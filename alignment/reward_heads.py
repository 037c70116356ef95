"""A reward model's scalar per sequence: the backbone's final hidden state at each sequence's last token through
the one-output ``score`` head (``AutoModelForSequenceClassification``), as transformers' own forward computes it,
but with the head applied to the [N, H] last states only and the backbone runnable on packed rows.

transformers' rule for the last token (``GenericForSequenceClassification``): the rightmost position whose id is
not ``pad_token_id`` (the last position when there is no pad token). A model's ``score`` may be wrapped by PEFT
(``modules_to_save``: the trained copy runs); under DDP the computation runs as the wrapper's forward (gradient
all-reduce), under ZeRO-3 calling the head module gathers its weight.

Example::

    r = sequence_rewards(model, batch["input_ids"], batch["attention_mask"], tokenizer.pad_token_id)  # [2B]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from alignment.data.packing import Packing
from alignment.heads import hidden_states, through_wrapper
from alignment.models import unwrap


@dataclass
class Rewards:
    rewards: torch.Tensor  # [N]


def last_token_index(input_ids: torch.Tensor, pad_token_id: int | None) -> torch.Tensor:
    """[N] index of each row's rightmost non-pad token (transformers' rule; the last position without a pad id)."""
    n, t = input_ids.shape
    if pad_token_id is None:
        return torch.full((n,), t - 1, dtype=torch.long, device=input_ids.device)
    positions = torch.arange(t, device=input_ids.device)
    return (positions * (input_ids != pad_token_id)).argmax(-1)


def score_head(model: nn.Module) -> nn.Module:
    """The one-output head of a sequence classifier (``score``: Llama, Qwen, Mistral, ... in transformers 5)."""
    inner = unwrap(model)
    head = getattr(inner, "score", None)
    if not isinstance(head, nn.Module):
        raise ValueError(
            f"{type(inner).__name__} has no `score` head: a reward model is an AutoModelForSequenceClassification "
            "with num_labels=1 (method: reward loads one from a causal LM's folder)"
        )
    return head


def sequence_rewards(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    pad_token_id: int | None,
    packing: Packing | None = None,
) -> torch.Tensor:
    """r(x, y) [N] for the right-padded sequences ``input_ids`` [N, T] (``packing``: the backbone runs on the
    batch's packed rows, alignment.data.packing; the same values)."""

    def run(input_ids, attention_mask):
        states = hidden_states(model, input_ids, attention_mask, packing=packing)  # [N, T, H]
        last = states[torch.arange(states.shape[0], device=states.device), last_token_index(input_ids, pad_token_id)]
        return Rewards(score_head(model)(last).squeeze(-1))

    return through_wrapper(model, run, input_ids, attention_mask).rewards
