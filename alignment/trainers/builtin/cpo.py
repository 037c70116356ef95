"""CPO (Xu et al. 2024, arXiv 2401.08417), SimPO (Meng et al. 2024, arXiv 2405.14734; ``loss_type: simpo``,
``cpo_alpha: 0``) and AlphaPO (Gupta et al. 2025, arXiv 2501.03884; ``alpha``): reference-free, on the
pair-fused path of the fused op (no reference pass, no anchor). trl 1.16's CPOConfig fields and defaults. The
method's config, trainer and registration; the loss is alignment.losses.cpo."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import ClassVar

from alignment.configs import PreferenceConfig, choice
from alignment.losses.cpo import CPO_ALIASES, CPO_LOSS_TYPES, cpo_loss, cpo_loss_types_help
from alignment.trainers.preference import PreferenceTrainer
from alignment.trainers.registry import register

logger = logging.getLogger(__name__)


@dataclass
class CPOConfig(PreferenceConfig):
    """CPO / SimPO / AlphaPO (README, "CPO, SimPO, AlphaPO and ORPO"): trl 1.16's CPOConfig fields and defaults."""

    card_exclude: ClassVar[tuple[str, ...]] = PreferenceConfig.card_exclude + PreferenceConfig.reference_fields

    beta: float = field(default=0.1, metadata={"help": "The temperature beta of the preference term."})
    label_smoothing: float = field(
        default=0.0, metadata={"help": "Label-noise rate eps of the sigmoid and simpo losses (conservative CPO)."}
    )
    loss_type: str = field(default="sigmoid", metadata={"help": f"The CPO loss. {cpo_loss_types_help()}."})
    cpo_alpha: float = field(
        default=1.0, metadata={"help": "Weight of the behaviour-cloning NLL term on the chosen responses."}
    )
    simpo_gamma: float = field(default=0.5, metadata={"help": "SimPO's target reward margin gamma (loss_type simpo)."})
    alpha: float = field(
        default=0.0,
        metadata={"help": "AlphaPO's reward shape: r = (1 - p^-alpha) / alpha (0: the log-probability itself)."},
    )

    def __post_init__(self):
        if self.loss_type in CPO_ALIASES:  # TRL's sugar: alphapo is simpo without the NLL term
            self.loss_type, self.cpo_alpha = "simpo", 0.0
        choice("loss_type", self.loss_type, tuple(CPO_LOSS_TYPES) + CPO_ALIASES)
        if not self.beta > 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ValueError(f"label_smoothing must be in [0, 0.5), got {self.label_smoothing}")
        if self.cpo_alpha < 0:
            raise ValueError(f"cpo_alpha must be >= 0, got {self.cpo_alpha}")
        if self.loss_type in ("hinge", "ipo") and self.label_smoothing > 0:
            logger.warning("loss_type %s does not use label_smoothing (%s is ignored)", self.loss_type,
                           self.label_smoothing)  # fmt: skip
        super().__post_init__()


@register(
    "cpo",
    config=CPOConfig,
    loss=cpo_loss,
    paper="Contrastive Preference Optimization (Xu et al. 2024)",
    arxiv="2401.08417",
    recipe="quickstart/cpo.yaml",
    summary="CPO, SimPO (loss_type simpo, cpo_alpha 0) and AlphaPO (alpha): reference-free, plus an NLL term",
)
class CPOTrainer(PreferenceTrainer):
    trl_tokenization = "trl_cpo"  # trl 1.16's experimental CPOTrainer (alignment.data.trl_rules)
    trl_tokenization_by_default = True
    console_metrics = ("rewards/margins", "rewards/accuracies", "nll_loss")

    def pair_losses(self, chunk, anchors, token_scale):
        args = self.args
        return cpo_loss(
            chunk.chosen_logps,
            chunk.rejected_logps,
            chunk.chosen_tokens,
            chunk.rejected_tokens,
            beta=args.beta,
            loss_type=args.loss_type,
            label_smoothing=args.label_smoothing,
            simpo_gamma=args.simpo_gamma,
            alpha=args.alpha,
            cpo_alpha=args.cpo_alpha,
            token_scale=token_scale,
            batch_pairs=self._batch_pairs,
        )
