"""SparsePO: token-level sparse masks on the rewards and the KL terms of token-level DPO (Christopoulou et al.
2024, arXiv 2410.05102; the loss follows the authors' public code, which builds on TDPO, Zeng et al. 2024,
arXiv 2404.11999).

Per scored response token t of pair i (flat layout of a ``PairChunk``: ``token_pair`` gives the pair,
``token_chosen`` the side):

    r_t = log pi_theta(y_t | x, y_<t) - log pi_ref(y_t | x, y_<t)                    (token log-ratio)
    k_t = KL( pi_ref(. | x, y_<t) || pi_theta(. | x, y_<t) ) >= 0                    (the kernel's kl_ref)
    u   = sum_t m_u(w,t) r_w,t - sum_t m_u(l,t) r_l,t
    d   = sum_t m_d(l,t) k_l,t - sum_t m_d(w,t) k_w,t
    loss_i = -log sigmoid( beta * (u - kl_coef * d) )
             + lambda_reward * (|m_u^w|_1 + |m_u^l|_1) + lambda_kl * (|m_d^w|_1 + |m_d^l|_1)

``mask_on_reward=False`` sets m_u = 1 (and drops its L1 term), ``mask_on_kl=False`` sets m_d = 1 (likewise).
With one common mask used on both terms (``common_mask=True`` and both switches on) the authors' code
halves lambda_reward and lambda_kl, because the same mask is counted twice; we keep that.
``kl_coef`` = 0 turns the KL term off. Identities (tested): all masks 1 and kl_coef 0 is DPO's sigmoid
loss on summed log-probabilities; all masks 1 and kl_coef 1 is TDPO-v1.

Metrics (per pair): rewards/chosen = beta*(u_w - kl_coef*d_w) with u_w = sum m_u r_w, d_w = sum m_d k_w
(and likewise rejected) - the authors' "rewards", NOT DPO's implicit reward beta*(logp_w - ref_w) unless
the masks are 1 and the KL term is off; the masks' sparsity (share of tokens with mask exactly 0) and
mean; the sequence KL of each side before (sum k) and after masking (sum m_d k).

Shapes: every per-token input [n]; ``token_pair`` [n] in 0..k-1, ``token_chosen`` [n] bool; returns
(per-pair losses [k], metrics of [k] tensors).

Worked example (one pair, beta = 1, lambdas 0): chosen tokens r = (0.5, -0.1), k = (0.2, 0.1), masks
m_u = (1, 0), m_d = (0, 2); rejected token r = (-0.3), k = (0.4), m_u = (1), m_d = (0.5):
u = 0.5 - (-0.3) = 0.8, d = 0.5*0.4 - 2*0.1 = 0, loss = -log sigmoid(0.8) = 0.371101. With
lambda_reward = lambda_kl = 0.1 (independent masks): + 0.1*(1 + 1) + 0.1*(2 + 0.5) = 0.821101.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from alignment.ops.pair_fused import side_sums


def sparsepo_loss(
    token_logps: torch.Tensor,
    ref_token_logps: torch.Tensor,
    token_kl: torch.Tensor,
    mask_reward: torch.Tensor,
    mask_kl: torch.Tensor,
    token_pair: torch.Tensor,
    token_chosen: torch.Tensor,
    n_pairs: int,
    beta: float = 0.8,
    mask_on_reward: bool = True,
    mask_on_kl: bool = True,
    lambda_reward: float = 1e-3,
    lambda_kl: float = 1e-3,
    kl_coef: float = 1.0,
    common_mask: bool = False,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-pair SparsePO losses [k] and metrics (module docstring)."""
    k = n_pairs
    ones = torch.ones_like(token_logps)
    m_u = mask_reward if mask_on_reward else ones
    m_d = mask_kl if mask_on_kl else ones
    if common_mask and mask_on_reward and mask_on_kl:
        lambda_reward, lambda_kl = lambda_reward / 2, lambda_kl / 2  # the same mask counted twice (authors' code)

    def sides(values):  # per-pair sums over the chosen tokens and over the rejected tokens: ([k], [k])
        sums = side_sums(values, token_pair, token_chosen, k)
        return sums[:k], sums[k:]

    ratio = token_logps - ref_token_logps
    u_w, u_l = sides(m_u * ratio)
    d_w, d_l = sides(m_d * token_kl)
    margin = beta * ((u_w - u_l) - kl_coef * (d_l - d_w))
    losses = -F.logsigmoid(margin)
    if mask_on_reward and lambda_reward:
        losses = losses + lambda_reward * sum(sides(m_u.abs()))
    if mask_on_kl and lambda_kl:
        losses = losses + lambda_kl * sum(sides(m_d.abs()))
    chosen_rewards = (beta * (u_w - kl_coef * d_w)).detach()
    rejected_rewards = (beta * (u_l - kl_coef * d_l)).detach()
    counts = sum(sides(ones)).clamp(min=1)
    kl_w, kl_l = sides(token_kl.detach())
    metrics = {
        "rewards/chosen": chosen_rewards,
        "rewards/rejected": rejected_rewards,
        "rewards/margins": chosen_rewards - rejected_rewards,
        "rewards/accuracies": (chosen_rewards > rejected_rewards).float(),
        "sparsepo/kl_chosen": kl_w,
        "sparsepo/kl_rejected": kl_l,
        "sparsepo/kl_chosen_masked": d_w.detach(),
        "sparsepo/kl_rejected_masked": d_l.detach(),
    }
    for name, mask, used in (("reward", mask_reward, mask_on_reward), ("kl", mask_kl, mask_on_kl)):
        if used:
            metrics[f"sparsepo/mask_sparsity_{name}"] = sum(sides((mask.detach() == 0).to(ones.dtype))) / counts
            metrics[f"sparsepo/mask_mean_{name}"] = sum(sides(mask.detach())) / counts
    return losses, metrics
