"""z-loss (PaLM, Chowdhery et al. 2022, arXiv 2204.02311, section 5): a penalty on the log of the softmax
normalizer that keeps the logits from drifting (and the softmax from collapsing in low precision).

    L_z = coef * sum_{n scored} lse_n^2 / N        (lse_n = log sum_v exp z_{n,v}; N the tokens the mean divides by)

dL_z/dz_{n,v} = 2 coef lse_n p_{n,v} / N: the kernel already has lse per token, so the term costs nothing
extra (the fused op takes its gradient through the per-token lse output).

Shapes: ``lse`` [n] (scored tokens only) or [...] with ``mask`` [...] (1 = scored); returns a scalar.
Worked example: lse [1, -2, 3] (all scored), coef 1e-4, N = 3: 1e-4 * (1 + 4 + 9) / 3 = 4.6667e-4.
"""

from __future__ import annotations

import torch


def z_loss(
    lse: torch.Tensor, coef: float, count: float | torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """coef * sum(lse^2 over the scored tokens) / count."""
    squared = lse**2 if mask is None else lse**2 * mask
    return coef * squared.sum() / torch.as_tensor(count, dtype=lse.dtype, device=lse.device).clamp(min=1)
