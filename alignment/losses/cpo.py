"""CPO (Xu et al. 2024, "Contrastive Preference Optimization", arXiv 2401.08417, eq. 3), SimPO (Meng et al.
2024, arXiv 2405.14734) and AlphaPO (Gupta et al. 2025, arXiv 2501.03884): reference-free preference losses
plus a behaviour-cloning NLL term on the chosen responses, as trl 1.16's CPOTrainer forms them.

With s_w, s_l the policy's log-probabilities of the chosen and rejected completions (summed; averaged over
the completion's tokens for ``ipo`` and ``simpo``) and rewards r = s (alpha = 0) or AlphaPO's
r = (1 - exp(-alpha * s)) / alpha = (1 - p^-alpha) / alpha, d = r_w - r_l:

    sigmoid   -(1 - eps) log sigmoid(beta d) - eps log sigmoid(-beta d)        (CPO's eq. 3 at eps = 0)
    simpo     the same with d - gamma / beta                                    (SimPO's target margin gamma)
    hinge     relu(1 - beta d)
    ipo       (d - 1 / (2 beta))^2

    L = mean_i loss_i + cpo_alpha * NLL,  NLL = -sum_{i,t} log p(y_w,i,t) / N_chosen_tokens

SimPO is ``simpo`` with cpo_alpha = 0; ``alphapo`` (a config spelling, as in TRL) is ``simpo`` with
cpo_alpha = 0 and the AlphaPO reward for alpha != 0. Logged as TRL does: rewards/* = beta * r,
logps/* = s, nll_loss (0 when cpo_alpha = 0).

Worked example (one pair, sigmoid, beta 0.1, eps 0, alpha 0, cpo_alpha 1): s_w = -10, s_l = -14 over 4
chosen tokens: d = 4, loss = -log sigmoid(0.4) = 0.5130, NLL = 10 / 4 = 2.5, L = 3.0130. The same pair
with simpo (gamma 0.5, 4 tokens each: s = -2.5, -3.5): d = 1 - 5 = -4, -log sigmoid(-0.4) = 0.9130.

Shapes: ``policy_chosen``, ``policy_rejected`` [B] summed log-probabilities, ``chosen_tokens``,
``rejected_tokens`` [B] completion token counts; ``token_scale`` the chosen-token count that the NLL's token
mean divides by (the global batch's, per process; default: these pairs' own) and ``batch_pairs`` the pairs
of the batch these may be a chunk of (per-pair NLL terms are ``batch_pairs * nll_i / token_scale`` so that
their batch mean is the token mean). Returns per-pair losses [B] and [B] metrics.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: loss_type -> (help, whether the log-probabilities are averaged over the completion's tokens)
CPO_LOSS_TYPES = {
    "sigmoid": ("CPO's sigmoid loss (eq. 3), label_smoothing for conservative CPO", False),
    "hinge": ("relu(1 - beta d), SLiC's hinge", False),
    "ipo": ("(d - 1/(2 beta))^2 on averaged log-probabilities, IPO's", True),
    "simpo": ("SimPO: the sigmoid loss on averaged log-probabilities with a target margin simpo_gamma", True),
}
#: spellings the config accepts: alphapo is simpo with cpo_alpha = 0 (TRL's sugar)
CPO_ALIASES = ("alphapo",)


def cpo_loss_types_help() -> str:
    return "; ".join(f"{name}: {help_}" for name, (help_, _) in CPO_LOSS_TYPES.items()) + (
        "; alphapo: simpo with cpo_alpha 0 and AlphaPO's reward (set alpha)"
    )


def alphapo_reward(logps: torch.Tensor, alpha: float) -> torch.Tensor:
    """r = (1 - p^-alpha) / alpha with p = exp(logps) (AlphaPO, arXiv 2501.03884, eq. 6); logps at alpha 0."""
    if alpha == 0.0:
        return logps
    return -torch.expm1(-alpha * logps) / alpha


def nll_terms(policy_chosen, chosen_tokens, token_scale, batch_pairs) -> torch.Tensor:
    """Per-pair terms [B] whose mean over the batch's ``batch_pairs`` pairs is -sum log p(y_w) / token_scale."""
    total = chosen_tokens.sum() if token_scale is None else token_scale
    pairs = policy_chosen.numel() if batch_pairs is None else batch_pairs
    total = torch.as_tensor(total, dtype=policy_chosen.dtype, device=policy_chosen.device).clamp(min=1)
    return -policy_chosen * pairs / total


def cpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    chosen_tokens: torch.Tensor,
    rejected_tokens: torch.Tensor,
    *,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    simpo_gamma: float = 0.5,
    alpha: float = 0.0,
    cpo_alpha: float = 1.0,
    token_scale: float | torch.Tensor | None = None,
    batch_pairs: int | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-pair CPO / SimPO / AlphaPO losses [B] (the module docstring) and metrics under TRL's names."""
    if loss_type not in CPO_LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {list(CPO_LOSS_TYPES)}, got {loss_type!r}")
    chosen, rejected = policy_chosen, policy_rejected
    if CPO_LOSS_TYPES[loss_type][1]:
        chosen = chosen / chosen_tokens.clamp(min=1).to(chosen.dtype)
        rejected = rejected / rejected_tokens.clamp(min=1).to(rejected.dtype)
    reward_chosen, reward_rejected = alphapo_reward(chosen, alpha), alphapo_reward(rejected, alpha)
    d = reward_chosen - reward_rejected
    if loss_type in ("sigmoid", "simpo"):
        if loss_type == "simpo":
            d = d - simpo_gamma / beta
        losses = -F.logsigmoid(beta * d) * (1 - label_smoothing) - F.logsigmoid(-beta * d) * label_smoothing
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * d)
    else:
        losses = (d - 1 / (2 * beta)) ** 2
    if cpo_alpha != 0:
        nll = nll_terms(policy_chosen, chosen_tokens, token_scale, batch_pairs)
        losses = losses + cpo_alpha * nll
    else:
        nll = torch.zeros_like(policy_chosen)
    return losses, reference_free_metrics(beta * reward_chosen, beta * reward_rejected, chosen, rejected, nll)


def reference_free_metrics(chosen_rewards, rejected_rewards, chosen, rejected, nll) -> dict[str, torch.Tensor]:
    """CPO's and ORPO's [B] metrics under TRL's names: rewards/*, logps/* (the log-probabilities the loss read)
    and nll_loss, all detached."""
    chosen_rewards, rejected_rewards = chosen_rewards.detach(), rejected_rewards.detach()
    return {
        "rewards/chosen": chosen_rewards,
        "rewards/rejected": rejected_rewards,
        "rewards/accuracies": (chosen_rewards > rejected_rewards).float(),
        "rewards/margins": chosen_rewards - rejected_rewards,
        "logps/chosen": chosen.detach(),
        "logps/rejected": rejected.detach(),
        "nll_loss": nll.detach(),
    }
