"""Bradley-Terry reward-model loss (Ouyang et al. 2022, "Training language models to follow instructions with
human feedback", arXiv 2203.02155, eq. 1), with trl's margin and reward centering:

    L = -mean_i log sigmoid(r_c,i - r_r,i - m_i)  +  eta * mean_i (r_c,i + r_r,i)^2

``m_i``: the row's ``margin`` column (Llama 2, arXiv 2307.09288, section 3.2.2; 0 when the rows have none);
``eta``: ``center_rewards_coefficient`` (Eisenstein et al. 2023, arXiv 2312.09244: keeps rewards near zero;
None = off). This is trl 1.16 RewardTrainer's loss term for term.

Shapes: ``chosen`` and ``rejected`` [B] (the scalar head's output on prompt + chosen and prompt + rejected),
``margin`` [B] or None. Metrics (trl's names): ``accuracy`` (mean of r_c > r_r), ``margin`` (mean r_c - r_r)
and per-sequence ``rewards`` [2B] for the min / mean / max the trainer logs.

Worked example: r_c = [2, 0], r_r = [0, 1], no margin: log sigmoid(2) = -0.1269, log sigmoid(-1) = -1.3133,
L = (0.1269 + 1.3133) / 2 = 0.7201; accuracy 0.5, margin 0.5.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def reward_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    margin: torch.Tensor | None = None,
    center_rewards_coefficient: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    diff = chosen - rejected
    loss = -F.logsigmoid(diff if margin is None else diff - margin.to(diff.dtype)).mean()
    if center_rewards_coefficient is not None:
        loss = loss + center_rewards_coefficient * torch.mean((chosen + rejected) ** 2)
    metrics = {
        "accuracy": (chosen > rejected).float().detach(),
        "margin": diff.detach(),
        "rewards": torch.cat([chosen, rejected]).detach(),
    }
    return loss, metrics
