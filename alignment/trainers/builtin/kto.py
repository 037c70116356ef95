"""KTO (Ethayarajh et al. 2024, arXiv 2402.01306) and the unpaired APO-zero (arXiv 2408.06266) on unpaired rows
(prompt, completion, label), with trl 1.16's KTOConfig fields and defaults; paired rows are unpaired as TRL does
(``trl.data_utils.unpair_preference_dataset``). The method's config, trainer and registration; the loss is
alignment.losses.kto.

On the fused op: each row's sequence and its KL sequence (the row's prompt with the previous row's completion,
rotated within each block of ``per_device_train_batch_size`` rows as TRL forms them) travel as one pair of the
pair-fused path, [sequences; KL sequences], so the reference, its precompute and cache, PEFT, padding-free
batches, DDP and ZeRO-3 are the preference trainers'. The KL sequences' log-probabilities are detached (as
TRL's no-grad pass); under ``apo_zero_unpaired`` (no KL term) their completions are empty.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from alignment.configs import PreferenceConfig, choice
from alignment.data import PreferenceCollator
from alignment.data.formats import UNPAIRED
from alignment.data.loading import validate_dataset
from alignment.data.tokenize import tokenize_preference_dataset, tokenize_stream, truncate_row
from alignment.losses.kto import KTO_LOSS_TYPES, kto_loss, kto_loss_types_help, reference_point
from alignment.trainers.base import check_stream, is_stream
from alignment.trainers.preference import PreferenceTrainer
from alignment.trainers.registry import register

logger = logging.getLogger(__name__)
TOKENIZED = {"prompt_ids", "chosen_ids", "rejected_ids", "label"}


@dataclass
class KTOConfig(PreferenceConfig):
    """KTO (README, "KTO"): trl 1.16's KTOConfig fields and defaults."""

    beta: float = field(default=0.1, metadata={"help": "KL strength beta (the deviation from the reference)."})
    loss_type: str = field(default="kto", metadata={"help": f"The loss. {kto_loss_types_help()}."})
    desirable_weight: float = field(default=1.0, metadata={"help": "Weight w_d of the desirable rows' losses."})
    undesirable_weight: float = field(default=1.0, metadata={"help": "Weight w_u of the undesirable rows' losses."})
    train_sampling_strategy: str = field(
        default="sequential",
        metadata={
            "help": "The training sampler; kto needs sequential (each KL completion comes from a neighbouring row "
            "of the same batch)."
        },
    )

    @property
    def calculate_kl(self) -> bool:
        return self.loss_type == "kto"

    @property
    def whole_batch_loss(self) -> bool:
        """The KL reference point is a mean over the whole batch: the op evaluates it at once (tile by tile)."""
        return self.calculate_kl

    def __post_init__(self):
        choice("loss_type", self.loss_type, tuple(KTO_LOSS_TYPES))
        if not self.beta > 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")
        if self.desirable_weight < 0 or self.undesirable_weight < 0:
            raise ValueError("desirable_weight and undesirable_weight must be >= 0")
        if self.calculate_kl and self.train_sampling_strategy != "sequential":
            raise ValueError(
                f"loss_type 'kto' estimates its KL term from neighbouring rows of a batch and needs "
                f"train_sampling_strategy 'sequential', got {self.train_sampling_strategy!r}"
            )
        if self.calculate_kl and self.per_device_train_batch_size <= 1:
            raise ValueError("loss_type 'kto' needs per_device_train_batch_size > 1 (its KL term pairs rows)")
        super().__post_init__()


@dataclass
class UnpairedCollator(PreferenceCollator):
    """KTO's rows -> the [sequences; KL sequences] batch of PreferenceCollator, plus ``label`` [B] (bool)."""

    def __call__(self, rows):
        batch = super().__call__(rows)
        batch["label"] = torch.tensor([bool(row["label"]) for row in rows])
        return batch


@register(
    "kto",
    config=KTOConfig,
    loss=kto_loss,
    paper="KTO: Model Alignment as Prospect Theoretic Optimization (Ethayarajh et al. 2024)",
    arxiv="2402.01306",
    anchors=("ref",),
    recipe="quickstart/kto.yaml",
    summary="KTO on unpaired (prompt, completion, label) rows, paired rows unpaired as TRL does; APO-zero",
)
class KTOTrainer(PreferenceTrainer):
    trl_tokenization = "shared"  # trl 1.16's KTOTrainer: the shared prompt, keep_start
    console_metrics = ("kl", "rewards/chosen", "rewards/rejected")
    completions = UNPAIRED  # recipes' sources: unpaired rows, or preference rows that the trainer unpairs

    # ----- data ------------------------------------------------------------------------------------------
    def make_dataset(self, dataset, tokenizer, args, name: str):
        """Unpaired (or paired, then unpaired) rows - a ``datasets.Dataset`` or a list of dicts - -> prompt_ids,
        chosen_ids (the completion), rejected_ids (the KL completion), label; validated with errors naming the
        row and field."""
        if dataset is None:
            return None
        if is_stream(dataset):
            check_stream(args, name)
            return self._unpaired_rows(self._stream(dataset, tokenizer, args, name), args, name)
        columns = set(dataset.column_names if hasattr(dataset, "column_names") else (dataset[0] if dataset else ()))
        if columns >= TOKENIZED:
            return dataset
        dataset, report = validate_dataset(dataset, f"{name} dataset", completions=UNPAIRED)
        logger.info("%s", report)
        if {"chosen", "rejected"} <= columns:  # paired rows, unpaired as TRL does
            from trl.data_utils import unpair_preference_dataset

            dataset = dataset.remove_columns([c for c in dataset.column_names if c.endswith("_logps")])
            dataset = unpair_preference_dataset(dataset)
        dataset, _ = tokenize_preference_dataset(dataset, tokenizer, None, "keep_start", args.chat_template,
                                                 args.dataset_num_proc, name, keep_columns=("label",))  # fmt: skip
        return self._unpaired_rows(dataset, args, name)

    def _stream(self, dataset, tokenizer, args, name: str):
        """A streamed dataset, validated and tokenized as it streams (paired rows unpaired first)."""
        from alignment.data.formats import PREFERENCE, SFT
        from alignment.data.tokenize import validated_stream

        first = next(iter(dataset), None) or {}
        if {"chosen", "rejected"} <= set(first):
            from trl.data_utils import unpair_preference_dataset

            dataset, _ = validated_stream(dataset, name, PREFERENCE)
            dataset = unpair_preference_dataset(dataset.remove_columns([k for k in first if k.endswith("_logps")]))
        return tokenize_stream(dataset, tokenizer, name, SFT, None, "keep_start", args.chat_template, labeled=True)

    def _unpaired_rows(self, dataset, args, name: str):
        max_length = args.max_length
        if max_length is not None:  # a prompt alone filling max_length leaves no completion (TRL drops it too)
            dataset = dataset.filter(lambda row: len(row["prompt_ids"]) < max_length)
            if not is_stream(dataset) and len(dataset) == 0:
                raise ValueError(f"{name} dataset: every prompt has max_length ({max_length}) tokens or more")

        def rotate(rows):  # (x_1, y_n), (x_2, y_1), ... within each block of the batch size, as TRL
            completions = rows["completion_ids"]
            rows["kl_ids"] = [completions[-1], *completions[:-1]] if args.calculate_kl else [[] for _ in completions]
            return rows

        dataset = dataset.map(rotate, batched=True, batch_size=args.per_device_train_batch_size)

        def truncate(row):
            ids = {"prompt_ids": row["prompt_ids"], "chosen_ids": row["completion_ids"], "rejected_ids": row["kl_ids"]}
            ids, _ = truncate_row(ids, max_length, "keep_start")
            return ids

        dataset = dataset.map(truncate, remove_columns=["completion_ids", "kl_ids"])
        if not is_stream(dataset):
            self.data_reports[name] = f"{name}: {len(dataset)} unpaired rows ({sum(dataset['label'])} desirable)"
        return dataset

    def make_collator(self, tokenizer, args):
        return UnpairedCollator(tokenizer.pad_token_id, args.pad_to_multiple_of)

    def probe_dataset(self):
        return None  # the probes compare a chosen and a rejected response of one prompt: KTO rows have none

    # ----- the step --------------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs["label"].bool()
        local = torch.stack([labels.sum(), torch.tensor(labels.numel(), device=labels.device)]).float()
        total = self.accelerator.gather(local.reshape(1, 2)).sum(dim=0).tolist()  # one small collective
        self._labels, self._counts = labels, (total[0], total[1] - total[0], total[1])
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    def pair_losses(self, chunk, anchors, token_scale):
        args, ref = self.args, anchors["ref"]
        kl = torch.zeros((), dtype=chunk.chosen_logps.dtype, device=chunk.chosen_logps.device)
        if args.calculate_kl:  # the whole batch is one chunk (whole_batch_loss): the mean over all its rows
            z = reference_point(chunk.rejected_logps, ref.rejected).reshape(1)
            kl = self.accelerator.gather(z).mean().clamp(min=0)
        return kto_loss(
            chunk.chosen_logps,
            ref.chosen,
            self._labels[chunk.pair_index],
            kl,
            beta=args.beta,
            loss_type=args.loss_type,
            desirable_weight=args.desirable_weight,
            undesirable_weight=args.undesirable_weight,
            counts=self._counts,
        )

    def _record(self, out, comp, seq_logps, tokens=None) -> None:
        """The loss's metrics (TRL's names) and the collapse fractions; no per-pair log-probabilities (the
        second half of the batch is the KL sequences, not rejected responses)."""
        mode = "train" if self.model.training else "eval"
        values = dict(out.metrics)
        values.update(self.collapse_metrics(out.collapsed, out.token_logps, comp))
        self.log_step_metrics(values, mode)
