"""Sequence parallelism on fake tensors, for the planner: one rank's step of a recipe with ``sequence_parallel_size``
N (DeepSpeed Ulysses, alignment.long_context.sequence_parallel) under ZeRO-2.

The rank's step is simulated on its shard: every sequence's T/N positions through the recipe's real trainer. Its
attention is DeepSpeed's swap, counted as DeepSpeed makes it: the all-to-all turns q, k, v [b, H, T/N, d] into new
tensors [b, H/N, T, d] (the whole sequence for H/N heads), attention runs on those, and a second all-to-all turns
its output back into a new [b, H, T/N, d] tensor. The collectives move data between ranks and allocate nothing else
on the device; the position ids gathered for the whole sequence are counted.

ZeRO-2 (arXiv 1910.02054, stage 2) keeps the bf16 weights whole on every rank and partitions the rest of a trained
parameter's 16 bytes over the N data-parallel ranks (float32 master weight, Adam's two moments, the float32 gradient
partition); gradients are reduced in buckets as the backward forms them:

    peak per rank = 2 * trained + frozen bytes + 14 * trained / N + transient + 2 reduce buckets

``transient`` is the simulated step's peak of everything but the parameters' gradients (alignment.planning.zero3
does the same for ZeRO-3), a reduce bucket hidden^2 bf16 values (transformers' ``auto``). A model of DeepSpeed, not a
run of it: expect a real rank within 1-2 GB (its flat buffers).
"""

from __future__ import annotations

import contextlib
from unittest import mock

import torch

from alignment.planning.zero3 import Share

PARTITIONED_BYTES = 14  # of a trained parameter's 16 under bf16 + Adam: all but its bf16 weight


def share_zero2(model: torch.nn.Module, anchors: list[torch.nn.Module], transient: int, devices: int,
                hidden: int) -> Share:  # fmt: skip
    """The per-rank memory of ``model`` (trained), ``anchors`` (frozen copies) and a step's ``transient``."""
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    element = next(model.parameters()).element_size()
    whole = sum(p.numel() * p.element_size() for p in model.parameters())  # bf16 weights, trained and frozen
    whole += sum(p.numel() * p.element_size() for m in anchors for p in m.parameters())
    partitioned = whole + PARTITIONED_BYTES * trained // devices
    return Share(devices, partitioned, transient, 0, 2 * hidden * hidden * element)


@contextlib.contextmanager
def ulysses_attention(size: int, implementation: str = "sdpa"):
    """Within the block, the model's attention (``implementation``, which DeepSpeed's UlyssesSPAttentionHF wraps)
    runs as DeepSpeed Ulysses over ``size`` ranks would on this rank: the swapped q, k, v and the swapped-back
    output are new tensors of their shapes."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    core = ALL_ATTENTION_FUNCTIONS[implementation]

    def gathered(t: torch.Tensor) -> torch.Tensor:
        """[b, h, T/N, d] -> [b, h/N, T, d]; fewer heads than ranks: DeepSpeed repeats each head over N/h ranks,
        one head per rank."""
        b, h, s, d = t.shape
        return t.new_empty(b, max(h // size, 1), s * size, d)

    def attention(module, query, key, value, attention_mask, *args, **kwargs):
        heads, kv = query.shape[1], key.shape[1]
        if heads % size or (kv % size and size % kv):
            raise ValueError(f"sequence parallelism over {size} ranks needs heads ({heads}) divisible by it and "
                             f"key/value heads ({kv}) divisible by it or dividing it")  # fmt: skip
        q, k, v = (gathered(t) for t in (query, key, value))  # [b, H/N, T, d]
        if "position_ids" in kwargs and kwargs["position_ids"] is not None:
            kwargs["position_ids"] = kwargs["position_ids"].repeat(1, size)
        out, weights = core(module, q, k, v, None, *args, **kwargs)  # [b, T, H/N, d] (transformers' layout)
        b, s, h, d = out.shape
        return out.new_empty(b, s // size, h * size, d), weights

    with mock.patch.dict(ALL_ATTENTION_FUNCTIONS._global_mapping, {implementation: attention}):
        yield
