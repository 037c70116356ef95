"""Exact fingerprints of tensors, models and tokenized datasets (the reference cache's key)."""

from __future__ import annotations

import hashlib
import json

import torch
from torch import nn

from alignment.models import unwrap


def tensors_fingerprint(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name, value in sorted(tensors.items()):
        digest.update(name.encode())
        digest.update(value.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:20]


def model_fingerprint(model: nn.Module) -> str:
    """sha256 of the config and of every parameter's bytes (exact, and cheap for the models we cache for)."""
    inner = unwrap(model)
    digest = hashlib.sha256()
    config = getattr(inner, "config", None)
    if config is not None:
        digest.update(config.to_json_string(use_diff=False).encode())
    digest.update(tensors_fingerprint(inner.state_dict()).encode())
    return digest.hexdigest()[:20]


def dataset_fingerprint(dataset) -> str:
    digest = hashlib.sha256()
    for key in ("prompt_ids", "chosen_ids", "rejected_ids"):
        digest.update(json.dumps([list(x) for x in dataset[key]]).encode())
    return digest.hexdigest()[:20]
