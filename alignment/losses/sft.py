"""Supervised fine-tuning loss: token-mean negative log-likelihood of the completion (prompt masked).

    L = -sum_{n scored} log p(y_n) / N_scored        (N_scored: completion tokens of the global batch)

Shapes: ``token_logps`` [...] with 0 at unscored positions, ``mask`` [...] (1 = scored). ``total_tokens``
(optional) is the token count of the global batch (across accumulation steps and processes); by default
the mask's own count.

Worked example: token log-probabilities [-1, -2, 0 (masked), -3] give L = (1 + 2 + 3) / 3 = 2.
"""

from __future__ import annotations

import torch


def sft_loss(
    token_logps: torch.Tensor, mask: torch.Tensor, total_tokens: float | torch.Tensor | None = None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    count = mask.sum() if total_tokens is None else torch.as_tensor(total_tokens, device=token_logps.device)
    nll = -(token_logps * mask).sum()
    loss = nll / count.clamp(min=1).to(token_logps.dtype)
    per_token = (nll / mask.sum().clamp(min=1)).detach()
    return loss, {"nll_per_token": per_token.reshape(1)}
