"""The plain, readable twin of the fused op: full logits, log_softmax, gather. Used by the tests.

It materializes the [N, V] logits (in float64 by default), so it is only for small shapes.
"""

from __future__ import annotations

import torch


def reference_logits(hidden, weight, bias=None, temperature=1.0, logit_scale=1.0, softcap=None, dtype=torch.float64):
    z = hidden.to(dtype) @ weight.to(dtype).t()
    if bias is not None:
        z = z + bias.to(dtype)
    z = z * logit_scale
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    return z / temperature


def reference_token_logps(
    hidden,
    weight,
    targets,
    bias=None,
    temperature=1.0,
    logit_scale=1.0,
    softcap=None,
    ref_hidden=None,
    ref_weight=None,
    ref_bias=None,
    ignore_index=-100,
    dtype=torch.float64,
    normalizer="softmax",
) -> dict[str, torch.Tensor]:
    """logps, lse, entropy, kl_ref (if ref_hidden), collapsed: shaped like targets, 0 where ignored.
    ``normalizer="stablemax"``: p = s(z) / sum s(z) with s(x) = x + 1 (x >= 0), 1 / (1 - x) (x < 0)."""
    z = reference_logits(hidden, weight, bias, temperature, logit_scale, softcap, dtype)
    mask = targets != ignore_index
    if normalizer == "stablemax":
        return _stablemax_outputs(z, targets, mask)
    logprobs = torch.log_softmax(z, dim=-1)
    safe = targets.clamp(min=0).unsqueeze(-1)
    out = {
        "logps": logprobs.gather(-1, safe).squeeze(-1),
        "lse": torch.logsumexp(z, dim=-1),
        "entropy": -(logprobs.exp() * logprobs).sum(-1),
    }
    z32 = z.float()
    out["collapsed"] = torch.exp(z32 - z32.amax(-1, keepdim=True)).sum(-1) == 1.0
    if ref_hidden is not None:
        w = (ref_weight if ref_weight is not None else weight).detach()  # the reference takes no gradient
        rb = None if ref_bias is None else ref_bias.detach()
        zr = reference_logits(ref_hidden.detach(), w, rb, temperature, logit_scale, softcap, dtype)
        ref_logprobs = torch.log_softmax(zr, dim=-1)
        out["kl_ref"] = (ref_logprobs.exp() * (ref_logprobs - logprobs)).sum(-1)
    for key, value in out.items():
        out[key] = torch.where(mask, value, torch.zeros_like(value))
    return out


def _stablemax_outputs(z, targets, mask) -> dict[str, torch.Tensor]:
    s = torch.where(z >= 0, z + 1, 1 / (1 - torch.clamp(z, max=0)))
    lse = torch.log(s.sum(-1))
    logps = torch.log(s.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)) - lse
    probs = s / s.sum(-1, keepdim=True)
    entropy = -(probs * torch.log(probs)).sum(-1)
    out = {"logps": logps, "lse": lse, "entropy": entropy, "collapsed": probs.float().amax(-1) == 1.0}
    return {k: torch.where(mask, v, torch.zeros_like(v)) for k, v in out.items()}


def reference_pair_loss(
    hidden,
    weight,
    targets,
    loss_fn,
    bias=None,
    ref_hidden=None,
    ref_weight=None,
    ignore_index=-100,
    token_inputs=None,
    **logit_options,
):
    """Evaluate a pair-fused loss function on ALL pairs at once from full logits (the slow twin).

    hidden [2B, T, H] (chosen rows, then rejected rows), targets [2B, T], token_inputs {name: [2B, T]}
    (plain autograd: their gradients come from differentiating through the indexing)."""
    from alignment.ops.pair_fused import PairChunk

    n_pairs = hidden.shape[0] // 2
    out = reference_token_logps(
        hidden,
        weight,
        targets,
        bias,
        ref_hidden=ref_hidden,
        ref_weight=ref_weight,
        ignore_index=ignore_index,
        **logit_options,
    )
    mask = targets != ignore_index
    rows = torch.arange(hidden.shape[0]).unsqueeze(1).expand_as(targets)
    seq = rows[mask]
    kl = out["kl_ref"][mask] if ref_hidden is not None else None
    inputs = {name: value[mask] for name, value in (token_inputs or {}).items()}
    chunk = PairChunk.build(
        torch.arange(n_pairs), seq % n_pairs, seq < n_pairs, out["logps"][mask], out["entropy"][mask], kl, inputs,
        out["lse"][mask],
    )  # fmt: skip
    return loss_fn(chunk)
