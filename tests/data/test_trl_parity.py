"""Our tokenization and collation equal trl 1.16 DPOTrainer's, on the shipped data and tokenizer."""

import copy

import pytest
import torch

from alignment.data import PreferenceCollator, load_preference_dataset, tokenize_preference_dataset
from tests.helpers import tiny_llama


@pytest.fixture(scope="module")
def tiny_model(tokenizer):
    return tiny_llama(len(tokenizer), hidden=16, layers=1, heads=2)


def trl_prepare(model, tokenizer, dataset, max_length, tmp_path, truncation_mode="keep_start"):
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(
        output_dir=str(tmp_path),
        use_cpu=True,
        bf16=False,
        report_to=[],
        max_length=max_length,
        truncation_mode=truncation_mode,
    )
    # trl 1.16 cannot build its reference model from a model object (ref_model=None fails): pass a copy
    trainer = DPOTrainer(
        model=model,
        ref_model=copy.deepcopy(model),
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    return trainer.train_dataset, trainer.data_collator


@pytest.mark.parametrize("task", ["arithmetic", "sentiment", "rps"])
@pytest.mark.parametrize("fmt", ["standard", "conversational"])
def test_token_ids_equal_trl(tokenizer, tiny_model, data_dir, tmp_path, task, fmt):
    path = data_dir / "tasks" / task / f"pref_eval_{fmt}.jsonl"
    ours, report = tokenize_preference_dataset(load_preference_dataset(path)[0], tokenizer, max_length=None)
    assert report.truncated == report.dropped == 0
    from datasets import load_dataset

    raw = load_dataset("json", data_files=str(path), split="train")
    theirs, collate = trl_prepare(tiny_model, tokenizer, raw, max_length=None, tmp_path=tmp_path)
    assert len(ours) == len(theirs) == len(raw)
    for key in ("prompt_ids", "chosen_ids", "rejected_ids"):
        assert ours[key] == theirs[key], key
    rows = list(range(0, 64, 3))
    mine = PreferenceCollator(tokenizer.pad_token_id)([ours[i] for i in rows])
    trl_batch = collate([theirs[i] for i in rows])
    for key in ("input_ids", "attention_mask", "completion_mask"):
        assert torch.equal(mine[key], trl_batch[key]), key


@pytest.mark.parametrize("fmt", ["standard", "conversational"])
def test_keep_start_truncation_equals_trl(tokenizer, tiny_model, data_dir, tmp_path, fmt):
    from datasets import load_dataset

    path = data_dir / "tasks" / "sentiment" / f"pref_eval_{fmt}.jsonl"
    max_length = 20  # sentiment rows are 8-30 tokens: many are cut
    ours, report = tokenize_preference_dataset(load_preference_dataset(path)[0], tokenizer, max_length=max_length)
    raw = load_dataset("json", data_files=str(path), split="train")
    theirs, collate = trl_prepare(tiny_model, tokenizer, raw, max_length, tmp_path)
    assert report.truncated > 100 and len(ours) == len(theirs)
    for start in range(0, 96, 16):
        rows = range(start, start + 16)
        mine = PreferenceCollator(tokenizer.pad_token_id, pad_to_multiple_of=8)([ours[i] for i in rows])
        trl_collate = copy.copy(collate)
        trl_collate.pad_to_multiple_of = 8
        trl_batch = trl_collate([theirs[i] for i in rows])
        for key in ("input_ids", "attention_mask", "completion_mask"):
            assert torch.equal(mine[key], trl_batch[key]), key
