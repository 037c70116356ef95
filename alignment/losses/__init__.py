"""Preference losses as pure functions of log-probabilities: (inputs) -> (per-pair losses, metrics)."""

from alignment.losses.dpo import dpo_loss

__all__ = ["dpo_loss"]
