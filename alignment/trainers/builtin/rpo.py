"""RPO: DPO plus an SFT term on the chosen responses (Liu et al. 2024, arXiv 2405.16436, eq. 4.8);
``sft_normalization`` picks sum (the paper), seq_mean or token_mean (TRL's ["sigmoid", "sft"]). The
method's config, trainer and registration."""

from __future__ import annotations

from dataclasses import dataclass, field

from alignment.configs import choice
from alignment.losses.rpo import SFT_TERMS, rpo_loss, sft_normalizations_help
from alignment.trainers.builtin.dpo import DPOConfig, dpo_options
from alignment.trainers.preference import PreferenceTrainer
from alignment.trainers.registry import register


@dataclass
class RPOConfig(DPOConfig):
    """RPO (Liu et al. 2024, arXiv 2405.16436): DPO plus an SFT term on the chosen responses."""

    eta: float = field(
        default=0.005,
        metadata={"help": "RPO's weight of the SFT term on the chosen responses (see sft_normalization)."},
    )
    sft_normalization: str = field(
        default="sum", metadata={"help": f"How the SFT term is normalized. {sft_normalizations_help()}."}
    )

    def __post_init__(self):
        choice("sft_normalization", self.sft_normalization, SFT_TERMS)
        if self.eta < 0:
            raise ValueError(f"eta must be >= 0, got {self.eta}")
        super().__post_init__()


@register(
    "rpo",
    config=RPOConfig,
    loss=rpo_loss,
    paper="Provably Mitigating Overoptimization in RLHF (Liu et al. 2024)",
    arxiv="2405.16436",
    anchors=("ref",),
    recipe="quickstart/rpo.yaml",
    summary="DPO plus an SFT term on the chosen responses",
)
class RPOTrainer(PreferenceTrainer):
    console_metrics = ("rewards/margins", "rewards/accuracies", "rpo/sft_term")
    supports_sequence_options = True

    def pair_losses(self, chunk, anchors, token_scale):
        args = self.args
        policy, ref = self.sequence_logps(chunk, anchors["ref"])
        options = dpo_options(args)
        losses, metrics = rpo_loss(
            policy.chosen,
            policy.rejected,
            ref.chosen,
            ref.rejected,
            chunk.chosen_tokens,
            eta=args.eta,
            sft_normalization=args.sft_normalization,
            total_chosen_tokens=token_scale,
            batch_pairs=self._batch_pairs,
            rejected_tokens=chunk.rejected_tokens,
            **options,
        )
        return self.weighted(chunk, losses), metrics
