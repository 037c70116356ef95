"""Padding-free batches: the sequences of a padded batch packed end to end into a few rows.

A padded preference batch of B pairs is [2B, T] with T the longest sequence: on length-skewed data most of it
is padding, and the backbone (attention, MLPs) pays for every padded position. Packed, the same 2B sequences
sit end to end in R rows of L positions (first-fit decreasing; L is the longest sequence, rounded up to
``pad_to_multiple_of``, or the total when ``single_row``), with ``position_ids`` restarting at 0 at every
sequence. transformers keeps packed sequences apart from those position ids alone (``attention_mask=None``,
no cache): flash-attention's varlen kernels on one row (it needs ``single_row``), a block-diagonal causal
mask built from them for sdpa / eager (``masking_utils.find_packed_sequence_indices``), sliding windows
included.

Only the backbone runs on the packed rows; its final hidden states are put back in the padded layout
(:meth:`Packing.unpack`, a gather of [2B, T, H]: no logits) so that the fused op, the losses and the
per-token inputs read the usual [chosen; rejected] rows. The op compacts the scored tokens anyway, so the
padded positions cost nothing past the backbone.

Batch keys added by :func:`pack_batch` (the padded ``input_ids`` / ``attention_mask`` / ``completion_mask``
stay, they give the layout):

- ``packed_input_ids`` [R, L]: the sequences end to end, each row's tail ``pad_token_id``;
- ``packed_position_ids`` [R, L]: 0..len-1 per sequence (a row's padded tail counts as one more sequence);
- ``packed_index`` [N, T]: for each padded position, its flat position in the packed rows (``r * L + j``),
  -1 on padding.

Example (two sequences of 3 and 2 tokens, T = 3, one row of L = 5)::

    packed_input_ids    [[a0 a1 a2 b0 b1]]
    packed_position_ids [[ 0  1  2  0  1]]
    packed_index        [[0 1 2], [3 4 -1]]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

KEYS = ("packed_input_ids", "packed_position_ids", "packed_index")


@dataclass
class Packing:
    """The packed rows of a batch (see the module docstring) and the way back to its padded layout."""

    input_ids: torch.Tensor  # [R, L]
    position_ids: torch.Tensor  # [R, L]
    index: torch.Tensor  # [N, T], -1 on padding

    @classmethod
    def from_batch(cls, batch: dict) -> Packing | None:
        """The batch's packing, or None for a padded batch."""
        if KEYS[0] not in batch:
            return None
        return cls(*(batch[k] for k in KEYS))

    @property
    def token_mask(self) -> torch.Tensor:
        """[R, L]: 1 on the positions that hold a sequence's token, 0 on each row's padded tail."""
        mask = torch.zeros(self.input_ids.numel(), dtype=torch.long, device=self.input_ids.device)
        mask[self.index[self.index >= 0]] = 1
        return mask.view_as(self.input_ids)

    def unpack(self, states: torch.Tensor) -> torch.Tensor:
        """Per-position states of the packed rows [R, L, ...] -> the padded layout [N, T, ...] (zeros on
        padding); differentiable (the backward scatters the gradient to the packed positions)."""
        flat = states.reshape(self.input_ids.numel(), *states.shape[2:])
        picked = flat[self.index.clamp(min=0)]
        keep = (self.index >= 0).view(*self.index.shape, *([1] * (states.dim() - 2)))
        return picked * keep.to(picked.dtype)


def plan_rows(lengths: list[int], capacity: int) -> list[list[int]]:
    """First-fit decreasing: the sequences (by index) of each row, none longer than ``capacity`` in all."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(capacity - lengths[i])
    return rows


def pack_batch(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    pad_token_id: int,
    single_row: bool = False,
    pad_to_multiple_of: int | None = None,
) -> dict[str, torch.Tensor]:
    """The packed keys (module docstring) for a right-padded batch ``input_ids`` / ``attention_mask`` [N, T]."""
    lengths = attention_mask.sum(dim=1).tolist()
    if min(lengths) < 1:
        raise ValueError("pack_batch: every row needs at least one token")
    capacity = sum(lengths) if single_row else max(lengths)
    if pad_to_multiple_of:
        capacity = -(-capacity // pad_to_multiple_of) * pad_to_multiple_of
    rows = plan_rows(lengths, capacity)
    ids = torch.full((len(rows), capacity), pad_token_id, dtype=torch.long)
    positions = torch.zeros((len(rows), capacity), dtype=torch.long)
    index = torch.full(input_ids.shape, -1, dtype=torch.long)
    for r, members in enumerate(rows):
        start = 0
        for i in members:
            n = lengths[i]
            ids[r, start : start + n] = input_ids[i, :n]
            positions[r, start : start + n] = torch.arange(n)
            index[i, :n] = torch.arange(r * capacity + start, r * capacity + start + n)
            start += n
        positions[r, start:] = torch.arange(capacity - start)  # the tail: one more sequence, never read
    return {KEYS[0]: ids, KEYS[1]: positions, KEYS[2]: index}
