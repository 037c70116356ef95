"""Softmax collapse (Prieto et al., "Grokking at the Edge of Numerical Stability", arXiv 2501.04697).

A token's softmax has collapsed when, in float32, sum_v exp(z_v - max z) == 1 exactly: every other term
underflowed, the target's probability rounds to 1 and its gradient vanishes. The fused op returns the
flag for every scored token at no extra matmul (it has the denominators anyway); this module turns flags
into the logged fractions.
"""

from __future__ import annotations

import torch


def collapse_stats(collapsed: torch.Tensor, token_logps: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """Fractions of the scored tokens (``mask``) whose softmax collapsed and whose loss is exactly 0.

    Shapes: collapsed (bool), token_logps and mask, all [B, T]. Example: flags [T, F, F] over 3 scored tokens
    with log-probabilities [0, -0.1, -2] give softmax_collapse 1/3 and zero_loss_tokens 1/3.
    """
    mask = mask.bool()
    n = int(mask.sum())
    if n == 0:
        return {"softmax_collapse": 0.0, "zero_loss_tokens": 0.0}
    return {
        "softmax_collapse": float((collapsed.bool() & mask).sum()) / n,
        "zero_loss_tokens": float(((token_logps == 0) & mask).sum()) / n,
    }
