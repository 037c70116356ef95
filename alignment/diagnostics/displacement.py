"""Likelihood displacement: how the probe pairs' log-probabilities moved since the start of training.

Preference losses only fix the margin logp_w - logp_l; both can fall (Razin et al., arXiv 2410.08847; Yuan et
al., arXiv 2410.13828). DPO on the shipped tasks shows the chosen log-probability falling; RPO's SFT term
should hold it up (README, "Training").

Shapes: every argument is [k] (summed log-probabilities of the k probe pairs, or their per-token means).
"""

from __future__ import annotations

import torch


def displacement_stats(
    logp_w: torch.Tensor, logp_l: torch.Tensor, start_w: torch.Tensor, start_l: torch.Tensor
) -> dict[str, float]:
    """Mean changes of logp_w and logp_l since the start, the margin change, and the share of pairs whose
    chosen log-probability fell (and whose rejected one rose).

    Example: chosen -1.0 -> -1.5 and rejected -3.0 -> -5.0 give chosen_delta -0.5, rejected_delta -2.0,
    margin_delta 1.5 and chosen_fell_share 1.0.
    """
    dw = (logp_w - start_w).double()
    dl = (logp_l - start_l).double()
    if dw.numel() == 0:
        return {}
    return {
        "chosen_delta": float(dw.mean()),
        "rejected_delta": float(dl.mean()),
        "margin_delta": float((dw - dl).mean()),
        "chosen_fell_share": float((dw < 0).double().mean()),
        "rejected_rose_share": float((dl > 0).double().mean()),
    }
