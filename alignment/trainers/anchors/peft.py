"""The PEFT side of anchors: the adapter-disabled model, snapshots of adapter weights and swapping them in."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn


def is_peft(model) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "disable_adapter")


def unwrap_peft(model):
    while not hasattr(model, "peft_config") and hasattr(model, "module"):
        model = model.module
    return model


@contextmanager
def adapter_disabled(model: nn.Module):
    """The base model of a PEFT model (LoRA off) for the duration of the block."""
    with unwrap_peft(model).disable_adapter():
        yield


def adapter_snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the PEFT model's trainable (adapter) parameters: the starting adapter as an anchor."""
    return {n: p.detach().clone() for n, p in unwrap_peft(model).named_parameters() if p.requires_grad}


@contextmanager
def adapter_swapped(model: nn.Module, state: dict[str, torch.Tensor]):
    """The PEFT model with the parameters named in ``state`` set to its values, restored afterwards."""
    params = dict(unwrap_peft(model).named_parameters())
    missing = [n for n in state if n not in params]
    if missing:
        raise ValueError(f"the adapter state names parameters the model does not have: {missing[:3]}")
    saved = {}
    with torch.no_grad():
        for name, value in state.items():
            if hasattr(params[name], "ds_id"):
                raise NotImplementedError(
                    "adapter-state anchors are not supported under DeepSpeed ZeRO-3 (partitioned adapter weights); "
                    "pass the anchor as a model or as precomputed <name>_chosen_logps/<name>_rejected_logps columns"
                )
            saved[name] = params[name].detach().clone()
            params[name].copy_(value.to(params[name].device, params[name].dtype))
    try:
        yield
    finally:
        with torch.no_grad():
            for name, value in saved.items():
                params[name].copy_(value)


def _detached(state: dict) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(v).detach().clone() for k, v in state.items()}
