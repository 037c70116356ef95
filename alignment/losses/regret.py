"""The regret-loss (Park, Liu, Ozdaglar, Zhang, "Do LLM Agents Have Regret?", arXiv 2403.16843, section 5;
docs/regret.md, our formalization: the paper's exact constants were not retrievable).

For a batch of N loss sequences, R_j is the learner's external regret on sequence j (differentiable in the
learner's parameters through its policies). The loss is a soft maximum of the squared positive regrets:

    L = sum_j h(R_j) f(R_j, k) / sum_j f(R_j, k),   h(x) = max(x, 0)^2,   f(x, k) = exp(k x)

i.e. sum_j softmax(k R)_j h(R_j), computed in that (log-sum-exp) form so that large k R do not overflow.
k = 0 gives the mean of h(R_j); as k grows it tends to h(max_j R_j): training targets the worst sequence
rather than the average. It needs no labels of optimal actions.

With ``regrets`` of shape [N, T] (the regret after each round t) the loss is taken at every horizon and
summed over t (the paper's option of training all horizons at once); [N] is the regret at T.

Worked example: R = (1, -2), k = 1: softmax(R) = (0.953, 0.047), h = (1, 0), L = 0.953.
"""

from __future__ import annotations

import torch


def regret_loss(regrets: torch.Tensor, k: float = 1.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``regrets``: [N] (at T) or [N, T] (after each round, summed over the horizons). Returns (the scalar
    loss, metrics: the mean and max regret at the last horizon and the weights' effective count)."""
    if regrets.dim() not in (1, 2):
        raise ValueError(f"regrets must be [N] or [N, T], got shape {tuple(regrets.shape)}")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    weights = torch.softmax(k * regrets, dim=0)  # f(R_j, k) / sum_i f(R_i, k), per horizon
    h = regrets.clamp_min(0.0).square()
    loss = (weights * h).sum(dim=0).sum()
    last = regrets if regrets.dim() == 1 else regrets[:, -1]
    w_last = weights if weights.dim() == 1 else weights[:, -1]
    metrics = {
        "regret/mean": last.mean().detach(),
        "regret/max": last.max().detach(),
        "regret/effective_sequences": (1.0 / w_last.square().sum()).detach(),
    }
    return loss, metrics
