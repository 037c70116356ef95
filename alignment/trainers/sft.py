"""SFTTrainer: supervised fine-tuning on (prompt, completion) rows, token-mean NLL of the completion
through the fused op's general path (alignment.losses.sft). Used to make the quickstart's starting policy."""

from __future__ import annotations

from datasets import Dataset

from alignment.configs import SFTConfig
from alignment.data import DataFormatError, SFTCollator
from alignment.diagnostics.collapse import collapse_stats
from alignment.losses import sft_loss
from alignment.models import causal_token_logps
from alignment.trainers.base import PreferenceTrainer


def _as_pairs(dataset) -> Dataset:
    """(prompt, completion) rows as pseudo-pairs (completion as both sides) for the shared validator."""
    missing = [c for c in ("prompt", "completion") if c not in dataset.column_names]
    if missing:
        raise DataFormatError(f"an SFT dataset needs prompt and completion columns; missing {missing}")
    return dataset.map(
        lambda r: {"prompt": r["prompt"], "chosen": r["completion"], "rejected": r["completion"]},
        remove_columns=dataset.column_names,
    )


class SFTTrainer(PreferenceTrainer):
    method = "sft"
    paper = "supervised fine-tuning"
    arxiv = "n/a"
    config_class = SFTConfig

    def __init__(self, model, args=None, train_dataset=None, eval_dataset=None, processing_class=None, **kwargs):
        kwargs.pop("ref_model", None)
        super().__init__(model, None, args, train_dataset, eval_dataset, processing_class, **kwargs)
        self.data_collator = SFTCollator(self.processing_class.pad_token_id, self.args.pad_to_multiple_of)

    def make_dataset(self, dataset, tokenizer, args, name):
        """(prompt, completion) rows through the preference pipeline as pseudo-pairs, keeping one side."""
        if dataset is None or {"prompt_ids", "completion_ids"} <= set(dataset.column_names):
            return dataset
        tokens = super().make_dataset(_as_pairs(dataset), tokenizer, args, name)
        return tokens.rename_column("chosen_ids", "completion_ids").remove_columns("rejected_ids")

    def counted_tokens(self, batch):
        return batch["completion_mask"][:, 1:].sum()

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        out = causal_token_logps(
            model,
            inputs["input_ids"],
            inputs["attention_mask"],
            inputs["completion_mask"],
            collapsed=self.args.diagnostics,
            **self.kernel_kwargs(),
        )
        mask = inputs["completion_mask"][:, 1:]
        loss, metrics = sft_loss(out.logps, mask, self.token_scale(num_items_in_batch))
        mode = "train" if self.model.training else "eval"
        values = {"nll_per_token": metrics["nll_per_token"]}
        if self.args.diagnostics:
            stats = collapse_stats(out.collapsed, out.logps.detach(), mask)
            values.update({f"diagnostics/{k}": v for k, v in stats.items()})
        self.log_step_metrics(values, mode)
        return (loss, out) if return_outputs else loss

    def _probe_status(self) -> str:
        return "off: SFT rows have no (chosen, rejected) pairs to probe"

    def active_summary(self):
        summary = super().active_summary()
        summary["kernel path"] = "general (token log-probabilities, recompute in backward)"
        summary["reference"] = "none"
        return summary
