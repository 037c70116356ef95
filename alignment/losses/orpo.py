"""ORPO (Hong et al. 2024, "ORPO: Monolithic Preference Optimization without Reference Model", arXiv
2403.07691, eqs. 4-7): the NLL of the chosen responses plus an odds-ratio term, reference-free, as trl
1.16's ORPOTrainer forms it.

With s_w, s_l the policy's log-probabilities of the chosen and rejected completions averaged over their
tokens (P = exp(s)), odds(y) = P / (1 - P) and

    log_odds = (s_w - s_l) - (log(1 - exp(s_w)) - log(1 - exp(s_l)))
    L = NLL - beta * mean_i log sigmoid(log_odds_i),  NLL = -sum_{i,t} log p(x_i, y_w,i)_t / N_tokens

(beta is the paper's lambda; the NLL covers the chosen rows' prompt and response tokens, every token after the
first, as trl 1.16 and the authors' code compute it: ``nll_logps`` / ``nll_tokens``.) log(1 - exp(s)) is computed
stably (log1p(-exp(s)) below -ln 2, log(-expm1(s)) above). An average log-probability of exactly 0 (every token
certain) makes log(1 - exp(s)) -inf in TRL; here s is capped at -1e-6 first, so the loss stays finite (the only
departure from TRL, at a point TRL cannot train).

Logged as TRL does: rewards/* = beta * s, logps/* = s (averaged), nll_loss, log_odds_ratio (log sigmoid of
log_odds), log_odds_chosen (log_odds).

Worked example (one pair, beta 0.1): 4 chosen tokens summing to -2 (s_w = -0.5) and 2 rejected summing to -2
(s_l = -1): log(1 - e^-0.5) = -0.9328, log(1 - e^-1) = -0.4587, log_odds = 0.5 + 0.4741 = 0.9741,
log sigmoid = -0.3203, NLL = 0.5, L = 0.5 + 0.03203 = 0.5320.

Shapes: [B] summed log-probabilities and token counts; ``token_scale`` / ``batch_pairs`` as in
alignment.losses.cpo (the NLL's global token mean). Returns per-pair losses [B] and [B] metrics.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from alignment.losses.cpo import nll_terms, reference_free_metrics

_CAP = -1e-6


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, without cancellation (Maechler 2012's branch at -ln 2)."""
    return torch.where(x < -math.log(2), torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def orpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    chosen_tokens: torch.Tensor,
    rejected_tokens: torch.Tensor,
    *,
    beta: float = 0.1,
    nll_logps: torch.Tensor | None = None,
    nll_tokens: torch.Tensor | None = None,
    token_scale: float | torch.Tensor | None = None,
    batch_pairs: int | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-pair ORPO losses [B] (the module docstring) and metrics under TRL's names. ``nll_logps`` [B]: the
    summed log-probabilities the NLL covers, over ``nll_tokens`` [B] tokens (default: the chosen completions;
    TRL's ORPOTrainer, like the authors' code, covers the chosen rows' prompts too, which the trainer does)."""
    chosen = (policy_chosen / chosen_tokens.clamp(min=1).to(policy_chosen.dtype)).float()
    rejected = (policy_rejected / rejected_tokens.clamp(min=1).to(policy_rejected.dtype)).float()
    capped_w, capped_l = chosen.clamp(max=_CAP), rejected.clamp(max=_CAP)
    log_odds = (chosen - rejected) - (log1mexp(capped_w) - log1mexp(capped_l))
    ratio = F.logsigmoid(log_odds)
    if nll_logps is None:
        nll_logps, nll_tokens = policy_chosen, chosen_tokens
    nll = nll_terms(nll_logps, nll_tokens, token_scale, batch_pairs)
    losses = nll - beta * ratio.to(nll.dtype)
    metrics = reference_free_metrics(beta * chosen, beta * rejected, chosen, rejected, nll)
    metrics.update({"log_odds_ratio": ratio.detach(), "log_odds_chosen": log_odds.detach()})
    return losses, metrics
