"""Preference and SFT losses as pure functions of log-probabilities: (inputs) -> (per-pair losses, metrics).

One file per method. Nothing needs registering here: a method module imports its loss from its own file
(``from alignment.losses.cpo import CPO_LOSS_TYPES, cpo_loss
from alignment.losses.dpo import dpo_loss``); the names below are the built-in losses, for convenience.
"""

from alignment.losses.cpo import CPO_LOSS_TYPES, cpo_loss
from alignment.losses.dpo import LOSS_TYPES, LOSS_VARIANTS, LossVariant, Ratios, dpo_loss
from alignment.losses.inpo import inpo_loss
from alignment.losses.orpo import orpo_loss
from alignment.losses.rpo import SFT_NORMALIZATIONS, SFT_TERMS, rpo_loss, rpo_sft_term
from alignment.losses.sft import sft_loss

__all__ = [
    "CPO_LOSS_TYPES",
    "LOSS_TYPES",
    "LOSS_VARIANTS",
    "SFT_NORMALIZATIONS",
    "SFT_TERMS",
    "LossVariant",
    "Ratios",
    "cpo_loss",
    "dpo_loss",
    "inpo_loss",
    "orpo_loss",
    "rpo_loss",
    "rpo_sft_term",
    "sft_loss",
]
