"""Run any causal LM's backbone and apply the fused op with its LM head (README, "The fused log-softmax op").

The model's own forward would build [B, T, V] logits; instead we run the backbone (the base model under
``base_model_prefix``, PEFT unwrapped) to the final hidden states and hand them with the LM head weight
to :mod:`alignment.ops`. Softcapping and logit scaling are read from the config (Gemma-2's
``final_logit_softcapping``, Cohere's ``logit_scale``, Granite's ``logits_scaling`` ...).

- PEFT: LoRA layers inside the backbone run as usual (and ``disable_adapter()`` gives the reference
  model); a LoRA-wrapped or ``modules_to_save`` LM head is resolved to its effective weight.
- DeepSpeed ZeRO-3: the head weight is partitioned; the op then runs as the head module's own forward, so
  ZeRO-3's hooks gather the weight for the forward and again for the backward, and reduce its gradient.
- FSDP2: a DTensor head weight is replaced by its full tensor.

Example::

    out = causal_token_logps(model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    out.logps      # [B, T-1]: log p(x_{t+1} | x_{<=t}) at completion positions, 0 elsewhere
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from alignment.data.packing import Packing
from alignment.long_context.offload import keep_on_device
from alignment.long_context.unmasked import last_state as _last
from alignment.long_context.unmasked import rows_alone, too_large
from alignment.models import unwrap
from alignment.ops import TokenLogps, pair_fused_loss, token_logps


@dataclass
class HeadSpec:
    """The LM head as the op needs it."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    softcap: float | None
    logit_scale: float
    module: nn.Module


def backbone(model: nn.Module) -> nn.Module:
    """The decoder stack that returns the final (normed) hidden states."""
    inner = unwrap(model)
    prefix = getattr(inner, "base_model_prefix", "")
    found = getattr(inner, prefix, None) if prefix else None
    if isinstance(found, nn.Module) and found is not inner:
        return found
    if hasattr(inner, "get_decoder"):
        return inner.get_decoder()
    raise ValueError(f"cannot find the backbone of {type(inner).__name__}: no '{prefix}' submodule")


def _logit_scale(config) -> float:
    for name in ("logit_scale", "output_multiplier", "lm_head_multiplier"):
        value = getattr(config, name, None)
        if value is not None:
            return float(value)
    scaling = getattr(config, "logits_scaling", None)
    if scaling is not None:  # Granite divides the logits by it
        return 1.0 / float(scaling)
    return 1.0


def _effective_weight(head: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Weight and bias of a plain, LoRA-wrapped or modules_to_save-wrapped linear head."""
    if hasattr(head, "modules_to_save") and hasattr(head, "original_module"):
        active = getattr(head, "active_adapters", [])
        use = [a for a in active if a in head.modules_to_save]
        head = (
            head.original_module
            if getattr(head, "disable_adapters", False) or not use
            else head.modules_to_save[use[0]]
        )
    if hasattr(head, "base_layer") and hasattr(head, "get_delta_weight"):
        weight, bias = head.base_layer.weight, head.base_layer.bias
        if not getattr(head, "disable_adapters", False) and not getattr(head, "merged", False):
            for name in head.active_adapters:
                if name in getattr(head, "lora_A", {}):
                    weight = weight + head.get_delta_weight(name)
        return weight, bias
    return head.weight, getattr(head, "bias", None)


def lm_head(model: nn.Module) -> HeadSpec:
    inner = unwrap(model)
    head = inner.get_output_embeddings()
    if head is None:
        raise ValueError(f"{type(inner).__name__} has no output embeddings (LM head)")
    weight, bias = _effective_weight(head)
    config = inner.config.get_text_config() if hasattr(inner.config, "get_text_config") else inner.config
    softcap = getattr(config, "final_logit_softcapping", None)
    return HeadSpec(weight, bias, float(softcap) if softcap else None, _logit_scale(config), head)


def _full(t: torch.Tensor | None) -> torch.Tensor | None:
    if t is not None and hasattr(t, "full_tensor"):  # FSDP2 DTensor
        return t.full_tensor()
    return t


def _zero3_partitioned(t: torch.Tensor) -> bool:
    return hasattr(t, "ds_id")


def call_as_forward(caller: nn.Module, owner: nn.Module, fn: Callable, *args):
    """Call ``caller(*args)`` with ``owner.forward`` temporarily replaced by ``fn`` (a function returning a
    dataclass), so that the hooks and bookkeeping of ``caller`` (ZeRO-3's parameter gathering, DDP's
    gradient all-reduce) wrap our computation. The dataclass travels as a plain dict of its fields, which
    those hooks can walk."""
    saved = owner.__dict__.get("forward")
    kind = []

    def forward(*inner_args):
        result = fn(*inner_args)
        kind.append(type(result))
        return {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}

    owner.forward = forward
    try:
        fields = caller(*args)
    finally:
        if saved is None:
            del owner.forward
        else:
            owner.forward = saved
    return kind[0](**fields)


def run_with_head(head: HeadSpec, fn: Callable, *args):
    """Call ``fn(weight, bias, *args)``; under ZeRO-3 as the head module's forward (hooks gather the weight)."""
    if not _zero3_partitioned(head.weight):
        return fn(_full(head.weight), _full(head.bias), *args)
    module = head.module

    def forward(*inner_args):
        weight, bias = _effective_weight(module)
        return fn(weight, bias, *inner_args)

    return call_as_forward(module, module, forward, *args)


def run_backbone(model: nn.Module, input_ids, attention_mask, packing: Packing | None = None, **kwargs):
    """The backbone's output on a padded batch, or on its packed rows (``packing``: position ids restarting
    per sequence, no attention mask; alignment.data.packing). When either would make sdpa or eager attention
    build an attention mask above 1 GiB, each sequence runs alone instead and the output is already in the padded
    layout (``padded_layout``; alignment.long_context.unmasked)."""
    inner = backbone(model)
    if attention_mask is not None and too_large(inner, attention_mask, None if packing is None else packing.input_ids):
        return rows_alone(inner, input_ids, attention_mask, **kwargs)
    if packing is None:
        return inner(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **kwargs)
    return inner(input_ids=packing.input_ids, position_ids=packing.position_ids, use_cache=False, **kwargs)


def _padded(out, packing: Packing | None):
    """``out``'s per-position states -> the padded layout (identity when they are in it already)."""
    if packing is None or getattr(out, "padded_layout", False):
        return lambda t: t
    return packing.unpack


def hidden_states(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    capture=None,
    packing: Packing | None = None,
    **kwargs,
):
    """Final hidden states [B, T, H] of the backbone (no LM head); with ``packing`` the backbone runs on the
    packed rows and the states come back in the padded layout. ``capture`` (a dict) receives the backbone's
    whole output under "outputs" (e.g. a mixture of experts' router logits, with output_router_logits=True)."""
    out = run_backbone(model, input_ids, attention_mask, packing, **kwargs)
    if capture is not None:
        capture["outputs"] = out
    return _padded(out, packing)(_last(out))


def packing_error(model: nn.Module, input_ids: torch.Tensor, lengths: list[int]) -> float:
    """How far packing moves the backbone's outputs: two of the batch's sequences (at most 16 tokens each) run
    packed in one row and each alone, no grad, dropout off; the largest change of the second sequence's
    final hidden states relative to their largest magnitude (~1e-7 in float32 for a model whose attention
    keeps packed sequences apart, order 1 for one that lets the second sequence see the first)."""
    a, b = (input_ids[i, : min(lengths[i], 16)].unsqueeze(0) for i in (0, 1 % len(lengths)))
    positions = torch.cat([torch.arange(a.shape[1]), torch.arange(b.shape[1])]).unsqueeze(0).to(a.device)
    inner = backbone(model)
    was_training = inner.training
    inner.eval()
    try:
        with torch.no_grad():
            packed = _last(inner(input_ids=torch.cat([a, b], dim=1), position_ids=positions, use_cache=False))
            alone = _last(inner(input_ids=b, use_cache=False))
    finally:
        inner.train(was_training)
    change = (packed[:, a.shape[1] :] - alone).abs().max()
    return float(change / alone.abs().max().clamp(min=1e-12))


@dataclass
class ReferenceStates:
    """What one no-grad pass of a (reference) model gives a token-level loss, for the shifted targets:
    per-token log-probabilities [B, T-1], final hidden states [B, T-1, H] (the positions that predict the
    scored tokens), the hidden states at EVERY position of the embeddings and of every layer (L + 1 tensors
    [B, T, H], when asked: ``[:, :-1]`` are the predicting positions, ``[:, 1:]`` the scored tokens' own) and
    the LM head (weight and bias detached and whole, for the kernel's KL path)."""

    token_logps: torch.Tensor
    hidden: torch.Tensor
    layers: tuple[torch.Tensor, ...] | None
    head_weight: torch.Tensor
    head_bias: torch.Tensor | None


def _whole(t: torch.Tensor | None) -> torch.Tensor | None:
    """A detached full copy of a parameter (gathered when ZeRO-3 partitions it)."""
    if t is None:
        return None
    if _zero3_partitioned(t):
        import deepspeed

        with deepspeed.zero.GatheredParameters([t]):
            return t.detach().clone()
    return _full(t).detach()


def reference_states(
    model: nn.Module,
    input_ids,
    attention_mask,
    completion_mask,
    all_layers: bool = False,
    packing: Packing | None = None,
    **op_kwargs,
) -> ReferenceStates:
    """One no-grad pass of ``model`` (already in the state wanted, e.g. adapters off): see ReferenceStates.
    With ``packing`` the backbone runs on the packed rows; every state comes back in the padded layout."""
    with torch.no_grad():
        out = run_backbone(model, input_ids, attention_mask, packing, output_hidden_states=all_layers)
        unpack = _padded(out, packing)
        last = unpack(_last(out))[:, :-1]
        layers = tuple(unpack(h) for h in out.hidden_states) if all_layers else None
        head = lm_head(model)
        targets = shifted_targets(input_ids, completion_mask)
        kwargs = {"softcap": head.softcap, "logit_scale": head.logit_scale, **op_kwargs}
        logps = run_with_head(head, lambda w, b, h, y: token_logps(h, w, y, bias=b, **kwargs), last, targets).logps
    return ReferenceStates(logps, last, layers, _whole(head.weight), _whole(head.bias))


def shifted_targets(input_ids: torch.Tensor, completion_mask: torch.Tensor | None, ignore_index: int = -100):
    """Targets [B, T-1] for hidden[:, :-1]: the next token where it is a completion token, else ignore_index."""
    targets = input_ids[:, 1:].clone()
    if completion_mask is not None:
        targets[completion_mask[:, 1:] == 0] = ignore_index
    return targets


def through_wrapper(model: nn.Module, fn: Callable, *args):
    """Run ``fn(*args)`` as the forward of a DDP wrapper's module, so that DDP prepares its gradient
    all-reduce (a direct call of the inner module would skip it); other models call ``fn`` directly."""
    from torch.nn.parallel import DistributedDataParallel

    if not isinstance(model, DistributedDataParallel):
        return fn(*args)
    return call_as_forward(model, model.module, fn, *args)


def _apply_head(
    model: nn.Module,
    op: Callable,
    input_ids,
    attention_mask,
    completion_mask,
    op_kwargs: dict,
    backbone_kwargs=None,
    capture=None,
    packing: Packing | None = None,
    shard: dict | None = None,
):
    """Backbone on ``input_ids`` (or on the packed rows of ``packing``; with ``backbone_kwargs``; its output
    into ``capture``), then ``op(hidden, weight, targets, bias=..., **kwargs)`` with the LM head (softcap and
    logit scale from the config), through the DDP / ZeRO-3 wrappers. ``shard``: a sequence-parallel batch's
    ``position_ids`` and ``shift_targets`` (alignment.long_context.sequence_parallel): every position is scored
    against its pre-shifted target."""

    def run(input_ids, attention_mask, completion_mask):
        extra = backbone_kwargs or {}
        if shard is None:
            hidden = hidden_states(model, input_ids, attention_mask, capture, packing, **extra)[:, :-1]
            targets = shifted_targets(input_ids, completion_mask)
        else:  # a sequence-parallel shard: its positions predict the targets shifted before the cut
            out = backbone(model)(input_ids=input_ids, position_ids=shard["position_ids"], use_cache=False, **extra)
            hidden, targets = _last(out), shard["shift_targets"]
        head = lm_head(model)
        kwargs = {"softcap": head.softcap, "logit_scale": head.logit_scale, **op_kwargs}

        def fn(weight, bias, h, y):
            with keep_on_device():  # what the op saves is read first thing in the backward: no host round trip
                return op(h, weight, y, bias=bias, **kwargs)

        return run_with_head(head, fn, hidden, targets)

    return through_wrapper(model, run, input_ids, attention_mask, completion_mask)


def causal_token_logps(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    completion_mask: torch.Tensor | None = None,
    packing: Packing | None = None,
    shard: dict | None = None,
    **op_kwargs,
) -> TokenLogps:
    """Per-token log-probabilities [B, T-1] of the completion tokens (``completion_mask``; every token when
    None), through the fused op; ``op_kwargs`` go to :func:`alignment.ops.token_logps` (entropy, ...).
    ``packing``: run the backbone on the batch's packed rows (alignment.data.packing); same outputs.
    ``shard``: a sequence-parallel shard ([B, T/N] values, its positions against the pre-shifted targets)."""
    scored = completion_mask if completion_mask is not None else attention_mask
    return _apply_head(model, token_logps, input_ids, attention_mask, scored, op_kwargs, packing=packing, shard=shard)


def causal_pair_loss(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    completion_mask: torch.Tensor,
    loss_fn,
    backbone_kwargs: dict | None = None,
    capture: dict | None = None,
    packing: Packing | None = None,
    shard: dict | None = None,
    **op_kwargs,
):
    """The pair-fused path on a [chosen; rejected] batch (the collator's layout): see
    :func:`alignment.ops.pair_fused_loss`. ``backbone_kwargs`` go to the backbone, whose output lands in
    ``capture["outputs"]`` when a dict is given; ``packing``: the backbone runs on the packed rows; ``shard``:
    a sequence-parallel shard (the loss function then carries ``sequence_sum``)."""

    def op(h, weight, y, **kwargs):
        return pair_fused_loss(h, weight, y, loss_fn, **kwargs)

    return _apply_head(
        model, op, input_ids, attention_mask, completion_mask, op_kwargs, backbone_kwargs, capture, packing, shard
    )
