"""DPO: Direct Preference Optimization (Rafailov et al. 2023, arXiv 2305.18290) and its variants (sigmoid,
ipo, hinge, robust and TRL's others: alignment.losses.dpo.LOSS_VARIANTS). The method's config, trainer and
registration.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from alignment.configs import PreferenceConfig
from alignment.losses.dpo import (
    F_DIVERGENCES,
    LOSS_VARIANTS,
    as_loss_types,
    check_combination,
    dpo_loss,
    loss_types_help,
)
from alignment.trainers.preference import PreferenceTrainer
from alignment.trainers.registry import register


@dataclass
class DPOConfig(PreferenceConfig):
    """DPO (Rafailov et al. 2023, arXiv 2305.18290) and its common variants (README, "Training")."""

    beta: float = field(default=0.1, metadata={"help": "KL strength beta."})
    loss_type: str | list[str] = field(
        default="sigmoid",
        metadata={"help": f"The DPO variant, or a list of them summed with loss_weights (MPO). {loss_types_help()}."},
    )
    loss_weights: list[float] | None = field(
        default=None, metadata={"help": "One weight per loss_type (default: 1 each)."}
    )
    label_smoothing: float = field(
        default=0.0,
        metadata={"help": "Label-noise rate eps (cDPO for sigmoid, robust DPO, exo_pair, aot); in [0, 0.5)."},
    )
    f_divergence_type: str = field(
        default="reverse_kl",
        metadata={"help": f"The divergence to the reference (f-DPO, Wang et al. 2309.16240): {list(F_DIVERGENCES)}."},
    )
    f_alpha_divergence_coef: float = field(default=0.5, metadata={"help": "alpha of alpha_divergence."})
    discopop_tau: float = field(default=0.05, metadata={"help": "DiscoPOP's temperature tau (loss_type discopop)."})

    @property
    def loss_types(self) -> tuple[str, ...]:
        """loss_type as a tuple of variant names."""
        return as_loss_types(self.loss_type)

    @property
    def whole_batch_loss(self) -> bool:
        """A variant that couples the pairs of a batch (aot sorts them) is evaluated on the whole batch."""
        return any(LOSS_VARIANTS[name].whole_batch for name in self.loss_types)

    def __post_init__(self):
        if isinstance(self.loss_type, list) and len(self.loss_type) == 1:
            self.loss_type = self.loss_type[0]
        check_combination(self.loss_types, self.loss_weights, self.f_divergence_type, self.label_smoothing)
        if not self.discopop_tau > 0:
            raise ValueError(f"discopop_tau must be > 0, got {self.discopop_tau}")
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
    summary="DPO and its variants (sigmoid, ipo, hinge, robust and TRL's others; MPO lists)",
)
class DPOTrainer(PreferenceTrainer):
    supports_sequence_options = True
    supports_sequence_parallel = True

    def pair_losses(self, chunk, anchors, token_scale):
        policy, ref = self.sequence_logps(chunk, anchors["ref"])
        losses, metrics = dpo_loss(
            policy.chosen,
            policy.rejected,
            ref.chosen,
            ref.rejected,
            chosen_tokens=chunk.chosen_tokens,
            rejected_tokens=chunk.rejected_tokens,
            token_scale=token_scale,
            batch_pairs=self._batch_pairs,
            **dpo_options(self.args),
        )
        return self.weighted(chunk, losses), metrics


def dpo_options(args: DPOConfig) -> dict:
    """The config's options of alignment.losses.dpo_loss (checked when the config was built: not again per chunk)."""
    return dict(
        validate=False,
        beta=args.beta,
        loss_type=args.loss_types,
        label_smoothing=args.label_smoothing,
        loss_weights=args.loss_weights,
        f_divergence_type=args.f_divergence_type,
        f_alpha_divergence_coef=args.f_alpha_divergence_coef,
        discopop_tau=args.discopop_tau,
    )
