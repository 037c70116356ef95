"""A model that is already a PeftModel (an SFT LoRA, trained a few steps): its reference is a frozen copy of that
starting adapter, as trl 1.16 makes its ``ref`` adapter (peft >= 0.20), not the base model. Equal to trl's
DPOTrainer on the loss, its metrics and every parameter after a step; the same reference for RPO, SparsePO, KTO
and the precompute path; the banner says which reference runs."""

import copy

import pytest
import torch
from datasets import load_dataset

from alignment.trainers import get_method
from tests.helpers import rel_err, tiny_llama

COMMON = dict(use_cpu=True, bf16=False, report_to=[], per_device_train_batch_size=8, max_steps=1, learning_rate=0.5,
              optim="sgd", lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, logging_steps=1,
              save_strategy="no", seed=0)  # fmt: skip


@pytest.fixture(scope="module")
def sft_adapter(tokenizer, data_dir):
    """A LoRA adapter trained three SGD steps on the chosen answers (non-zero lora_B): the usual SFT -> DPO start."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = get_peft_model(tiny_llama(len(tokenizer)), LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                                                  target_modules=["q_proj", "v_proj"]))  # fmt: skip
    rows = _rows(data_dir)
    texts = [r["prompt"][-1]["content"] + " " + r["chosen"][-1]["content"] for r in rows]
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    for _ in range(3):
        loss = model(**batch, labels=batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert all(p.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)
    return model


def _rows(data_dir):
    path = data_dir / "tasks" / "arithmetic" / "pref_train_conversational.jsonl"
    return load_dataset("json", data_files=str(path), split="train").select(range(8))


def _trl(model, tokenizer, rows, tmp_path):
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(output_dir=str(tmp_path / "trl"), beta=0.2, max_length=None, gradient_checkpointing=False,
                     **{**COMMON, "max_steps": 2})  # fmt: skip
    trainer = DPOTrainer(model=model, args=args, train_dataset=rows, processing_class=tokenizer)
    assert "ref" in trainer.model.peft_config  # trl's frozen copy of the starting adapter
    trainer.train()
    return trainer.state.log_history[:2], {n.replace(".default.", "."): p for n, p in model.named_parameters()
                                          if ".ref." not in n}  # fmt: skip


def _ours(method, model, tokenizer, rows, tmp_path, **extra):
    registered = get_method(method)
    args = registered.config(output_dir=str(tmp_path / method), beta=0.2, max_length=None, diagnostics=False,
                             **{**COMMON, **extra})  # fmt: skip
    trainer = registered.trainer(model, args=args, train_dataset=rows, processing_class=tokenizer)
    return trainer


def test_dpo_from_a_trained_adapter_equals_trl(sft_adapter, tokenizer, data_dir, tmp_path):
    rows = _rows(data_dir)
    t_logs, t_params = _trl(copy.deepcopy(sft_adapter), tokenizer, rows, tmp_path)
    trainer = _ours("dpo", copy.deepcopy(sft_adapter), tokenizer, rows, tmp_path, max_steps=2)
    assert trainer.active_summary()["reference"] == "adapter state: a frozen copy of the model's starting adapter"
    trainer.train()
    for step, (t_log, o_log) in enumerate(zip(t_logs, trainer.state.log_history[:2], strict=True)):
        keys = ["loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected"]
        if step:  # at the first step every margin is 0 up to rounding: its accuracy (margin > 0) is float noise
            keys.append("rewards/accuracies")
        for key in keys:  # the second step's rewards are against a reference that stayed where it started
            assert o_log[key] == pytest.approx(t_log[key], rel=1e-5, abs=1e-6), key
    assert abs(t_logs[1]["rewards/margins"]) > 1e-4  # the policy moved away from its reference
    o_params = {n.replace(".default.", "."): p for n, p in trainer.model.named_parameters()}
    for name, value in t_params.items():
        assert rel_err(o_params[name].detach(), value.detach()) <= 1e-5, name


@pytest.mark.parametrize(
    ("method", "extra"),
    [("rpo", {}), ("sparsepo", {"mask_dropout": 0.0}), ("kto", {}), ("dpo", {"precompute_ref_logps": True})],
)
def test_every_trainer_with_a_reference_uses_the_starting_adapter(sft_adapter, tokenizer, data_dir, tmp_path, method,
                                                                  extra):  # fmt: skip
    rows = _rows(data_dir)  # KTO unpairs them
    trainer = _ours(method, copy.deepcopy(sft_adapter), tokenizer, rows, tmp_path, **extra)
    assert trainer.anchors["ref"].kind == "adapter state" and "starting adapter" in trainer.ref_mode
    trainer.train()
    first = trainer.state.log_history[0]
    chosen = next(v for k, v in first.items() if k.startswith("rewards/chosen"))
    assert chosen == pytest.approx(0.0, abs=1e-5), first  # the policy at step 1 is its own reference


def test_kto_from_a_trained_adapter_equals_trl(sft_adapter, tokenizer, data_dir, tmp_path):
    """trl 1.16's KTOTrainer makes the same ``ref`` adapter: two steps from the SFT adapter, equal."""
    from trl import KTOConfig, KTOTrainer

    rows = _rows(data_dir)  # paired rows: both trainers unpair them
    options = dict(output_dir=str(tmp_path / "trl-kto"), beta=0.2, **{**COMMON, "max_steps": 2})
    theirs = KTOTrainer(model=copy.deepcopy(sft_adapter), args=KTOConfig(**options), train_dataset=rows,
                        processing_class=tokenizer)  # fmt: skip
    assert "ref" in theirs.model.peft_config
    theirs.train()
    ours = _ours("kto", copy.deepcopy(sft_adapter), tokenizer, rows, tmp_path, max_steps=2)
    ours.train()
    second_t, second_o = theirs.state.log_history[1], ours.state.log_history[1]
    keys = [k for k in ("loss", "kl", "rewards/chosen", "rewards/rejected", "logps/chosen", "logps/rejected")
            if k in second_t]  # fmt: skip
    assert {"loss", "kl", "rewards/rejected"} <= set(keys) and second_t["kl"] > 0  # the policy left its reference
    for key in keys:
        assert second_o[key] == pytest.approx(second_t[key], rel=1e-5, abs=1e-6), key
    t_params = {n.replace(".default.", "."): p for n, p in theirs.model.named_parameters() if ".ref." not in n}
    o_params = {n.replace(".default.", "."): p for n, p in ours.model.named_parameters()}
    for name, value in t_params.items():
        assert rel_err(o_params[name].detach(), value.detach()) <= 1e-5, name


def test_under_zero3_the_starting_adapter_reference_is_refused_before_any_step(sft_adapter, tokenizer, data_dir,
                                                                              tmp_path):  # fmt: skip
    """ZeRO-3 partitions the adapter's weights, which the reference's pass swaps in: refused at setup, naming the
    ways that work (a real ZeRO-3 launch reaches the same check: prepare_anchors runs in the trainer's __init__)."""
    from unittest import mock

    trainer = _ours("dpo", copy.deepcopy(sft_adapter), tokenizer, _rows(data_dir), tmp_path)
    trainer.is_deepspeed_enabled = True
    refused = pytest.raises(NotImplementedError, match=r"anchor 'ref' is an adapter's saved weights .* ZeRO-2")
    with mock.patch.object(type(trainer), "_zero_stage", lambda self: "3"), refused:
        trainer.prepare_anchors()
