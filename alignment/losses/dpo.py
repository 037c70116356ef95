"""Direct Preference Optimization (Rafailov et al. 2023, arXiv 2305.18290, eq. 7): a pure function.

With r_w = beta * (logp_w - ref_w) and r_l = beta * (logp_l - ref_l) (sequence log-probabilities,
sums over response tokens) and the margin m = r_w - r_l, the sigmoid loss per pair is

    L = -(1 - eps) * log sigmoid(m) - eps * log sigmoid(-m)        (eps = label_smoothing, cDPO)

Shapes: every input is [B]; the function returns (per-pair losses [B], metrics of per-pair tensors [B]).
The batch loss is the mean of the per-pair losses.

Worked example: logp_w = -10, logp_l = -12, ref_w = -11, ref_l = -11, beta = 0.1: r_w = 0.1, r_l = -0.1,
m = 0.2, L = -log sigmoid(0.2) = 0.598139.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSS_TYPES = ("sigmoid",)


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-pair DPO losses and TRL-named metrics (rewards/chosen, rewards/rejected, rewards/margins,
    rewards/accuracies, logps/chosen, logps/rejected), all [B]."""
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    chosen_rewards = beta * (policy_chosen - ref_chosen)
    rejected_rewards = beta * (policy_rejected - ref_rejected)
    margin = chosen_rewards - rejected_rewards
    losses = -(1 - label_smoothing) * F.logsigmoid(margin) - label_smoothing * F.logsigmoid(-margin)
    metrics = {
        "rewards/chosen": chosen_rewards.detach(),
        "rewards/rejected": rejected_rewards.detach(),
        "rewards/margins": margin.detach(),
        "rewards/accuracies": (chosen_rewards > rejected_rewards).float().detach(),
        "logps/chosen": policy_chosen.detach(),
        "logps/rejected": policy_rejected.detach(),
    }
    return losses, metrics
