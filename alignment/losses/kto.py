"""KTO (Ethayarajh et al. 2024, "KTO: Model Alignment as Prospect Theoretic Optimization", arXiv 2402.01306,
eqs. 7-8) and the unpaired APO-zero (D'Oosterlinck et al. 2024, arXiv 2408.06266), as trl 1.16's KTOTrainer
forms them, on unpaired rows (x, y, desirable or not).

With r = log pi(y|x) - log pi_ref(y|x) (summed over the completion) and the reference point
z = max(0, mean_j [log pi(y'_j|x_j) - log pi_ref(y'_j|x_j)]) over the batch's mismatched pairs (x_j, y'_j)
(each prompt with another row's completion; detached, averaged over all processes):

    kto                desirable: w_d (1 - sigmoid(beta (r - z)))    undesirable: w_u (1 - sigmoid(beta (z - r)))
    apo_zero_unpaired  desirable: w_d (1 - sigmoid(beta r))          undesirable: w_u sigmoid(beta r)

    L = mean over the batch's rows (desirable and undesirable together)

Logged as TRL does: rewards/chosen and logps/chosen are the means of beta r and log pi over the desirable rows
(of all processes), rewards/rejected and logps/rejected over the undesirable ones, rewards/margins their
difference (when both kinds are present), kl = z.

Worked example (beta 0.1, w_d = w_u = 1, kto): a desirable row with r = 2, an undesirable one with r = -1, and
z = 0.5: losses 1 - sigmoid(0.15) = 0.46257 and 1 - sigmoid(0.15) = 0.46257, L = 0.46257; with
apo_zero_unpaired: 1 - sigmoid(0.2) = 0.45017 and sigmoid(-0.1) = 0.47502.

Shapes: ``policy``, ``ref`` [N] summed completion log-probabilities of the rows, ``labels`` [N] bool; ``kl`` a
scalar (alignment.losses.kto.reference_point). Returns per-row losses [N] and the per-row metric terms [N]
(``chosen_count``, ``rejected_count``: the global numbers of desirable and undesirable rows and of rows, so that
each metric's mean over the global batch is its mean over its rows, as TRL's).
"""

from __future__ import annotations

import torch

KTO_LOSS_TYPES = {
    "kto": "KTO's prospect-theoretic loss (eq. 7) against the batch's KL reference point",
    "apo_zero_unpaired": "APO-zero on unpaired rows: raise desirable likelihoods, lower undesirable ones (no KL)",
}


def kto_loss_types_help() -> str:
    return "; ".join(f"{name}: {help_}" for name, help_ in KTO_LOSS_TYPES.items())


def reference_point(policy_kl: torch.Tensor, ref_kl: torch.Tensor) -> torch.Tensor:
    """z = max(0, mean(log pi(y'|x) - log pi_ref(y'|x))) over mismatched pairs [N] (detached; the caller
    averages it over processes before the clamp, as TRL does)."""
    return (policy_kl - ref_kl).detach().mean()


def kto_loss(
    policy: torch.Tensor,
    ref: torch.Tensor,
    labels: torch.Tensor,
    kl: torch.Tensor | float = 0.0,
    *,
    beta: float = 0.1,
    loss_type: str = "kto",
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
    counts: tuple[float, float, float] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-row KTO / APO-zero losses [N] (module docstring) and metrics. ``counts``: (desirable rows,
    undesirable rows, all rows) of the global batch (default: these rows'), so that each metric's mean over
    the rows is its mean over the rows it describes."""
    if loss_type not in KTO_LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {list(KTO_LOSS_TYPES)}, got {loss_type!r}")
    desirable = labels.bool()
    logratio = policy - ref
    kl = torch.as_tensor(kl, dtype=policy.dtype, device=policy.device)
    if loss_type == "kto":
        chosen_losses = 1 - torch.sigmoid(beta * (logratio - kl))
        rejected_losses = 1 - torch.sigmoid(beta * (kl - logratio))
    else:
        chosen_losses = 1 - torch.sigmoid(beta * logratio)
        rejected_losses = torch.sigmoid(beta * logratio)
    losses = torch.where(desirable, desirable_weight * chosen_losses, undesirable_weight * rejected_losses)
    if counts is None:
        n_chosen = float(desirable.sum())
        counts = (n_chosen, float(desirable.numel()) - n_chosen, float(desirable.numel()))
    n_chosen, n_rejected, n_rows = counts
    rewards = (beta * logratio).detach()
    chosen_share = desirable.to(policy.dtype) * (n_rows / max(n_chosen, 1.0))
    rejected_share = (~desirable).to(policy.dtype) * (n_rows / max(n_rejected, 1.0))
    metrics = {"kl": kl.detach().expand_as(policy)}
    if n_chosen:
        metrics["rewards/chosen"] = rewards * chosen_share
        metrics["logps/chosen"] = policy.detach() * chosen_share
    if n_rejected:
        metrics["rewards/rejected"] = rewards * rejected_share
        metrics["logps/rejected"] = policy.detach() * rejected_share
    if n_chosen and n_rejected:
        metrics["rewards/margins"] = rewards * (chosen_share - rejected_share)
    return losses, metrics
