"""The generation phase of online DPO, planned: at every step the policy samples two completions per prompt
(transformers ``generate`` with its KV cache, alignment.trainers.builtin.online_dpo), with the model's parameters,
the reference and the optimizer's state resident (the gradients are released by then). The phase's memory is the
cache - per layer, keys and values of [2B, kv_heads, prompt + new tokens, head_dim] in the model's dtype - beside
the prefill's activations over the prompts and each decode step's logits and sampling buffers.

How it is simulated: transformers' own ``generate`` runs on the fake model, with every completion taken as
running to ``max_new_tokens`` (no EOS: the worst case, and what the plan must hold). The cache grows to its
largest at the last decode step; running all N decode steps of an 8B model on fake tensors takes minutes, so the
two moments that can set the peak are run instead: (a) the prefill of the prompts and the first decode step, and
(b) the last decode step, from a ``DynamicCache`` already holding prompt + N - 1 positions (filled through the cache's
own ``update``). The planned peak is the larger; tests/planning compares it with a real ``generate`` of all N
steps on this CPU.

Under ZeRO-3 the policy's parameters are gathered whole for generation (trl's ``unwrap_model_for_generation``,
``ds3_gather_for_generation``): each rank then holds the full model beside its shards (:func:`gathered_bytes`).
"""

from __future__ import annotations

import contextlib
from unittest import mock

import torch


def generation_config(trainer, new_tokens: int):
    """The trainer's own sampling settings, every completion ``new_tokens`` long."""
    config = trainer.generation_config()
    config.max_new_tokens = config.min_new_tokens = new_tokens
    return config


@contextlib.contextmanager
def _stop_at(length: int):
    """generate's stop check answers "finished" once the rows reach ``length`` tokens (fake tensors cannot be read
    to see an EOS: none comes, the worst case)."""
    from transformers.generation import utils

    def finished(self, unfinished, tokens, current):
        return current >= length

    with mock.patch.object(utils.StopCheck, "__call__", finished), mock.patch.object(
        utils.DeferredStopCheck, "is_supported", staticmethod(lambda *args, **kwargs: False)
    ):  # fmt: skip
        yield


def _prompts(model, batch: int, prompt: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch`` prompts of ``prompt`` tokens, each twice as the trainer samples them, and their mask."""
    token = min(5, model.config.vocab_size - 1)
    ids = torch.full((2 * batch, prompt), token, device=model.get_input_embeddings().weight.device)
    return ids, torch.ones_like(ids)


@contextlib.contextmanager
def _evaluating(model):
    """The model in eval mode for the block (as the trainer samples), its mode restored after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def filled_cache(model, rows: int, positions: int):
    """A ``DynamicCache`` holding ``positions`` keys and values per layer for ``rows`` rows (zeros; fake where the
    model is), filled through the cache's own ``update``."""
    from transformers import DynamicCache

    cfg = model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    weight = model.get_input_embeddings().weight
    cache = DynamicCache(config=cfg)
    for layer in range(cfg.num_hidden_layers):
        keys = torch.zeros(rows, heads, positions, head_dim, dtype=weight.dtype, device=weight.device)
        cache.update(keys, torch.zeros_like(keys), layer)
    return cache


@torch.no_grad()
def simulate_generation(trainer, batch: int, prompt: int, new_tokens: int, tracker=None) -> None:
    """The generation phase of ``batch`` prompts of ``prompt`` tokens, ``new_tokens`` sampled per completion, on
    the trainer's model (fake or real): (a) then (b) of the module docstring, each phase recorded when a tracker is
    given (``generation``)."""
    model = trainer.model
    config = generation_config(trainer, new_tokens)
    phase = tracker.phase("generation") if tracker is not None else contextlib.nullcontext()
    with _evaluating(model), phase:
        ids, mask = _prompts(model, batch, prompt)
        with _stop_at(prompt + min(2, new_tokens)):  # (a) the prefill and the first decode step
            config.min_new_tokens = min(2, new_tokens)
            model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
        if new_tokens > 2:  # (b) the last decode step, the cache at its largest
            total = prompt + new_tokens
            ids, mask = _prompts(model, batch, total - 1)
            cache = filled_cache(model, 2 * batch, total - 2)
            config.min_new_tokens = 1
            with _stop_at(total):
                model.generate(input_ids=ids, attention_mask=mask, generation_config=config, cache=cache)
            del cache


@torch.no_grad()
def measure_generation(trainer, batch: int, prompt: int, new_tokens: int) -> None:
    """The same phase for real: ``generate`` of all ``new_tokens`` decode steps (no early stop)."""
    model = trainer.model
    with _evaluating(model):
        ids, mask = _prompts(model, batch, prompt)
        model.generate(input_ids=ids, attention_mask=mask, generation_config=generation_config(trainer, new_tokens))


def gathered_bytes(model, devices: int) -> int:
    """What a rank holds above its shards while ZeRO-3 gathers the policy for generation: every parameter but its
    own 1/devices share."""
    from alignment.planning.tracker import nbytes

    total = nbytes(model.parameters())
    return total - total // devices
