"""Long sequences under sdpa or eager attention without an L x L mask.

A padded batch (a pair's chosen and rejected completions differ in length) or a packed row makes transformers
build an attention mask for sdpa and eager attention: a boolean (sdpa) or float (eager) tensor [N, 1, T, T] for
N rows of T positions (``masking_utils.sdpa_mask``; a block-diagonal one for packed rows). At T = 212,992 and a
pair (N = 2) that is 84.5 GiB as booleans, and torch's memory-efficient kernel turns it into a bias in the
query's dtype (twice that) for every layer. Flash attention needs none (it unpads instead).

When the mask would be larger than ``MASK_LIMIT_BYTES`` (1 GiB), the backbone runs each sequence alone at its own
length: no padding, so transformers passes no mask and sdpa runs causal (``is_causal``), and its final hidden
states are put back in the padded layout, zeros on padding. Every layer sees the same tokens and positions as in
the padded batch, so the states, the loss and the gradients are those of the padded batch (up to float rounding:
tests/long_context/test_unmasked.py). The cost: N backbone calls instead of one (no batching across the rows),
which at these lengths is the same work. The trainer says so once, in a log line.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import torch

logger = logging.getLogger(__name__)

#: the largest attention mask a batch may make the backbone build, in bytes
MASK_LIMIT_BYTES = 2**30
#: implementations whose padded (or packed) batches get an [N, 1, T, T] mask
MASKED = ("sdpa", "eager")
_said: set[str] = set()


def attention_of(module: torch.nn.Module) -> str:
    config = getattr(module, "config", None)
    return str(getattr(config, "_attn_implementation", None) or "eager")


def mask_bytes(module: torch.nn.Module, attention_mask: torch.Tensor | None, packed_ids: torch.Tensor | None) -> int:
    """The bytes of the attention mask transformers would build for this batch (0 when it builds none)."""
    impl = attention_of(module)
    if impl not in MASKED:
        return 0
    element = 1 if impl == "sdpa" else next(module.parameters()).element_size()
    if packed_ids is not None:
        rows, length = packed_ids.shape
        return rows * length * length * element
    if attention_mask is None or attention_mask.dim() != 2:
        return 0
    n, t = attention_mask.shape
    size = n * t * t * element
    if size > MASK_LIMIT_BYTES and bool(attention_mask.all()):  # no padding: transformers builds no mask
        return 0
    return size  # (at most the limit: whether the batch is padded does not matter then)


def too_large(module, attention_mask, packed_ids=None) -> bool:
    size = mask_bytes(module, attention_mask, packed_ids)
    if size <= MASK_LIMIT_BYTES:
        return False
    impl = attention_of(module)
    if impl not in _said:
        _said.add(impl)
        logger.warning(
            "attention %s would build a %.1f GiB [N, 1, T, T] mask for this batch (padding or packing): each sequence "
            "runs through the backbone alone instead (no mask, the same result; flash_attention_2 needs neither)",
            impl,
            size / 2**30,
        )
    return True


def rows_alone(inner: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs):
    """The backbone ``inner`` on each row's own tokens, one row at a time; its final hidden states (and, when
    asked, every layer's) in the padded layout [N, T, H] (zeros on padding), router logits concatenated."""
    n, t = input_ids.shape
    keep = attention_mask.bool()
    outs, where = [], []
    for i in range(n):
        positions = keep[i].nonzero().squeeze(1)
        where.append(positions)
        outs.append(inner(input_ids=input_ids[i, positions].unsqueeze(0), use_cache=False, **kwargs))

    def padded(states: list[torch.Tensor]) -> torch.Tensor:
        rows = [s.new_zeros((t, *s.shape[2:])).index_copy(0, p, s[0]) for s, p in zip(states, where)]
        return torch.stack(rows)

    out = SimpleNamespace(last_hidden_state=padded([last_state(o) for o in outs]), padded_layout=True)
    layers = getattr(outs[0], "hidden_states", None)
    out.hidden_states = None if layers is None else tuple(padded([o.hidden_states[j] for o in outs])
                                                          for j in range(len(layers)))  # fmt: skip
    router = getattr(outs[0], "router_logits", None)
    if router is not None:
        out.router_logits = tuple(torch.cat([o.router_logits[j] for o in outs]) for j in range(len(router)))
    return out


def last_state(out) -> torch.Tensor:
    """A backbone output's final hidden states (a model output or a tuple)."""
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
