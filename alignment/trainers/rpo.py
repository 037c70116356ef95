"""RPOTrainer: DPO plus an SFT term on the chosen responses (Liu et al. 2024, arXiv 2405.16436, eq. 4.8);
``sft_normalization`` picks sum (the paper), seq_mean or token_mean (TRL's ["sigmoid", "sft"])."""

from __future__ import annotations

from alignment.configs import RPOConfig
from alignment.losses import rpo_loss
from alignment.trainers.base import PreferenceTrainer


class RPOTrainer(PreferenceTrainer):
    method = "rpo"
    paper = "Provably Mitigating Overoptimization in RLHF (Liu et al. 2024)"
    arxiv = "2405.16436"
    config_class = RPOConfig

    def pair_losses(self, chunk, ref_chosen, ref_rejected, token_scale):
        args = self.args
        return rpo_loss(
            chunk.chosen_logps,
            chunk.rejected_logps,
            ref_chosen,
            ref_rejected,
            chunk.chosen_tokens,
            beta=args.beta,
            eta=args.eta,
            sft_normalization=args.sft_normalization,
            total_chosen_tokens=token_scale,
            batch_pairs=self._batch_pairs,
            loss_type=args.loss_type,
            label_smoothing=args.label_smoothing,
            rejected_tokens=chunk.rejected_tokens,
        )
