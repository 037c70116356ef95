"""The fixed probe set: per-pair log-probabilities and gradients, on the model in eval mode.

One forward per pair on [chosen; rejected] through the fused op (never the full logits), then one backward
per response with ``torch.autograd.grad`` (the parameters' ``.grad`` used by the optimizer is untouched).
Gradients are taken w.r.t. the trainable parameters only (the LoRA parameters under LoRA), optionally
narrowed by a regular expression on the parameter names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
from torch import nn

from alignment.diagnostics.entanglement import grad_dot
from alignment.errors import UserError
from alignment.heads import causal_token_logps
from alignment.models import unwrap


class DiagnosticsError(UserError, ValueError):
    """A diagnostics option that cannot work (no parameter matches, too much memory): a user mistake."""


def trainable_parameters(model: nn.Module, pattern: str | None = None) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of the parameters that require grad, whose names match ``pattern`` (re.search)."""
    regex = re.compile(pattern) if pattern else None
    params = [(n, p) for n, p in unwrap(model).named_parameters() if p.requires_grad]
    if regex is not None:
        params = [(n, p) for n, p in params if regex.search(n)]
    if not params:
        raise DiagnosticsError(
            f"no trainable parameter matches diagnostics_params={pattern!r}" if pattern else "no trainable parameters"
        )
    return params


@dataclass
class PairProbe:
    """One pair at one moment: summed and per-token log-probabilities, gradient products, optionally the
    gradients themselves (lists over the probed parameters)."""

    logp_w: float
    logp_l: float
    token_logps_w: list[float]
    token_logps_l: list[float]
    inner: float = 0.0
    sq_w: float = 0.0
    sq_l: float = 0.0
    grad_w: list[torch.Tensor | None] | None = field(default=None, repr=False)
    grad_l: list[torch.Tensor | None] | None = field(default=None, repr=False)


def pair_logps(model: nn.Module, batch: dict):
    """Per-token log-probabilities [2, T-1] of a one-pair batch (the collator's [chosen; rejected] layout)."""
    out = causal_token_logps(model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    return out.logps, batch["completion_mask"][:, 1:].bool()


def probe_pair(model: nn.Module, batch: dict, params: list[nn.Parameter] | None, keep_grads: bool = False) -> PairProbe:
    """Log-probabilities of one pair and, when ``params`` is given, <g_w, g_l>, |g_w|^2, |g_l|^2."""
    with torch.set_grad_enabled(params is not None):
        logps, mask = pair_logps(model, batch)
    seq = logps.sum(dim=-1)
    values, flat = seq.detach(), logps.detach()
    probe = PairProbe(
        logp_w=float(values[0]),
        logp_l=float(values[1]),
        token_logps_w=flat[0][mask[0]].tolist(),
        token_logps_l=flat[1][mask[1]].tolist(),
    )
    if params is None:
        return probe
    g_w = torch.autograd.grad(seq[0], params, retain_graph=True, allow_unused=True)
    g_l = torch.autograd.grad(seq[1], params, allow_unused=True)
    probe.inner = float(grad_dot(g_w, g_l))
    probe.sq_w = float(grad_dot(g_w, g_w))
    probe.sq_l = float(grad_dot(g_l, g_l))
    if keep_grads:
        probe.grad_w = [None if g is None else g.detach().clone() for g in g_w]
        probe.grad_l = [None if g is None else g.detach().clone() for g in g_l]
    return probe


def to_device(batch: dict, device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def probe_batches(dataset, collator, n: int, device) -> list[dict]:
    """The first ``n`` rows of a tokenized preference dataset, each collated as its own one-pair batch."""
    from alignment.data.loading import first_rows

    return [to_device(collator([row]), device) for row in first_rows(dataset, n)]
