"""An anchor's log-probabilities on a collated batch: one no-grad pass, its hidden states too, or the batch's
precomputed columns."""

from __future__ import annotations

import torch
from torch import nn

from alignment.data.packing import Packing
from alignment.heads import causal_token_logps, reference_states
from alignment.long_context import sequence_parallel as sp
from alignment.trainers.anchors.kinds import Anchor, AnchorLogps


def anchor_logps(model: nn.Module, batch: dict, kernel_kwargs: dict, tokens: bool = False,
                 packing: Packing | None = None) -> AnchorLogps:  # fmt: skip
    """An anchor's summed completion log-probabilities (and per-token ones) on a collated batch, no grad;
    ``packing``: the batch's (the step holds it), else read from the batch."""
    shard = batch if "shift_targets" in batch else None  # a sequence-parallel shard: sums over the group
    with torch.no_grad():
        out = causal_token_logps(
            model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"],
            packing=packing if packing is not None else Packing.from_batch(batch), shard=shard, **kernel_kwargs,
        )  # fmt: skip
        seq = out.logps.sum(dim=-1)
        if shard is not None:
            seq = sp.group_sum(sp.sequence_group())(seq)
    half = seq.shape[0] // 2
    return AnchorLogps(seq[:half], seq[half:], out.logps if tokens else None)


def anchor_states(model: nn.Module, batch: dict, kernel_kwargs: dict, all_layers: bool,
                  packing: Packing | None = None) -> AnchorLogps:  # fmt: skip
    """An anchor's per-token log-probabilities with its hidden states (every layer's when ``all_layers``)
    and LM head, from one no-grad pass (alignment.heads.reference_states)."""
    states = reference_states(
        model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"], all_layers,
        packing=packing if packing is not None else Packing.from_batch(batch), **kernel_kwargs,
    )  # fmt: skip
    seq = states.token_logps.sum(dim=-1)
    half = seq.shape[0] // 2
    return AnchorLogps(seq[:half], seq[half:], states.token_logps, states)


def from_batch(anchor: Anchor, batch: dict, tokens: bool) -> AnchorLogps:
    """Precomputed values carried by a collated batch (``<name>_token_logps`` is [2B, T]: shifted here)."""
    chosen, rejected = (batch[c] for c in anchor.columns)
    per_token = batch.get(f"{anchor.name}_token_logps")
    if tokens and per_token is None:
        raise ValueError(
            f"the loss needs per-token values of anchor {anchor.name!r} but the data only has "
            f"{anchor.columns[0]}/{anchor.columns[1]}: add {anchor.token_columns[0]}/{anchor.token_columns[1]} or "
            "let the trainer compute them"
        )
    return AnchorLogps(chosen, rejected, per_token[:, 1:] if tokens else None)
