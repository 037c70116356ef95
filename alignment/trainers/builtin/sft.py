"""SFT: supervised fine-tuning on (prompt, completion) rows, token-mean NLL of the completion through the
fused op's general path (alignment.losses.sft). Used to make the quickstart's starting policy. The method's
config, trainer and registration."""

from __future__ import annotations

from dataclasses import dataclass, field

from alignment.configs import AlignmentConfig
from alignment.data import SFT, SFTCollator
from alignment.heads import causal_token_logps
from alignment.losses.sft import sft_loss
from alignment.losses.z_loss import z_loss
from alignment.trainers import packing as packing_lib
from alignment.trainers.base import AlignmentTrainer
from alignment.trainers.registry import register


@dataclass
class SFTConfig(AlignmentConfig):
    """Supervised fine-tuning: token-mean NLL of the completion, prompt masked."""

    completion_only_loss: bool = field(default=True, metadata={"help": "Mask the prompt out of the loss."})
    learning_rate: float = field(default=2e-5, metadata={"help": "The initial learning rate (TRL's SFT default)."})


@register(
    "sft",
    config=SFTConfig,
    loss=sft_loss,
    paper="supervised fine-tuning",
    recipe="quickstart/sft.yaml",
    summary="supervised fine-tuning on (prompt, completion) rows",
)
class SFTTrainer(AlignmentTrainer):
    console_metrics = ("nll_per_token",)
    completions = SFT
    supports_packing = True

    def make_collator(self, tokenizer, args):
        return SFTCollator(tokenizer.pad_token_id, args.pad_to_multiple_of)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        out = causal_token_logps(
            model,
            inputs["input_ids"],
            inputs["attention_mask"],
            inputs["completion_mask"],
            packing=packing_lib.batch_packing(self, inputs),
            collapsed=self.args.diagnostics,
            **self.kernel_kwargs(),
        )
        mask = inputs["completion_mask"][:, 1:]
        scale = self.token_scale(num_items_in_batch)
        loss, metrics = sft_loss(out.logps, mask, scale)
        mode = "train" if self.model.training else "eval"
        values = {"nll_per_token": metrics["nll_per_token"]}
        if self.args.z_loss:  # PaLM's z-loss on the completion tokens, same normalization as the NLL
            loss = loss + z_loss(out.lse, self.args.z_loss, mask.sum() if scale is None else scale, mask)
            values["z_loss/lse_squared"] = ((out.lse.detach() ** 2) * mask).sum() / mask.sum().clamp(min=1)
        values.update(self.collapse_metrics(out.collapsed, out.logps.detach(), mask))
        self.log_step_metrics(values, mode)
        return (loss, out) if return_outputs else loss
