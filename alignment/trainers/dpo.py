"""DPOTrainer: Direct Preference Optimization (Rafailov et al. 2023, arXiv 2305.18290) and its
sigmoid / ipo / hinge / robust variants (alignment.losses.dpo)."""

from __future__ import annotations

from alignment.configs import DPOConfig
from alignment.losses import dpo_loss
from alignment.trainers.base import PreferenceTrainer


class DPOTrainer(PreferenceTrainer):
    method = "dpo"
    config_class = DPOConfig

    def pair_losses(self, chunk, ref_chosen, ref_rejected, token_scale):
        args = self.args
        return dpo_loss(
            chunk.chosen_logps,
            chunk.rejected_logps,
            ref_chosen,
            ref_rejected,
            beta=args.beta,
            loss_type=args.loss_type,
            label_smoothing=args.label_smoothing,
            chosen_tokens=chunk.chosen_tokens,
            rejected_tokens=chunk.rejected_tokens,
        )
