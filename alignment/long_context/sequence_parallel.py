"""Sequence parallelism: one batch's sequences split across the N ranks of a group by position, with DeepSpeed's
Ulysses attention (``deepspeed.runtime.sequence_parallel.ulysses_sp``, Arctic Long Sequence Training, arXiv
2506.13996) through accelerate's ``ParallelismConfig(sp_backend="deepspeed")``: each rank runs the backbone on its
T/N positions, and attention swaps sequence shards for head shards (an all-to-all) so that every rank attends over
the whole sequence for H/N heads, then swaps back.

What this module adds for preference methods:

- ``parallelism_config(n)``: accelerate's configuration from the recipe's ``sequence_parallel_size`` (accelerate's
  launcher carries a parallelism configuration for FSDP2 only; under DeepSpeed it goes in the training arguments).
- ``ShardedBatches``: the data loader adapter. The ranks of a group each load a batch; every batch is gathered to
  the group and cut by position, so the group works through the N batches one after the other, each rank holding
  its T/N positions of every [2B, T] tensor (input ids, masks, the position ids Ulysses needs, and the shifted
  targets, cut after shifting so that a shard's last position predicts the next shard's first token); per-pair
  columns (precomputed reference values) stay whole. T is padded to a multiple of N at the end of the rows, which
  causal attention never lets a real token see.
- ``group_sum``: a sum over the group whose gradient passes through unchanged. The fused op sums each sequence's
  log-probabilities over its shard's tokens; the group sum makes them the whole sequence's, every rank evaluates
  the same loss on them, and the gradient that reaches each rank's tokens is d loss / d its tokens. DeepSpeed then
  sums the weights' gradients over the group (each rank's are those of its own positions).
"""

from __future__ import annotations

from collections import deque

import torch
import torch.distributed as dist

IGNORE = -100


def parallelism_config(size: int, attn_implementation: str = "sdpa"):
    """accelerate's ParallelismConfig for DeepSpeed Ulysses over ``size`` ranks (variable sequence lengths)."""
    from accelerate.parallelism_config import ParallelismConfig
    from accelerate.utils import DeepSpeedSequenceParallelConfig

    handler = DeepSpeedSequenceParallelConfig(
        sp_seq_length_is_variable=True, sp_attn_implementation=attn_implementation
    )
    return ParallelismConfig(sp_backend="deepspeed", sp_size=size, sp_handler=handler)


def check_method(supported: bool, method_name: str, size: int) -> None:
    """sequence_parallel_size > 1 for a method whose loss runs on shards (``supports_sequence_parallel``)."""
    if size > 1 and not supported:
        raise NotImplementedError(
            f"sequence_parallel_size > 1 is implemented for dpo, not {method_name} yet (docs/long-context.md)"
        )


def check_deepspeed_launch(config) -> None:
    """sequence_parallel_size > 1 runs under a DeepSpeed launch (accelerate's own error names no fix)."""
    import os

    from alignment.errors import UnavailableError

    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false") != "true" and not getattr(config, "deepspeed", None):
        raise UnavailableError("sequence_parallel_size > 1 runs under DeepSpeed: accelerate launch --config_file "
                               "accelerate_configs/deepspeed_ulysses.yaml -m alignment.cli train RECIPE")  # fmt: skip


def check_heads(model_config, size: int) -> None:
    """DeepSpeed Ulysses' rule, before any process group exists: the attention heads split evenly over the ``size``
    ranks, and the key/value heads either split evenly or are repeated over ``size / kv`` ranks each."""
    heads = getattr(model_config, "num_attention_heads", None)
    kv = getattr(model_config, "num_key_value_heads", None) or heads
    if heads is None:
        return
    if heads % size or (kv % size and size % kv):
        fits = max(d for d in range(1, min(size, heads) + 1) if heads % d == 0 and (kv % d == 0 or d % kv == 0))
        from alignment.errors import RecipeError

        raise RecipeError(
            f"sequence_parallel_size {size}: the model's {heads} attention heads must be divisible by it and its {kv} "
            f"key/value heads divisible by it or dividing it (DeepSpeed Ulysses splits heads across the ranks); "
            f"the largest size up to {size} that works is {fits}"
        )


def sequence_group():
    """DeepSpeed's sequence-parallel process group (made when accelerate prepares the model)."""
    from deepspeed.utils import groups

    return groups._get_sequence_parallel_group()


class _GroupSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group):
        out = x.clone()
        dist.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def group_sum(group):
    """x -> the sum of x over ``group``; the gradient passes through as it is (each rank evaluates the same loss
    of the summed values)."""

    def reduce(x: torch.Tensor) -> torch.Tensor:
        if not x.is_floating_point():
            out = x.clone()
            dist.all_reduce(out, group=group)
            return out
        return _GroupSum.apply(x, group)

    return reduce


def shifted(input_ids: torch.Tensor, scored: torch.Tensor) -> torch.Tensor:
    """[R, T] targets: position t predicts token t+1 where that token is scored, else IGNORE (the last position)."""
    targets = torch.full_like(input_ids, IGNORE)
    targets[:, :-1] = torch.where(scored[:, 1:].bool(), input_ids[:, 1:], IGNORE)
    return targets


def shard(batch: dict, rank: int, world: int, rows_key: str = "input_ids") -> dict:
    """This rank's positions of every [R, T] tensor of ``batch`` (T padded to a multiple of ``world``), with
    ``position_ids`` and ``shift_targets`` (the completion tokens' next-token targets); other entries whole."""
    ids = batch[rows_key]
    rows, length = ids.shape
    pad = -length % world
    out, step = {}, (length + pad) // world
    full = dict(batch)
    full["position_ids"] = torch.arange(length, device=ids.device).expand(rows, length)
    full["shift_targets"] = shifted(ids, batch["completion_mask"])
    for key, value in full.items():
        if torch.is_tensor(value) and value.dim() >= 2 and tuple(value.shape[:2]) == (rows, length):
            fill = IGNORE if key == "shift_targets" else 0
            if pad:
                tail = value.new_full((rows, pad, *value.shape[2:]), fill)
                if key == "position_ids":
                    tail = torch.arange(length, length + pad, device=ids.device).expand(rows, pad)
                value = torch.cat([value, tail], dim=1)
            out[key] = value[:, rank * step : (rank + 1) * step].contiguous()
        else:
            out[key] = value
    return out


class ShardedBatches:
    """A data loader adapter: each rank of the group loads a batch, the group gathers them and every rank gets its
    positions of each, in rank order (DeepSpeed's UlyssesSPDataLoaderAdapter's order, for our batches: per-pair
    columns are kept whole). ``len`` is the wrapped loader's times the group's size."""

    def __init__(self, loader, rank: int, world: int, group, device):
        self.loader, self.rank, self.world, self.group, self.device = loader, rank, world, group, device
        self._iter = None
        self._ready: deque = deque()

    def __len__(self) -> int:
        return len(self.loader) * self.world

    def __iter__(self):
        self._iter, self._ready = iter(self.loader), deque()
        return self

    def __next__(self) -> dict:
        if not self._ready:
            batch = next(self._iter)  # StopIteration ends the epoch on every rank together (same lengths)
            local = {k: v.cpu() if torch.is_tensor(v) else v for k, v in batch.items()}
            gathered = [None] * self.world
            dist.all_gather_object(gathered, local, group=self.group)
            for each in gathered:
                part = shard(each, self.rank, self.world)
                self._ready.append({k: v.to(self.device) if torch.is_tensor(v) else v for k, v in part.items()})
        return self._ready.popleft()

    def __getattr__(self, name):  # the Trainer reads the loader's sampler, dataset, batch_size ...
        return getattr(self.loader, name)


def preference_rows(register):
    """Wrap UlyssesSPAttentionHF.register_with_transformers so that the attention expects 2B rows per batch of B
    pairs ([chosen; rejected], the preference collator's layout) where accelerate passes B."""

    def wrapped(*args, micro_batch_size, **kwargs):
        return register(*args, micro_batch_size=2 * micro_batch_size, **kwargs)

    return wrapped
