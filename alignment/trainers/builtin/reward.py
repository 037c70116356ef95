"""Reward modelling: a Bradley-Terry reward model (a causal LM's backbone with a one-output ``score`` head) trained on
preference pairs, equal to trl 1.16's ``RewardTrainer`` (loss, metrics under its names, parameters). The method's
config, trainer and registration; the loss is alignment.losses.reward, the head alignment.reward_heads.

What it shares with trl: rows are prompt + chosen and prompt + rejected as whole sequences (standard rows get
``eos``; conversational rows the chat template), stacked [chosen; rejected]; a row either of whose sequences is
longer than ``max_length`` is dropped (not cut: a cut answer is another answer); an optional ``margin`` column;
``center_rewards_coefficient``; trl's defaults (learning rate 1e-4). What is ours: the head runs on the last
states only, padding-free batches, streaming, the one-line errors and the banner. A LoRA run trains the head too
(``score`` is added to ``modules_to_save`` when missing, and the banner says so). The saved folder is a judge
(``reward_model:OUTPUT_DIR``, alignment.judges.RewardModelJudge).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field

import torch
from torch import nn

from alignment.configs import AlignmentConfig
from alignment.data import PreferenceCollator
from alignment.data.errors import DataError
from alignment.losses.reward import reward_loss
from alignment.models import unwrap
from alignment.reward_heads import sequence_rewards
from alignment.trainers import packing as packing_lib
from alignment.trainers.base import AlignmentTrainer, is_stream
from alignment.trainers.registry import register

logger = logging.getLogger(__name__)


@dataclass
class RewardConfig(AlignmentConfig):
    """Reward modelling (README, "Reward models"): trl 1.16's RewardConfig fields and defaults."""

    center_rewards_coefficient: float | None = field(
        default=None,
        metadata={"help": "eta of eta * mean((r_chosen + r_rejected)^2), which keeps rewards centred (arXiv "
                  "2312.09244; trl recommends 0.01); unset: off."},
    )  # fmt: skip
    learning_rate: float = field(default=1e-4, metadata={"help": "The initial learning rate (trl's reward default)."})

    def __post_init__(self):
        if self.center_rewards_coefficient is not None and self.center_rewards_coefficient < 0:
            raise ValueError(f"center_rewards_coefficient must be >= 0, got {self.center_rewards_coefficient}")
        super().__post_init__()


def check_reward_model(model: nn.Module) -> None:
    """A model object given to the trainer is a one-output sequence classifier (trl's check, its words)."""
    inner = unwrap(model)
    labels = getattr(getattr(inner, "config", None), "num_labels", None)
    if not isinstance(getattr(inner, "score", None), nn.Module):
        raise ValueError(
            f"{type(inner).__name__} has no scalar `score` head: reward models require `num_labels=1` "
            "(an AutoModelForSequenceClassification); pass the model's path to have it loaded with one"
        )
    if labels != 1:
        raise ValueError(
            f"The model has `num_labels={labels}`, but reward models require `num_labels=1` (one scalar reward per "
            "sequence): pass the model's path to have it loaded with one"
        )


def with_trained_head(peft_config):
    """A LoRA config that trains the ``score`` head as well (``modules_to_save``) and is a sequence classifier's."""
    if peft_config is None:
        return None
    saved = list(getattr(peft_config, "modules_to_save", None) or [])
    if "score" in saved and getattr(peft_config, "task_type", None) == "SEQ_CLS":
        return peft_config
    peft_config = copy.deepcopy(peft_config)
    if "score" not in saved:
        logger.info("reward: LoRA trains the new score head too (modules_to_save += ['score'])")
        peft_config.modules_to_save = [*saved, "score"]
    peft_config.task_type = "SEQ_CLS"
    return peft_config


@torch.no_grad()
def pair_accuracy(trainer, dataset, batch_size: int = 64) -> dict:
    """Share of ``dataset``'s tokenized pairs whose chosen sequence gets the higher reward (ties count half)."""
    model = trainer.model
    was_training = model.training
    model.eval()
    wins, n = 0.0, 0
    try:
        for start in range(0, len(dataset), batch_size):
            rows = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
            batch = {k: v.to(trainer.args.device) for k, v in trainer.data_collator(rows).items()}
            pad, packing = trainer.processing_class.pad_token_id, packing_lib.batch_packing(trainer, batch)
            rewards = sequence_rewards(model, batch["input_ids"], batch["attention_mask"], pad, packing)
            chosen, rejected = rewards.float().chunk(2)
            wins += ((chosen > rejected).float() + 0.5 * (chosen == rejected).float()).sum().item()
            n += len(rows)
    finally:
        model.train(was_training)
    return {"pair_accuracy": wins / max(n, 1), "pairs": n}


def evaluate_after_training(trainer, output_dir) -> dict:
    """The run summary's evaluation (the method's ``after_training`` hook): pair accuracy on each held-out set
    (``eval_dataset``; on the shipped tasks their chosen side is the task oracle's choice), ``{name: {pair_accuracy,
    pairs}}``."""
    out = {}
    datasets = trainer.eval_dataset if isinstance(trainer.eval_dataset, dict) else {"heldout": trainer.eval_dataset}
    for name, dataset in datasets.items():
        if dataset is not None and not is_stream(dataset):
            out[name] = pair_accuracy(trainer, dataset)
            logger.warning("reward model: pair accuracy %.3f on %d %s; as a judge: reward_model:%s",
                           out[name]["pair_accuracy"], out[name]["pairs"], name, output_dir)  # fmt: skip
    return out


@register(
    "reward",
    config=RewardConfig,
    loss=reward_loss,
    paper="Bradley-Terry reward model (Ouyang et al. 2022)",
    arxiv="2203.02155",
    recipe="quickstart/reward.yaml",
    summary="a scalar reward model on preference pairs (Bradley-Terry, trl's RewardTrainer)",
    after_training=evaluate_after_training,
)
class RewardTrainer(AlignmentTrainer):
    console_metrics = ("accuracy", "margin")
    completions = ("chosen", "rejected")
    supports_packing = True
    supports_z_loss = False  # no vocabulary softmax: a scalar head
    supports_stablemax = False
    model_head = "reward"
    vocabulary_softmax = False

    def __init__(self, model, args: RewardConfig | None = None, train_dataset=None, eval_dataset=None,
                 processing_class=None, peft_config=None, **kwargs):  # fmt: skip
        from transformers import set_seed

        args = args or RewardConfig()
        set_seed(args.seed)  # a new head's and the LoRA adapters' initial weights, drawn as trl draws them
        if isinstance(model, nn.Module):
            check_reward_model(model)
        self._total_train_tokens = 0
        super().__init__(model, args, train_dataset, eval_dataset, processing_class,
                         peft_config=with_trained_head(peft_config), **kwargs)  # fmt: skip
        config = unwrap(self.model).config
        config.get_text_config().pad_token_id = self.processing_class.pad_token_id  # the last-token rule, saved

    # ----- data: whole sequences, long rows dropped ----------------------------------------------------------
    def cut_length(self, args) -> int | None:
        return None

    def make_dataset(self, dataset, tokenizer, args, name: str):
        dataset = super().make_dataset(dataset, tokenizer, args, name)
        if dataset is None or args.max_length is None:
            return dataset
        limit = args.max_length

        def fits(row) -> bool:
            prompt = len(row["prompt_ids"])
            return prompt + len(row["chosen_ids"]) <= limit and prompt + len(row["rejected_ids"]) <= limit

        if is_stream(dataset):
            return dataset.filter(fits)
        kept = dataset.filter(fits, desc=f"Filtering {name} dataset > {limit} tokens")
        if len(kept) < len(dataset):
            logger.warning("%s dataset: %d of %d rows dropped: a sequence is longer than max_length (%d)", name,
                           len(dataset) - len(kept), len(dataset), limit)  # fmt: skip
        if not len(kept):
            raise DataError(f"{name} dataset: every row has a sequence longer than max_length ({limit}); raise "
                            "max_length")  # fmt: skip
        return kept

    def make_collator(self, tokenizer, args):
        return PreferenceCollator(tokenizer.pad_token_id, args.pad_to_multiple_of)

    def kernel_path(self) -> str:
        return "none: a scalar head on each sequence's last token (no LM head, no vocabulary softmax)"

    def anchor_summary(self) -> dict[str, str]:
        return {"reference": "none (a reward model)"}

    # ----- the step ------------------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        packing = packing_lib.batch_packing(self, inputs)
        pad = self.processing_class.pad_token_id
        rewards = sequence_rewards(model, inputs["input_ids"], inputs["attention_mask"], pad, packing)
        chosen, rejected = rewards.chunk(2)
        loss, metrics = reward_loss(chosen, rejected, inputs.get("margin"), self.args.center_rewards_coefficient)
        self.record_metrics(mode, inputs, metrics)
        return (loss, rewards) if return_outputs else loss

    @torch.no_grad()
    def record_metrics(self, mode: str, inputs, metrics) -> None:
        """trl's metrics: num_tokens (all processes, cumulative), min / mean / max_reward over every sequence of
        every process, accuracy and margin (means)."""
        if mode == "train":
            self._total_train_tokens += self.accelerator.gather_for_metrics(inputs["attention_mask"].sum()).sum().item()
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        everything = self.accelerator.gather(metrics["rewards"])
        for key, fn in (("min_reward", torch.min), ("mean_reward", torch.mean), ("max_reward", torch.max)):
            self._metrics[mode][key].append(fn(everything).item())
        self.log_step_metrics({"accuracy": metrics["accuracy"], "margin": metrics["margin"]}, mode)
