"""Online DPO's loss (Guo et al. 2024, "Direct Language Model Alignment from Online AI Feedback", arXiv 2402.04792):
DPO on pairs sampled from the current policy and labelled by a judge, on summed log-probabilities as trl 1.16's
``OnlineDPOTrainer`` computes it:

    h = (log pi(y_w) - log pi(y_l)) - (log pi_ref(y_w) - log pi_ref(y_l))
    sigmoid: L = -log sigmoid(beta * h)        ipo: L = (h - 1 / (2 beta))^2

(ipo here on sums, as trl's online trainer; its offline DPOTrainer and alignment.losses.dpo average per token.)
Shapes: every input [B]; returns per-pair losses [B] and DPO's metrics under trl's names, [B] each.

Worked example: beta 0.5, policy (-1, -3), reference (-2, -2): h = 2, sigmoid L = -log sigmoid(1) = 0.3133;
ipo L = (2 - 1)^2 = 1; rewards/chosen 0.5, rewards/rejected -0.5.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from alignment.losses.dpo import pair_metrics

ONLINE_LOSS_TYPES = ("sigmoid", "ipo")


def online_dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
    loss_type: str = "sigmoid",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    if loss_type not in ONLINE_LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {ONLINE_LOSS_TYPES}, got {loss_type!r}")
    h = (policy_chosen - policy_rejected) - (ref_chosen - ref_rejected)
    losses = -F.logsigmoid(beta * h) if loss_type == "sigmoid" else (h - 1 / (2 * beta)) ** 2
    return losses, pair_metrics(
        beta * (policy_chosen - ref_chosen), beta * (policy_rejected - ref_rejected), policy_chosen, policy_rejected
    )
