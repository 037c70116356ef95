"""TRL's other DPO variants, as entries of the loss table (alignment.losses.dpo.LOSS_VARIANTS).

Notation as in alignment.losses.dpo: u_w, u_l the log-ratios [B], s_w, s_l their f-divergence scores,
m = beta*(s_w - s_l), n_w, n_l the completion token counts, eps = label_smoothing, sigma the logistic
function. Each is the per-pair loss [B]:

- exo_pair (Ji et al. 2024, arXiv 2402.00856, eq. 16): KL(q || p) over {chosen, rejected} with
  q = (sigma(m), sigma(-m)), p = (1 - eps, eps):
      sigma(m)(log sigma(m) - log(1-eps)) + sigma(-m)(log sigma(-m) - log eps)
- nca_pair (Chen et al. 2024, arXiv 2402.05369):
      -log sigma(beta u_w) - 1/2 log sigma(-beta u_w) - 1/2 log sigma(-beta u_l)
- bco_pair (Jung et al. 2024, arXiv 2404.04656, without the running reward shift):
      -log sigma(beta u_w) - log sigma(-beta u_l)
- sppo_hard (Wu et al. 2024, arXiv 2405.00675, P = 1 for the winner): (u_w - 1/(2 beta))^2 + (u_l + 1/(2 beta))^2
- aot (Melnyk et al. 2024, arXiv 2406.05882): sort the batch's policy log-ratios logp_w - logp_l and the
  reference's ref_w - ref_l separately, d_j = sorted_j - sorted_ref_j:
      (1-eps)(-log sigma(beta d)) + eps(-log sigma(-beta d))
- aot_unpaired: the same with d_j = sort(u_w)_j - sort(u_l)_j
- apo_zero (D'Oosterlinck et al. 2024, arXiv 2408.06266, eq. 7): 1 - sigma(beta u_w) + sigma(beta u_l)
- apo_down (same, eq. 8): sigma(beta u_w) + 1 - sigma(beta (u_w - u_l))
- discopop (Chan et al. 2024, arXiv 2406.08414, eq. 5): with g = sigma(m / tau),
  (1 - g)(-log sigma(m)) + g exp(-m)
- sft: the chosen responses' negative log-likelihood as a token mean over the batch: per pair
  -logp_w * B / N (B pairs, N the chosen tokens the mean divides by), so the batch mean is -sum logp_w / N
- sigmoid_norm: -log sigma(beta (s_w/n_w - s_l/n_l)) (per-token averages of the scores)

aot and aot_unpaired couple the pairs of a batch (the sort): the kernel evaluates them on the whole batch.

Worked numbers (beta = 0.1, u_w = 1, u_l = -1, so beta u_w = 0.1, beta u_l = -0.1, m = 0.2):
nca_pair = 0.644397 + 0.5*0.744397 + 0.5*0.644397 = 1.338793; bco_pair = 2*0.644397 = 1.288793;
sppo_hard = (1 - 5)^2 + (-1 + 5)^2 = 32; apo_zero = 1 - 0.524979 + 0.475021 = 0.950042;
apo_down = 0.524979 + 1 - 0.549834 = 0.975145; discopop (tau = 0.05): g = sigma(4) = 0.982014,
0.017986*0.598139 + 0.982014*0.818731 = 0.814763; exo_pair (eps = 0.1): 0.549834(log 0.549834 - log 0.9)
+ 0.450166(log 0.450166 - log 0.1) = 0.406304.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from alignment.losses.dpo_types import LossVariant, Ratios


def _exo_pair(r: Ratios) -> torch.Tensor:
    m, eps = r.margin, r.label_smoothing
    log_qw, log_ql = F.logsigmoid(m), F.logsigmoid(-m)
    return log_qw.exp() * (log_qw - math.log1p(-eps)) + log_ql.exp() * (log_ql - math.log(eps))


def _nca_pair(r: Ratios) -> torch.Tensor:
    w, lose = r.beta * r.chosen, r.beta * r.rejected
    return -F.logsigmoid(w) - 0.5 * F.logsigmoid(-w) - 0.5 * F.logsigmoid(-lose)


def _bco_pair(r: Ratios) -> torch.Tensor:
    return -F.logsigmoid(r.beta * r.chosen) - F.logsigmoid(-r.beta * r.rejected)


def _sppo_hard(r: Ratios) -> torch.Tensor:
    return (r.chosen - 0.5 / r.beta) ** 2 + (r.rejected + 0.5 / r.beta) ** 2


def _smoothed_sigmoid(d: torch.Tensor, r: Ratios) -> torch.Tensor:
    eps = r.label_smoothing
    return -(1 - eps) * F.logsigmoid(r.beta * d) - eps * F.logsigmoid(-r.beta * d)


def _aot(r: Ratios) -> torch.Tensor:
    policy = r.policy_chosen - r.policy_rejected
    ref = policy - (r.chosen - r.rejected)  # ref_w - ref_l
    return _smoothed_sigmoid(torch.sort(policy).values - torch.sort(ref).values, r)


def _aot_unpaired(r: Ratios) -> torch.Tensor:
    return _smoothed_sigmoid(torch.sort(r.chosen).values - torch.sort(r.rejected).values, r)


def _apo_zero(r: Ratios) -> torch.Tensor:
    return 1 - torch.sigmoid(r.beta * r.chosen) + torch.sigmoid(r.beta * r.rejected)


def _apo_down(r: Ratios) -> torch.Tensor:
    return torch.sigmoid(r.beta * r.chosen) + 1 - torch.sigmoid(r.beta * (r.chosen - r.rejected))


def _discopop(r: Ratios) -> torch.Tensor:
    m = r.margin
    g = torch.sigmoid(m / r.discopop_tau)
    return -F.logsigmoid(m) * (1 - g) + torch.exp(-m) * g


def _sft(r: Ratios) -> torch.Tensor:
    nll = -r.policy_chosen
    total = r.chosen_tokens.sum() if r.token_scale is None else r.token_scale
    pairs = nll.numel() if r.batch_pairs is None else r.batch_pairs
    return nll * pairs / torch.as_tensor(total, dtype=nll.dtype, device=nll.device).clamp(min=1)


def _sigmoid_norm(r: Ratios) -> torch.Tensor:
    d = r.chosen_scores / r.chosen_tokens.clamp(min=1) - r.rejected_scores / r.rejected_tokens.clamp(min=1)
    return -F.logsigmoid(r.beta * d)


TRL_VARIANTS: dict[str, LossVariant] = {
    "exo_pair": LossVariant(
        _exo_pair, "KL to (1-eps, eps) over the pair, label_smoothing > 0 (EXO, Ji et al., 2402.00856)",
        f_divergence=True,
    ),
    "nca_pair": LossVariant(_nca_pair, "noise-contrastive alignment (NCA, Chen et al., 2402.05369)"),
    "bco_pair": LossVariant(_bco_pair, "binary classifier of chosen vs rejected (BCO, Jung et al., 2404.04656)"),
    "sppo_hard": LossVariant(_sppo_hard, "squared log-ratio targets +-1/(2 beta) (SPPO hard, Wu et al., 2405.00675)"),
    "aot": LossVariant(
        _aot, "sorted policy vs reference log-ratio quantiles (AOT, Melnyk et al., 2406.05882)", whole_batch=True
    ),
    "aot_unpaired": LossVariant(
        _aot_unpaired, "sorted chosen vs rejected log-ratio quantiles (AOT unpaired)", whole_batch=True
    ),
    "apo_zero": LossVariant(_apo_zero, "raise chosen, lower rejected (APO-zero, D'Oosterlinck et al., 2408.06266)"),
    "apo_down": LossVariant(_apo_down, "lower both, rejected more (APO-down, 2408.06266)"),
    "discopop": LossVariant(
        _discopop, "log-ratio modulated logistic/exponential blend, discopop_tau (Chan et al., 2406.08414)",
        f_divergence=True,
    ),
    "sft": LossVariant(_sft, "negative log-likelihood of the chosen, a token mean (with sigmoid: RPO / MPO)"),
    "sigmoid_norm": LossVariant(
        _sigmoid_norm, "sigmoid on per-token-averaged log-ratios (length-normalized DPO)", True, f_divergence=True
    ),
}  # fmt: skip
