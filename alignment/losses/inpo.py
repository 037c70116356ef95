"""INPO (Zhang et al. 2024, "Iterative Nash Policy Optimization: Aligning LLMs with General Preferences via
No-Regret Learning", arXiv 2407.00617, ICLR 2025; docs/inpo.md): the loss of one iteration t.

Online mirror descent in the game J(pi1, pi2) = E P(y1 > y2) - tau KL(pi1 || pi_ref) + tau KL(pi2 || pi_ref)
has the closed-form step pi_{t+1}(y) ∝ exp(P(y > pi_t) / eta) pi_ref(y)^(tau/eta) pi_t(y)^(1 - tau/eta)
(their eq. 5); over pairs (y_w, y_l) both sampled from pi_t and ranked by the preference oracle, it is the
minimizer of

    h_t(pi) = log pi(y_w)/pi(y_l) - (tau/eta) log pi_ref(y_w)/pi_ref(y_l) - ((eta - tau)/eta) log pi_t(y_w)/pi_t(y_l)
    L_t(pi) = mean over pairs of ( h_t(pi) - 1/(2 eta) )^2

All log pi are sequence sums; pi_ref (the SFT model) and pi_t (the previous iterate) are frozen anchors. At
t = 1 (pi_t = pi_ref) h is IPO's h with beta = eta, so L_1 is IPO's loss (Azar et al. 2023) on sequence sums.
tau = 0 drops the reference (the paper's ablation without KL); tau = eta drops pi_t.

Worked example, one pair: eta = 0.5, tau = 0.25 (tau/eta = 0.5, (eta - tau)/eta = 0.5, target 1/(2 eta) = 1);
policy log-probs (-1, -3): margin 2; reference (-2, -2): margin 0; pi_t (-1.5, -2.5): margin 1;
h = 2 - 0.5 * 0 - 0.5 * 1 = 1.5, loss = (1.5 - 1)^2 = 0.25.

Shapes: every input [B] (one value per pair); returns the per-pair losses [B] and metrics, each [B]. The
metrics' ``rewards/*`` are the log-ratios log pi/pi_ref per side (INPO has no beta), ``inpo/h`` is h_t.
Paper defaults (App. B): eta = 0.005, tau = eta / 3 (target 100).
"""

from __future__ import annotations

import torch


def inpo_h(policy_chosen, policy_rejected, ref_chosen, ref_rejected, prev_chosen, prev_rejected, eta: float,
           tau: float) -> torch.Tensor:  # fmt: skip
    """h_t per pair [B] (module docstring)."""
    return (
        (policy_chosen - policy_rejected)
        - (tau / eta) * (ref_chosen - ref_rejected)
        - ((eta - tau) / eta) * (prev_chosen - prev_rejected)
    )


def inpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    prev_chosen: torch.Tensor,
    prev_rejected: torch.Tensor,
    eta: float = 0.005,
    tau: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-pair INPO losses (h_t - 1/(2 eta))^2 [B] and metrics (module docstring); ``tau`` None: eta / 3."""
    if not eta > 0:
        raise ValueError(f"eta must be > 0, got {eta}")
    tau = eta / 3 if tau is None else tau
    if not 0 <= tau <= eta:
        raise ValueError(f"tau must be in [0, eta] = [0, {eta}], got {tau}")
    h = inpo_h(policy_chosen, policy_rejected, ref_chosen, ref_rejected, prev_chosen, prev_rejected, eta, tau)
    losses = (h - 1.0 / (2.0 * eta)) ** 2
    margin_ref = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    margin_prev = (policy_chosen - prev_chosen) - (policy_rejected - prev_rejected)
    chosen_ratio, rejected_ratio = (policy_chosen - ref_chosen).detach(), (policy_rejected - ref_rejected).detach()
    metrics = {
        "rewards/chosen": chosen_ratio,  # log pi/pi_ref per side (INPO has no beta; not a DPO reward)
        "rewards/rejected": rejected_ratio,
        "rewards/margins": chosen_ratio - rejected_ratio,
        "rewards/accuracies": (chosen_ratio > rejected_ratio).float(),
        "inpo/h": h.detach(),
        "inpo/margin_vs_ref": margin_ref.detach(),
        "inpo/margin_vs_prev": margin_prev.detach(),
        "logps/chosen": policy_chosen.detach(),
        "logps/rejected": policy_rejected.detach(),
    }
    return losses, metrics
