"""``padding_free: true`` in the trainers: the collator packs each batch (alignment.data.packing), the
backbone runs on the packed rows, everything after it reads the padded layout.

- :func:`configure`: after the Trainer is built, tell our collator to pack (one row under flash attention,
  whose varlen path transformers takes only for a batch of one row);
- :func:`batch_packing`: the batch's :class:`~alignment.data.packing.Packing`, checked once per trainer
  against the model: a model whose attention does not keep packed sequences apart from their position ids
  (OPT and BLOOM in transformers 5, for instance) raises a one-line error naming the fix.
"""

from __future__ import annotations

import torch

from alignment.data.packing import Packing
from alignment.heads import packing_error
from alignment.long_context.unmasked import attention_of
from alignment.models import unwrap

#: the largest relative change of a sequence's hidden states that packing may cause (float32 / half types);
#: a model whose sequences see each other changes them by order 1
TOLERANCE = {torch.float32: 1e-3, torch.float64: 1e-6}
HALF_TOLERANCE = 5e-2


def attention_implementation(model) -> str:
    return attention_of(unwrap(model))


def configure(trainer) -> None:
    """Switch the trainer's own collator to packing when the config asks (a collator passed in must pack
    by itself: :func:`batch_packing` says so when it does not)."""
    collator = trainer.data_collator
    if trainer.args.padding_free and hasattr(collator, "padding_free"):
        collator.padding_free = True
        collator.single_row = "flash" in attention_implementation(trainer.model)


def summary(trainer) -> str:
    """The banner's line."""
    if not trainer.args.padding_free:
        return "off"
    impl = attention_implementation(trainer.model)
    rows = "one packed row per batch" if getattr(trainer.data_collator, "single_row", False) else "packed rows"
    return f"on: {rows}, position_ids restart per sequence (attention {impl})"


def batch_packing(trainer, inputs: dict) -> Packing | None:
    """The batch's packing (None for a padded batch); the first packed batch is checked against the model."""
    packing = Packing.from_batch(inputs)
    if packing is None:
        if trainer.args.padding_free:
            raise ValueError(
                f"padding_free is on but the data collator ({type(trainer.data_collator).__name__}) did not pack "
                "the batch: leave data_collator unset, or add packed_input_ids / packed_position_ids / "
                "packed_index (alignment.data.packing.pack_batch)"
            )
        return None
    if not getattr(trainer, "_packing_checked", False):
        check(trainer.model, inputs)
        trainer._packing_checked = True
    return packing


def check(model, inputs: dict) -> None:
    """Raise when packing changes what the model computes (see alignment.heads.packing_error)."""
    lengths = inputs["attention_mask"].sum(dim=1).tolist()
    change = packing_error(model, inputs["input_ids"], lengths)
    dtype = next(unwrap(model).parameters()).dtype
    if change <= TOLERANCE.get(dtype, HALF_TOLERANCE):
        return
    name, impl = type(unwrap(model)).__name__, attention_implementation(model)
    raise ValueError(
        f"padding_free: {name} (attn_implementation {impl!r}) does not keep packed sequences apart (restarting "
        f"position_ids change a sequence's hidden states by {change:.2g} of their size): set padding_free: false, "
        "or load the model with an attention implementation that reads packed position_ids (sdpa or eager for "
        "Llama-style models, flash_attention_2 on a GPU)"
    )
