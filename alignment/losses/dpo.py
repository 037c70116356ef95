"""Direct Preference Optimization and its common variants: pure functions of log-probabilities.

Notation (specs/losses.md): for pair i, logp_w, logp_l are the policy's SUMMED log-probabilities of the
chosen and rejected responses, ref_w, ref_l the reference's; r_w = beta*(logp_w - ref_w),
r_l = beta*(logp_l - ref_l), margin m = r_w - r_l. The per-pair losses are the entries of
``LOSS_VARIANTS`` (one small function each; the config's help text and validation and the gradcheck tests
read that table):

- sigmoid (Rafailov et al. 2023, arXiv 2305.18290, eq. 7), with label smoothing eps (cDPO):
      (1 - eps) * -log sigmoid(m) + eps * -log sigmoid(-m)
- ipo (Azar et al. 2023, arXiv 2310.12036, eq. 17): (h - 1/(2*beta))^2 with
      h = (logp_w - ref_w)/n_w - (logp_l - ref_l)/n_l   (per-token averages, n = completion tokens: as
      TRL does, confirmed by the IPO authors; the paper writes sequence log-ratios)
- hinge (SLiC, Zhao et al. 2023, arXiv 2305.10425): relu(1 - m)
- robust (Chowdhury et al. 2024, arXiv 2403.00409): ((1-eps)*-log sigmoid(m) - eps*-log sigmoid(-m)) / (1-2eps)

Shapes: every tensor input is [B]; returns (per-pair losses [B], metrics: dict of [B] tensors under TRL's
names). The batch loss is the mean of the per-pair losses.

Worked example (sigmoid, beta = 0.1): logp_w = -10, logp_l = -12, ref_w = ref_l = -11 gives r_w = 0.1,
r_l = -0.1, m = 0.2 and L = -log sigmoid(0.2) = 0.598139; with eps = 0.1, L = 0.9*0.598139 +
0.1*0.798139 = 0.618139; hinge: 0.8; robust (eps = 0.1): (0.9*0.598139 - 0.1*0.798139)/0.8 = 0.573139.
IPO with n_w = 2, n_l = 4, beta = 0.1: h = 1/2 - (-1)/4 = 0.75, L = (0.75 - 5)^2 = 18.0625.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Ratios:
    """What a variant sees for B pairs: the log-ratios logp - ref of each side [B], beta, the label-noise
    rate eps and the completion token counts [B] (None when the caller has none)."""

    chosen: torch.Tensor
    rejected: torch.Tensor
    beta: float
    label_smoothing: float
    chosen_tokens: torch.Tensor | None
    rejected_tokens: torch.Tensor | None

    @property
    def margin(self) -> torch.Tensor:
        return self.beta * (self.chosen - self.rejected)


@dataclass(frozen=True)
class LossVariant:
    """One DPO variant: its per-pair loss [B] from :class:`Ratios`, a one-line description (with its
    paper) and whether it needs the completion token counts."""

    fn: Callable[[Ratios], torch.Tensor]
    help: str
    needs_token_counts: bool = False


def _sigmoid(r: Ratios) -> torch.Tensor:
    m, eps = r.margin, r.label_smoothing
    return -(1 - eps) * F.logsigmoid(m) - eps * F.logsigmoid(-m)


def _ipo(r: Ratios) -> torch.Tensor:
    h = r.chosen / r.chosen_tokens.clamp(min=1) - r.rejected / r.rejected_tokens.clamp(min=1)
    return (h - 1 / (2 * r.beta)) ** 2


def _hinge(r: Ratios) -> torch.Tensor:
    return torch.relu(1 - r.margin)


def _robust(r: Ratios) -> torch.Tensor:
    m, eps = r.margin, r.label_smoothing
    return (-(1 - eps) * F.logsigmoid(m) + eps * F.logsigmoid(-m)) / (1 - 2 * eps)


LOSS_VARIANTS: dict[str, LossVariant] = {
    "sigmoid": LossVariant(_sigmoid, "-log sigmoid(m), cDPO with label_smoothing (Rafailov et al., 2305.18290)"),
    "ipo": LossVariant(_ipo, "(h - 1/(2 beta))^2 on per-token log-ratios (Azar et al., 2310.12036)", True),
    "hinge": LossVariant(_hinge, "relu(1 - m) (SLiC, Zhao et al., 2305.10425)"),
    "robust": LossVariant(_robust, "unbiased under label noise label_smoothing (Chowdhury et al., 2403.00409)"),
}
LOSS_TYPES = tuple(LOSS_VARIANTS)


def loss_types_help() -> str:
    """The variants as help text: 'sigmoid: ...; ipo: ...'."""
    return "; ".join(f"{name}: {variant.help}" for name, variant in LOSS_VARIANTS.items())


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
    (completion token counts) are needed by the variants that say so (``ipo``)."""
    variant = LOSS_VARIANTS.get(loss_type)
    if variant is None:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    if variant.needs_token_counts and (chosen_tokens is None or rejected_tokens is None):
        raise ValueError(f"loss_type={loss_type!r} needs chosen_tokens and rejected_tokens (completion token counts)")
    ratios = Ratios(
        policy_chosen - ref_chosen,
        policy_rejected - ref_rejected,
        beta,
        label_smoothing,
        chosen_tokens,
        rejected_tokens,
    )
    losses = variant.fn(ratios)
    chosen_rewards = (beta * ratios.chosen).detach()
    rejected_rewards = (beta * ratios.rejected).detach()
    metrics = {
        "rewards/chosen": chosen_rewards,
        "rewards/rejected": rejected_rewards,
        "rewards/margins": chosen_rewards - rejected_rewards,
        "rewards/accuracies": (chosen_rewards > rejected_rewards).float(),
        "logps/chosen": policy_chosen.detach(),
        "logps/rejected": policy_rejected.detach(),
    }
    return losses, metrics
