"""Preference and SFT losses as pure functions of log-probabilities: (inputs) -> (per-pair losses, metrics)."""

from alignment.losses.dpo import LOSS_TYPES, dpo_loss
from alignment.losses.rpo import SFT_NORMALIZATIONS, rpo_loss, rpo_sft_term
from alignment.losses.sft import sft_loss

__all__ = ["LOSS_TYPES", "SFT_NORMALIZATIONS", "dpo_loss", "rpo_loss", "rpo_sft_term", "sft_loss"]
