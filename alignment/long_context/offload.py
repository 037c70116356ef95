"""Activation offloading: the tensors autograd saves for the backward pass (under activation checkpointing, the
hidden states between decoder layers) are copied to CPU memory as the forward pass makes them and copied back
when the backward pass reaches them, so the device holds one layer's recomputation at a time instead of every
layer's checkpoint.

The work is trl's ``OffloadActivations`` (``trl.models.activation_offloading``, the manager behind SFTConfig's
``activation_offloading``): on a GPU into pinned memory on a side stream (the copy of one tensor overlaps the
compute of the next, at most five tensors in flight), tensors under 1 KiB, parameters and the LM head's inputs left
where they are. On the CPU (tests, ``use_cpu``) the same manager runs with the CPU as its device: every saved tensor
is copied into a new host tensor and the original released, which is what the tests check (exactness and the
original storages freed), without pinned memory or streams.

The fused log-softmax op is kept out of it (``keep_on_device``): what it saves (dh, formed in the forward) is read
by the first step of the backward pass, so a round trip through the host would cost time and save nothing.
"""

from __future__ import annotations

import contextlib
from unittest import mock

import torch


def offload_context(model: torch.nn.Module, device: torch.device):
    """trl's activation-offloading context for ``model`` training on ``device`` (one per trainer: it registers
    hooks on the model's LM head). Enter it around a training step's forward and backward."""
    from trl.models.activation_offloading import get_act_offloading_ctx_manager

    if torch.device(device).type != "cpu":
        return get_act_offloading_ctx_manager(model, use_pin_memory=True, use_streams=True, warn_if_no_head=False)
    # trl asks torch for the current accelerator, which a CPU-only machine has none of: the CPU is the device here
    with mock.patch.object(torch.accelerator, "current_accelerator", lambda *args, **kwargs: torch.device("cpu")):
        return get_act_offloading_ctx_manager(model, use_pin_memory=False, use_streams=False, warn_if_no_head=False)


def keep_on_device():
    """A region whose saved tensors stay where they are, inside an offloading context (the innermost
    saved-tensors hooks win); outside one it changes nothing."""
    return torch.autograd.graph.saved_tensors_hooks(_same, _same)


def _same(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


def maybe(enabled: bool, make) -> contextlib.AbstractContextManager:
    """``make()`` when ``enabled``, else a context that does nothing."""
    return make() if enabled else contextlib.nullcontext()
