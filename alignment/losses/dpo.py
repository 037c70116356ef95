"""Direct Preference Optimization and its variants: pure functions of log-probabilities.

Notation (README, "Training"): for pair i, logp_w, logp_l are the policy's SUMMED log-probabilities of the
chosen and rejected responses, ref_w, ref_l the reference's; the log-ratios are u_w = logp_w - ref_w,
u_l = logp_l - ref_l. Under an f-divergence (Wang et al. 2023, arXiv 2309.16240) the scores are
s = f'(exp(u)) (reverse_kl: s = u, the default), and the margin is m = beta*(s_w - s_l). The per-pair losses
are the entries of ``LOSS_VARIANTS`` (one small function each, here and in
:mod:`alignment.losses.dpo_variants`; the config's help text and validation and the tests read that table):

- sigmoid (Rafailov et al. 2023, arXiv 2305.18290, eq. 7), with label smoothing eps (cDPO):
      (1 - eps) * -log sigmoid(m) + eps * -log sigmoid(-m)
- ipo (Azar et al. 2023, arXiv 2310.12036, eq. 17): (h - 1/(2*beta))^2 with
      h = s_w/n_w - s_l/n_l   (per-token averages, n = completion tokens: as TRL does, confirmed by the
      IPO authors; the paper writes sequence log-ratios)
- hinge (SLiC, Zhao et al. 2023, arXiv 2305.10425): relu(1 - m)
- robust (Chowdhury et al. 2024, arXiv 2403.00409): ((1-eps)*-log sigmoid(m) - eps*-log sigmoid(-m)) / (1-2eps)
- and TRL's others (exo_pair, nca_pair, bco_pair, sppo_hard, aot, aot_unpaired, apo_zero, apo_down,
  discopop, sft, sigmoid_norm): see alignment.losses.dpo_variants.

Several variants with weights (MPO, Wang et al. 2024, arXiv 2411.10442): ``loss_type=[a, b]``,
``loss_weights=[w_a, w_b]`` gives sum_k w_k * loss_k per pair.

Shapes: every tensor input is [B]; returns (per-pair losses [B], metrics: dict of [B] tensors under TRL's
names). The batch loss is the mean of the per-pair losses.

Worked example (sigmoid, beta = 0.1): logp_w = -10, logp_l = -12, ref_w = ref_l = -11 gives r_w = 0.1,
r_l = -0.1, m = 0.2 and L = -log sigmoid(0.2) = 0.598139; with eps = 0.1, L = 0.9*0.598139 +
0.1*0.798139 = 0.618139; hinge: 0.8; robust (eps = 0.1): (0.9*0.598139 - 0.1*0.798139)/0.8 = 0.573139.
IPO with n_w = 2, n_l = 4, beta = 0.1: h = 1/2 - (-1)/4 = 0.75, L = (0.75 - 5)^2 = 18.0625.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from alignment.losses.dpo_types import F_DIVERGENCES, LossVariant, Ratios, f_scores  # noqa: F401 (re-exported)
from alignment.losses.dpo_variants import TRL_VARIANTS


def _sigmoid(r: Ratios) -> torch.Tensor:
    m, eps = r.margin, r.label_smoothing
    return -(1 - eps) * F.logsigmoid(m) - eps * F.logsigmoid(-m)


def _ipo(r: Ratios) -> torch.Tensor:
    h = r.chosen_scores / r.chosen_tokens.clamp(min=1) - r.rejected_scores / r.rejected_tokens.clamp(min=1)
    return (h - 1 / (2 * r.beta)) ** 2


def _hinge(r: Ratios) -> torch.Tensor:
    return torch.relu(1 - r.margin)


def _robust(r: Ratios) -> torch.Tensor:
    m, eps = r.margin, r.label_smoothing
    return (-(1 - eps) * F.logsigmoid(m) + eps * F.logsigmoid(-m)) / (1 - 2 * eps)


LOSS_VARIANTS: dict[str, LossVariant] = {
    "sigmoid": LossVariant(
        _sigmoid, "-log sigmoid(m), cDPO with label_smoothing (Rafailov et al., 2305.18290)", f_divergence=True
    ),
    "ipo": LossVariant(
        _ipo, "(h - 1/(2 beta))^2 on per-token log-ratios (Azar et al., 2310.12036)", True, f_divergence=True
    ),
    "hinge": LossVariant(_hinge, "relu(1 - m) (SLiC, Zhao et al., 2305.10425)", f_divergence=True),
    "robust": LossVariant(
        _robust, "unbiased under label noise label_smoothing (Chowdhury et al., 2403.00409)", f_divergence=True
    ),
}


for _name, _variant in TRL_VARIANTS.items():  # TRL's other variants (alignment.losses.dpo_variants)
    LOSS_VARIANTS.setdefault(_name, _variant)
LOSS_TYPES = tuple(LOSS_VARIANTS)


def loss_types_help() -> str:
    """The variants as help text: 'sigmoid: ...; ipo: ...'."""
    return "; ".join(f"{name}: {variant.help}" for name, variant in LOSS_VARIANTS.items())


def as_loss_types(loss_type: str | Sequence[str]) -> tuple[str, ...]:
    """'sigmoid' or ['sigmoid', 'sft'] -> a tuple of known variant names (a ValueError names the unknown)."""
    names = (loss_type,) if isinstance(loss_type, str) else tuple(loss_type)
    if not names:
        raise ValueError("loss_type must name at least one variant")
    for name in names:
        if name not in LOSS_VARIANTS:
            raise ValueError(f"loss_type must be one of {list(LOSS_VARIANTS)}, got {name!r}")
    return names


def check_combination(names: Sequence[str], weights, f_divergence_type: str, label_smoothing: float) -> None:
    """What a combination of variants and options must satisfy (the config checks it at construction)."""
    if weights is not None and len(weights) != len(names):
        raise ValueError(f"loss_weights needs one weight per loss_type: {len(weights)} for {list(names)}")
    if f_divergence_type not in F_DIVERGENCES:
        raise ValueError(f"f_divergence_type must be one of {list(F_DIVERGENCES)}, got {f_divergence_type!r}")
    if f_divergence_type != "reverse_kl":
        plain = [n for n in names if not (LOSS_VARIANTS[n].f_divergence or n == "sft")]
        if plain:
            allowed = [n for n, v in LOSS_VARIANTS.items() if v.f_divergence or n == "sft"]
            raise ValueError(f"f_divergence_type={f_divergence_type!r} works with {allowed}, not {plain}")
    if "exo_pair" in names and not label_smoothing > 0:
        raise ValueError("loss_type exo_pair needs label_smoothing > 0 (log eps; the EXO paper uses 1e-3)")


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float = 0.1,
    loss_type: str | Sequence[str] = "sigmoid",
    label_smoothing: float = 0.0,
    chosen_tokens: torch.Tensor | None = None,
    rejected_tokens: torch.Tensor | None = None,
    loss_weights: Sequence[float] | None = None,
    f_divergence_type: str = "reverse_kl",
    f_alpha_divergence_coef: float = 0.5,
    discopop_tau: float = 0.05,
    token_scale: float | torch.Tensor | None = None,
    batch_pairs: int | None = None,
    *,
    validate: bool = True,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-pair DPO losses [B] (sum_k loss_weights[k] * variant_k) and metrics (rewards/chosen,
    rewards/rejected, rewards/margins, rewards/accuracies, logps/chosen, logps/rejected), all [B].
    ``chosen_tokens``/``rejected_tokens`` [B] (completion token counts) are needed by the variants that say
    so (ipo, sigmoid_norm; sft without ``token_scale``). ``validate=False``: the options were checked once
    already (a trainer's config checks them at construction, not on every chunk)."""
    names = (loss_type,) if isinstance(loss_type, str) else tuple(loss_type)
    if validate:
        names = as_loss_types(loss_type)
        check_combination(names, loss_weights, f_divergence_type, label_smoothing)
        for name in names:
            if LOSS_VARIANTS[name].needs_token_counts and (chosen_tokens is None or rejected_tokens is None):
                raise ValueError(
                    f"loss_type={name!r} needs chosen_tokens and rejected_tokens (completion token counts)"
                )
    ratios = Ratios(
        policy_chosen - ref_chosen,
        policy_rejected - ref_rejected,
        beta,
        label_smoothing,
        chosen_tokens,
        rejected_tokens,
        policy_chosen,
        policy_rejected,
        f_divergence_type,
        f_alpha_divergence_coef,
        discopop_tau,
        token_scale,
        batch_pairs,
    )
    weights = loss_weights if loss_weights is not None else [1.0] * len(names)
    losses = sum(w * LOSS_VARIANTS[name].fn(ratios) for name, w in zip(names, weights, strict=True))
    return losses, pair_metrics(beta * ratios.chosen, beta * ratios.rejected, policy_chosen, policy_rejected)


def pair_metrics(chosen_rewards, rejected_rewards, policy_chosen, policy_rejected) -> dict[str, torch.Tensor]:
    """trl's DPO metrics of a batch, [B] each (detached): rewards/chosen, rewards/rejected, rewards/margins,
    rewards/accuracies, logps/chosen, logps/rejected."""
    chosen_rewards, rejected_rewards = chosen_rewards.detach(), rejected_rewards.detach()
    return {
        "rewards/chosen": chosen_rewards,
        "rewards/rejected": rejected_rewards,
        "rewards/margins": chosen_rewards - rejected_rewards,
        "rewards/accuracies": (chosen_rewards > rejected_rewards).float(),
        "logps/chosen": policy_chosen.detach(),
        "logps/rejected": policy_rejected.detach(),
    }
