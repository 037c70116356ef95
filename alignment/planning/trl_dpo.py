"""trl 1.16's DPOTrainer around the same fake model and batch, for the planner's comparison (``trainer="trl"``):
its own trainer, collator, fused LM head (trl/kernels/chunked_logprob.py) and optimizer, with the recipe's DPO
settings mapped onto a trl DPOConfig. Its reference is the adapter-disabled model under PEFT, a fake copy
otherwise; with ``precompute_ref_logps`` the step reads reference columns and trl holds no copy (trl frees it
after its precompute, as we do)."""

from __future__ import annotations

import tempfile
from unittest import mock

import torch

from alignment.planning.fake import checkpointing, fake_model, model_dtype, planning_tokenizer

SHARED = ("beta", "learning_rate", "weight_decay", "optim", "bf16", "fp16", "max_grad_norm", "adam_beta1",
          "adam_beta2", "adam_epsilon", "label_smoothing", "seed")  # fmt: skip


def build_trl(cfg, model_args, config, rows: list[dict], model, fake: bool = True):
    """(trainer, inputs): trl's DPOTrainer training ``model`` on a batch collated from ``rows`` (token ids)."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    precompute = bool(getattr(config, "precompute_ref_logps", False))
    peft = model_args.peft_config()
    # trl precomputes in its constructor: it is given a reference and no precompute, and both are set after
    ref = None if peft is not None else fake_model(cfg, model_dtype(model_args), fake)
    loss_type = getattr(config, "loss_type", "sigmoid")
    args = DPOConfig(output_dir=tempfile.mkdtemp(prefix="alignment-plan-trl-"), report_to=[], use_cpu=True,
                     per_device_train_batch_size=len(rows), max_length=config.max_length,
                     loss_type=[loss_type] if isinstance(loss_type, str) else loss_type,
                     activation_checkpointing=True,  # trl's default (gradient_checkpointing=True) by its new name
                     **{k: getattr(config, k) for k in SHARED if hasattr(config, k)})  # fmt: skip
    data = Dataset.from_list([{"prompt": "a", "chosen": " b", "rejected": " c"}] * 2)  # the batch comes from rows
    from accelerate import Accelerator

    keep = mock.patch.object(Accelerator, "prepare_model", lambda self, model, *a, **k: model)  # not moved
    unhashed = mock.patch("trl.trainer.dpo_trainer.hash_module", lambda module: "planned")  # reads the weights
    with mock.patch.object(type(args), "place_model_on_device", property(lambda self: not fake)), keep, unhashed:
        trainer = DPOTrainer(model=model, ref_model=ref, args=args, train_dataset=data,
                             processing_class=planning_tokenizer(), peft_config=peft)  # fmt: skip
    if config.activation_checkpointing or config.gradient_checkpointing:
        checkpointing(trainer.model)
    trainer.create_optimizer()
    inputs = trainer.data_collator(rows)
    if precompute:  # trl's step then reads the reference's columns and runs no reference pass
        trainer.precompute_ref_logps, trainer.ref_model = True, None
        inputs["ref_chosen_logps"] = inputs["ref_rejected_logps"] = torch.zeros(len(rows))
    return trainer, inputs


def trl_anchor_models(trainer) -> list:
    return [trainer.ref_model] if getattr(trainer, "ref_model", None) is not None else []
