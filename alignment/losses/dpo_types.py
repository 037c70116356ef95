"""The types of the DPO variant table: what a variant sees (Ratios: log-ratios, beta, token counts, the
f-divergence scores) and what it is (LossVariant: its per-pair loss, help and needs). Shared by the built-in
variants (alignment.losses.dpo) and TRL's (alignment.losses.dpo_variants)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

F_DIVERGENCES = ("reverse_kl", "forward_kl", "js_divergence", "alpha_divergence")


def f_scores(logratio: torch.Tensor, kind: str = "reverse_kl", alpha: float = 0.5) -> torch.Tensor:
    """s = f'(t) at t = exp(u) for a log-ratio u [B] (Wang et al. 2023, arXiv 2309.16240, table 1):
    reverse_kl: u; forward_kl: 1 - exp(-u); js_divergence: log 2 + log sigmoid(u); alpha_divergence:
    (exp((alpha-1) u) - 1)/(alpha - 1) (u itself at alpha = 1; the exponent is clamped at 80 as TRL does)."""
    if kind == "reverse_kl":
        return logratio
    if kind == "forward_kl":
        return 1 - torch.exp(-logratio)
    if kind == "js_divergence":
        return math.log(2) + F.logsigmoid(logratio)
    if kind == "alpha_divergence":
        if abs(alpha - 1.0) < 1e-6:
            return logratio
        t = ((alpha - 1.0) * logratio).float().clamp(max=11.0 if logratio.dtype == torch.float16 else 80.0)
        return (torch.exp(t) - 1.0).to(logratio.dtype) / (alpha - 1.0)
    raise ValueError(f"f_divergence_type must be one of {list(F_DIVERGENCES)}, got {kind!r}")


@dataclass(frozen=True)
class Ratios:
    """What a variant sees for B pairs: the log-ratios logp - ref of each side [B], beta, the label-noise
    rate eps, the completion token counts [B] (None when the caller has none), the policy's summed
    log-probabilities [B] (aot), the f-divergence, DiscoPOP's tau, and for the ``sft`` variant the token
    count its mean divides by and the number of pairs in the whole batch (a chunk may hold fewer)."""

    chosen: torch.Tensor
    rejected: torch.Tensor
    beta: float
    label_smoothing: float
    chosen_tokens: torch.Tensor | None
    rejected_tokens: torch.Tensor | None
    policy_chosen: torch.Tensor | None = None
    policy_rejected: torch.Tensor | None = None
    f_divergence_type: str = "reverse_kl"
    f_alpha_divergence_coef: float = 0.5
    discopop_tau: float = 0.05
    token_scale: float | torch.Tensor | None = None
    batch_pairs: int | None = None

    @property
    def chosen_scores(self) -> torch.Tensor:
        return f_scores(self.chosen, self.f_divergence_type, self.f_alpha_divergence_coef)

    @property
    def rejected_scores(self) -> torch.Tensor:
        return f_scores(self.rejected, self.f_divergence_type, self.f_alpha_divergence_coef)

    @property
    def margin(self) -> torch.Tensor:
        """m = beta * (s_w - s_l) (= beta * (u_w - u_l) under the default reverse KL)."""
        if self.f_divergence_type == "reverse_kl":
            return self.beta * (self.chosen - self.rejected)
        return self.beta * (self.chosen_scores - self.rejected_scores)


@dataclass(frozen=True)
class LossVariant:
    """One DPO variant: its per-pair loss [B] from :class:`Ratios`, a one-line description (with its
    paper), whether it needs the completion token counts, whether it reads the f-divergence scores (the
    others take the plain log-ratios and refuse another f_divergence_type), and whether it couples the
    pairs of a batch (aot sorts them: the kernel then evaluates it on the whole batch at once)."""

    fn: Callable[[Ratios], torch.Tensor]
    help: str
    needs_token_counts: bool = False
    f_divergence: bool = False
    whole_batch: bool = False
