"""DPO: Direct Preference Optimization (Rafailov et al. 2023, arXiv 2305.18290) and its sigmoid / ipo /
hinge / robust variants (alignment.losses.dpo.LOSS_VARIANTS). The method's config, trainer and registration.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from alignment.configs import PreferenceConfig, choice
from alignment.losses.dpo import LOSS_VARIANTS, dpo_loss, loss_types_help
from alignment.trainers.preference import PreferenceTrainer
from alignment.trainers.registry import register


@dataclass
class DPOConfig(PreferenceConfig):
    """DPO (Rafailov et al. 2023, arXiv 2305.18290) and its common variants (specs/losses.md)."""

    beta: float = field(default=0.1, metadata={"help": "KL strength beta."})
    loss_type: str = field(default="sigmoid", metadata={"help": f"The DPO variant. {loss_types_help()}."})
    label_smoothing: float = field(
        default=0.0, metadata={"help": "Label-noise rate eps (cDPO for sigmoid, robust DPO); in [0, 0.5)."}
    )

    def __post_init__(self):
        choice("loss_type", self.loss_type, LOSS_VARIANTS)
        if not self.beta > 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ValueError(f"label_smoothing must be in [0, 0.5), got {self.label_smoothing}")
        super().__post_init__()


@register(
    "dpo",
    config=DPOConfig,
    loss=dpo_loss,
    paper="Direct Preference Optimization (Rafailov et al. 2023)",
    arxiv="2305.18290",
    anchors=("ref",),
    recipe="quickstart/dpo.yaml",
    summary="DPO and its sigmoid / ipo / hinge / robust variants",
)
class DPOTrainer(PreferenceTrainer):
    def pair_losses(self, chunk, anchors, token_scale):
        args, ref = self.args, anchors["ref"]
        return dpo_loss(
            chunk.chosen_logps,
            chunk.rejected_logps,
            ref.chosen,
            ref.rejected,
            beta=args.beta,
            loss_type=args.loss_type,
            label_smoothing=args.label_smoothing,
            chosen_tokens=chunk.chosen_tokens,
            rejected_tokens=chunk.rejected_tokens,
        )
