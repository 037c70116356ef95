"""The preference collator: [chosen; rejected] stacked on the batch axis, padded only as far as needed.

For B rows it returns tensors of shape [2B, T] where rows 0..B-1 are ``prompt + chosen`` and rows
B..2B-1 are ``prompt + rejected`` (the layout trl 1.16 uses), T the longest of the 2B sequences, rounded
up to ``pad_to_multiple_of`` when set:

- ``input_ids``: token ids, right-padded with ``pad_token_id``;
- ``attention_mask``: 1 on real tokens, 0 on padding;
- ``completion_mask``: 1 on completion tokens only (0 on the prompt and padding);
- ``ref_chosen_logps`` / ``ref_rejected_logps`` [B], when the rows carry precomputed reference values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

PASSTHROUGH = ("ref_chosen_logps", "ref_rejected_logps")


@dataclass
class PreferenceCollator:
    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not rows:
            raise ValueError("PreferenceCollator got an empty batch")
        sequences, masks = [], []
        for key in ("chosen_ids", "rejected_ids"):
            for row in rows:
                prompt, completion = list(row["prompt_ids"]), list(row[key])
                sequences.append(prompt + completion)
                masks.append([0] * len(prompt) + [1] * len(completion))
        length = max(len(s) for s in sequences)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        n = len(sequences)
        input_ids = torch.full((n, length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((n, length), dtype=torch.long)
        completion_mask = torch.zeros((n, length), dtype=torch.long)
        for i, (seq, mask) in enumerate(zip(sequences, masks)):
            input_ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            attention_mask[i, : len(seq)] = 1
            completion_mask[i, : len(mask)] = torch.tensor(mask, dtype=torch.long)
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "completion_mask": completion_mask}
        for key in PASSTHROUGH:
            if key in rows[0]:
                batch[key] = torch.tensor([float(row[key]) for row in rows], dtype=torch.float32)
        return batch


@dataclass
class SFTCollator:
    """Supervised rows {prompt_ids, completion_ids} -> input_ids, attention_mask, completion_mask [B, T],
    right-padded to the longest row (optionally to a multiple of ``pad_to_multiple_of``)."""

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        pairs = [{"prompt_ids": r["prompt_ids"], "chosen_ids": r["completion_ids"], "rejected_ids": []} for r in rows]
        batch = PreferenceCollator(self.pad_token_id, self.pad_to_multiple_of)(pairs)
        return {k: v[: len(rows)] for k, v in batch.items()}
