"""Collators: the preference collator ([chosen; rejected] stacked on the batch axis) and the SFT collator,
padded only as far as needed.

For B preference rows :class:`PreferenceCollator` returns tensors of shape [2B, T] where rows 0..B-1 are
``prompt + chosen`` and rows B..2B-1 are ``prompt + rejected`` (the layout trl 1.16 uses), T the longest of
the 2B sequences, rounded up to ``pad_to_multiple_of`` when set:

- ``input_ids``: token ids, right-padded with ``pad_token_id``;
- ``attention_mask``: 1 on real tokens, 0 on padding;
- ``completion_mask``: 1 on completion tokens only (0 on the prompt and padding); a row with
  ``chosen_prompt_ids`` / ``rejected_prompt_ids`` (trl's tokenization rules, alignment.data.trl_rules) builds each
  sequence from its own prompt;
- ``<anchor>_chosen_logps`` / ``<anchor>_rejected_logps`` [B] (e.g. ``ref_chosen_logps``), when the rows
  carry precomputed anchor values (see alignment.trainers.anchors);
- ``<anchor>_token_logps`` [2B, T], when the rows carry per-token anchor values
  (``<anchor>_chosen_token_logps`` / ``<anchor>_rejected_token_logps``, one value per completion token):
  the value of completion token j sits at that token's position in ``input_ids``, 0 elsewhere;
- ``margin`` [B], when the rows carry trl's reward ``margin`` column;
- with ``padding_free``: ``packed_input_ids`` / ``packed_position_ids`` [R, L] and ``packed_index`` [2B, T],
  the same sequences packed end to end (alignment.data.packing), which the backbone runs on instead.

:class:`SFTCollator` does the same for rows ``{prompt_ids, completion_ids}``: [B, T] tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from alignment.data.packing import pack_batch

SEQUENCE_SUFFIXES = ("_chosen_logps", "_rejected_logps")
TOKEN_SUFFIXES = ("_chosen_token_logps", "_rejected_token_logps")


def pad_sequences(
    prompts: list[list[int]], completions: list[list[int]], pad_token_id: int, pad_to_multiple_of: int | None
) -> dict[str, torch.Tensor]:
    """``prompt + completion`` per row, right-padded: input_ids, attention_mask, completion_mask [N, T]."""
    sequences = [list(p) + list(c) for p, c in zip(prompts, completions)]
    length = max(len(s) for s in sequences)
    if pad_to_multiple_of:
        length = -(-length // pad_to_multiple_of) * pad_to_multiple_of
    n = len(sequences)
    input_ids = torch.full((n, length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((n, length), dtype=torch.long)
    completion_mask = torch.zeros((n, length), dtype=torch.long)
    for i, (seq, prompt) in enumerate(zip(sequences, prompts)):
        input_ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attention_mask[i, : len(seq)] = 1
        completion_mask[i, len(prompt) : len(seq)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "completion_mask": completion_mask}


def anchor_columns(columns) -> tuple[list[str], list[str]]:
    """The anchor names of a row's precomputed columns: (with sequence sums, with per-token values)."""
    columns = set(columns)
    sequence = sorted(c[: -len(SEQUENCE_SUFFIXES[0])] for c in columns if c.endswith(SEQUENCE_SUFFIXES[0]))
    tokens = sorted(c[: -len(TOKEN_SUFFIXES[0])] for c in columns if c.endswith(TOKEN_SUFFIXES[0]))
    return [a for a in sequence if a + SEQUENCE_SUFFIXES[1] in columns], [
        a for a in tokens if a + TOKEN_SUFFIXES[1] in columns
    ]


def with_packing(batch: dict, collator) -> dict[str, torch.Tensor]:
    """``batch`` plus its packed rows when the collator is padding-free (see alignment.data.packing)."""
    if collator.padding_free:
        batch.update(
            pack_batch(
                batch["input_ids"], batch["attention_mask"], collator.pad_token_id, collator.single_row,
                collator.pad_to_multiple_of,
            )
        )  # fmt: skip
    return batch


@dataclass
class PreferenceCollator:
    """Preference rows -> the [chosen; rejected] batch (module docstring). ``padding_free``: add the packed
    rows; ``single_row``: pack them into one row (flash-attention's varlen path needs it)."""

    pad_token_id: int
    pad_to_multiple_of: int | None = None
    padding_free: bool = False
    single_row: bool = False

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not rows:
            raise ValueError("PreferenceCollator got an empty batch")
        prompts = [row.get("chosen_prompt_ids", row["prompt_ids"]) for row in rows] + [
            row.get("rejected_prompt_ids", row["prompt_ids"]) for row in rows
        ]  # each completion's own prompt where trl's rules give one (alignment.data.trl_rules)
        completions = [row["chosen_ids"] for row in rows] + [row["rejected_ids"] for row in rows]
        batch = pad_sequences(prompts, completions, self.pad_token_id, self.pad_to_multiple_of)
        sequence, tokens = anchor_columns(rows[0])
        for name in sequence:
            for suffix in SEQUENCE_SUFFIXES:
                batch[name + suffix] = torch.tensor([float(row[name + suffix]) for row in rows], dtype=torch.float32)
        for name in tokens:
            values = [row[name + TOKEN_SUFFIXES[0]] for row in rows] + [row[name + TOKEN_SUFFIXES[1]] for row in rows]
            batch[f"{name}_token_logps"] = _place(values, prompts, batch["input_ids"].shape)
        if "margin" in rows[0]:
            batch["margin"] = torch.tensor([float(row["margin"]) for row in rows], dtype=torch.float32)
        return with_packing(batch, self)


def _place(values: list[list[float]], prompts: list[list[int]], shape) -> torch.Tensor:
    """Per-completion-token values at their token positions in a [N, T] float32 tensor (0 elsewhere)."""
    out = torch.zeros(shape, dtype=torch.float32)
    for i, (row, prompt) in enumerate(zip(values, prompts)):
        out[i, len(prompt) : len(prompt) + len(row)] = torch.tensor(list(row), dtype=torch.float32)
    return out


@dataclass
class SFTCollator:
    """Supervised rows {prompt_ids, completion_ids} -> input_ids, attention_mask, completion_mask [B, T],
    right-padded to the longest row (optionally to a multiple of ``pad_to_multiple_of``); with
    ``padding_free`` the packed rows too."""

    pad_token_id: int
    pad_to_multiple_of: int | None = None
    padding_free: bool = False
    single_row: bool = False

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not rows:
            raise ValueError("SFTCollator got an empty batch")
        prompts = [row["prompt_ids"] for row in rows]
        completions = [row["completion_ids"] for row in rows]
        return with_packing(pad_sequences(prompts, completions, self.pad_token_id, self.pad_to_multiple_of), self)
