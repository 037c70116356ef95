"""RPO (Liu et al. 2024, "Provably Mitigating Overoptimization in RLHF: Your SFT Loss is Implicitly an
Adversarial Regularizer", arXiv 2405.16436, eq. 4.8): DPO plus an SFT term on the chosen response.

    L_RPO = L_DPO + SFT term, where the SFT term depends on ``sft_normalization``:

    sum        (default; the paper and its code):  eta * beta * mean_i( -sum_t log p(y_w,t) )
    seq_mean   (the authors' OpenRLHF variant):    eta * mean_i( -mean_t log p(y_w,t) )
    token_mean (TRL's loss_type=["sigmoid","sft"]): eta * sum_{i,t}( -log p(y_w,t) ) / N_chosen_tokens

The three differ by orders of magnitude for the same eta. Worked example: one pair whose chosen response
has 100 tokens at log p = -0.5 each (sum -50), eta = 0.005, beta = 0.1: sum gives 0.005*0.1*50 = 0.025;
seq_mean gives 0.005*0.5 = 0.0025; token_mean gives 0.005*0.5 = 0.0025 (equal to seq_mean here, as all
tokens are in one sequence; they differ when lengths vary). To match TRL's ["sigmoid", "sft"] use
token_mean with eta = 1 (TRL's loss_weights [1, 1]); the paper's setting is sum with eta = 0.005.

With eta = 0 RPO is exactly DPO.

Shapes: per-pair inputs [B]; ``chosen_token_logps`` the summed form's parts are not needed: the function
takes the chosen sequence sums [B], the chosen token counts [B], and for token_mean the global token
count (a number: all chosen tokens of the global batch, across accumulation steps and processes).
"""

from __future__ import annotations

import torch

from alignment.losses.dpo import dpo_loss


def _sum(nll, chosen_tokens, eta, beta, total, pairs):
    return eta * beta * nll


def _seq_mean(nll, chosen_tokens, eta, beta, total, pairs):
    return eta * nll / chosen_tokens.clamp(min=1)


def _token_mean(nll, chosen_tokens, eta, beta, total, pairs):
    total = chosen_tokens.sum() if total is None else total
    pairs = nll.numel() if pairs is None else pairs
    return eta * nll * pairs / torch.as_tensor(total, dtype=nll.dtype, device=nll.device).clamp(min=1)


#: sft_normalization -> (per-pair SFT term, help). Each term takes (nll [B], chosen_tokens [B], eta, beta,
#: total_chosen_tokens, batch_pairs).
SFT_TERMS = {
    "sum": (_sum, "eta*beta*(-sum_t log p), the paper and its code"),
    "seq_mean": (_seq_mean, "eta*(-mean_t log p) per sequence, the authors' OpenRLHF variant"),
    "token_mean": (_token_mean, "eta*(-sum log p)/N over the global batch's chosen tokens, TRL's"),
}
SFT_NORMALIZATIONS = tuple(SFT_TERMS)


def sft_normalizations_help() -> str:
    return "; ".join(f"{name}: {help_}" for name, (_, help_) in SFT_TERMS.items())


def rpo_sft_term(
    policy_chosen: torch.Tensor,
    chosen_tokens: torch.Tensor,
    eta: float,
    beta: float,
    sft_normalization: str = "sum",
    total_chosen_tokens: float | torch.Tensor | None = None,
    batch_pairs: int | None = None,
) -> torch.Tensor:
    """Per-pair SFT terms whose MEAN over the batch of ``batch_pairs`` pairs is the RPO regularizer (for
    token_mean a pair's term is batch_pairs * sum_t(-log p) / N, so that the batch mean is sum / N; the
    inputs may be a chunk of the batch)."""
    if sft_normalization not in SFT_TERMS:
        raise ValueError(f"sft_normalization must be one of {SFT_NORMALIZATIONS}, got {sft_normalization!r}")
    term, _ = SFT_TERMS[sft_normalization]
    return term(-policy_chosen, chosen_tokens, eta, beta, total_chosen_tokens, batch_pairs)


def rpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    chosen_tokens: torch.Tensor,
    beta: float = 0.1,
    eta: float = 0.005,
    sft_normalization: str = "sum",
    total_chosen_tokens: float | torch.Tensor | None = None,
    batch_pairs: int | None = None,
    **dpo_kwargs,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-pair RPO losses [B] and metrics (DPO's plus ``rpo/sft_term``)."""
    losses, metrics = dpo_loss(
        policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta, chosen_tokens=chosen_tokens,
        token_scale=total_chosen_tokens, batch_pairs=batch_pairs, **dpo_kwargs,
    )  # fmt: skip
    sft = rpo_sft_term(policy_chosen, chosen_tokens, eta, beta, sft_normalization, total_chosen_tokens, batch_pairs)
    metrics["rpo/sft_term"] = sft.detach()
    return losses + sft, metrics
