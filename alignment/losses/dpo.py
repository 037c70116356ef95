"""Direct Preference Optimization and its common variants: pure functions of log-probabilities.

Notation (specs/losses.md): for pair i, logp_w, logp_l are the policy's SUMMED log-probabilities of the
chosen and rejected responses, ref_w, ref_l the reference's; r_w = beta*(logp_w - ref_w),
r_l = beta*(logp_l - ref_l), margin m = r_w - r_l. Per-pair losses:

- sigmoid (Rafailov et al. 2023, arXiv 2305.18290, eq. 7), with label smoothing eps (cDPO):
      (1 - eps) * -log sigmoid(m) + eps * -log sigmoid(-m)
- ipo (Azar et al. 2023, arXiv 2310.12036, eq. 17): (h - 1/(2*beta))^2 with
      h = (logp_w - ref_w)/n_w - (logp_l - ref_l)/n_l   (per-token averages, n = completion tokens: as
      TRL does, confirmed by the IPO authors; the paper writes sequence log-ratios)
- hinge (SLiC, Zhao et al. 2023): relu(1 - m)
- robust (Chowdhury et al. 2024, arXiv 2403.00409): ((1-eps)*-log sigmoid(m) - eps*-log sigmoid(-m)) / (1-2eps)

Shapes: every tensor input is [B]; returns (per-pair losses [B], metrics: dict of [B] tensors under TRL's
names). The batch loss is the mean of the per-pair losses.

Worked example (sigmoid, beta = 0.1): logp_w = -10, logp_l = -12, ref_w = ref_l = -11 gives r_w = 0.1,
r_l = -0.1, m = 0.2 and L = -log sigmoid(0.2) = 0.598139; with eps = 0.1, L = 0.9*0.598139 +
0.1*0.798139 = 0.618139; hinge: 0.8; robust (eps = 0.1): (0.9*0.598139 - 0.1*0.798139)/0.8 = 0.573139.
IPO with n_w = 2, n_l = 4, beta = 0.1: h = 1/2 - (-1)/4 = 0.75, L = (0.75 - 5)^2 = 18.0625.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSS_TYPES = ("sigmoid", "ipo", "hinge", "robust")


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    chosen_tokens: torch.Tensor | None = None,
    rejected_tokens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-pair DPO losses [B] and metrics (rewards/chosen, rewards/rejected, rewards/margins,
    rewards/accuracies, logps/chosen, logps/rejected), all [B]. ``chosen_tokens``/``rejected_tokens`` [B]
    (completion token counts) are needed by ``ipo``."""
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    chosen_ratio = policy_chosen - ref_chosen
    rejected_ratio = policy_rejected - ref_rejected
    margin = beta * (chosen_ratio - rejected_ratio)
    if loss_type == "sigmoid":
        losses = -(1 - label_smoothing) * F.logsigmoid(margin) - label_smoothing * F.logsigmoid(-margin)
    elif loss_type == "hinge":
        losses = torch.relu(1 - margin)
    elif loss_type == "robust":
        losses = (-(1 - label_smoothing) * F.logsigmoid(margin) + label_smoothing * F.logsigmoid(-margin)) / (
            1 - 2 * label_smoothing
        )
    else:  # ipo
        if chosen_tokens is None or rejected_tokens is None:
            raise ValueError("loss_type='ipo' needs chosen_tokens and rejected_tokens (completion token counts)")
        h = chosen_ratio / chosen_tokens.clamp(min=1) - rejected_ratio / rejected_tokens.clamp(min=1)
        losses = (h - 1 / (2 * beta)) ** 2
    chosen_rewards = (beta * chosen_ratio).detach()
    rejected_rewards = (beta * rejected_ratio).detach()
    metrics = {
        "rewards/chosen": chosen_rewards,
        "rewards/rejected": rejected_rewards,
        "rewards/margins": chosen_rewards - rejected_rewards,
        "rewards/accuracies": (chosen_rewards > rejected_rewards).float(),
        "logps/chosen": policy_chosen.detach(),
        "logps/rejected": policy_rejected.detach(),
    }
    return losses, metrics
