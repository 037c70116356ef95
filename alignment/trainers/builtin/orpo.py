"""ORPO (Hong et al. 2024, arXiv 2403.07691): the chosen responses' NLL plus an odds-ratio term on
length-averaged log-probabilities; reference-free, on the pair-fused path of the fused op. trl 1.16's
ORPOConfig fields and defaults. The method's config, trainer and registration; the loss is
alignment.losses.orpo."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from alignment.configs import PreferenceConfig
from alignment.losses.orpo import orpo_loss
from alignment.trainers.preference import PreferenceTrainer
from alignment.trainers.registry import register

COMPLETION = "orpo_completion"  # token input: 1 on completion tokens, 0 on the chosen prompts' tokens


@dataclass
class ORPOConfig(PreferenceConfig):
    """ORPO (README, "CPO, SimPO, AlphaPO and ORPO"): trl 1.16's ORPOConfig fields and defaults."""

    card_exclude: ClassVar[tuple[str, ...]] = PreferenceConfig.card_exclude + PreferenceConfig.reference_fields

    beta: float = field(default=0.1, metadata={"help": "Weight of the odds-ratio term (the paper's lambda)."})

    def __post_init__(self):
        if not self.beta > 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")
        super().__post_init__()


@register(
    "orpo",
    config=ORPOConfig,
    loss=orpo_loss,
    paper="ORPO: Monolithic Preference Optimization without Reference Model (Hong et al. 2024)",
    arxiv="2403.07691",
    recipe="quickstart/orpo.yaml",
    summary="ORPO: the chosen responses' NLL plus an odds-ratio term, reference-free",
)
class ORPOTrainer(PreferenceTrainer):
    trl_tokenization = "trl_cpo"  # trl 1.16's experimental ORPOTrainer (alignment.data.trl_rules)
    trl_tokenization_by_default = True
    console_metrics = ("log_odds_ratio", "rewards/accuracies", "nll_loss")

    def pair_losses(self, chunk, anchors, token_scale):
        flag = chunk.token_inputs[COMPLETION]
        chosen, rejected = chunk.token_sums(chunk.token_logps * flag)
        chosen_tokens, rejected_tokens = chunk.token_sums(flag)
        return orpo_loss(
            chosen,
            rejected,
            chosen_tokens,
            rejected_tokens,
            beta=self.args.beta,
            nll_logps=chunk.chosen_logps,
            nll_tokens=chunk.chosen_tokens,
            token_scale=token_scale,
            batch_pairs=self._batch_pairs,
        )

    def scored_mask(self, inputs):
        """The chosen rows' prompt and completion (the NLL covers both, as in TRL), the rejected completions."""
        half = inputs["completion_mask"].shape[0] // 2
        return torch.cat([inputs["attention_mask"][:half], inputs["completion_mask"][half:]])

    def counted_tokens(self, batch):
        """The NLL's token mean divides by the chosen rows' tokens after the first (TRL's shifted labels)."""
        return batch["attention_mask"][: batch["attention_mask"].shape[0] // 2, 1:].sum()

    def token_inputs(self, model, inputs, anchors, packing=None):
        out = super().token_inputs(model, inputs, anchors, packing)
        out[COMPLETION] = inputs["completion_mask"][:, 1:].float()  # which scored tokens the odds ratio reads
        return out
