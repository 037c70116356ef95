"""Streaming datasets (``datasets.IterableDataset``, as TRL accepts them): tokenized on the fly, the same
batches and the same step as the map-style path on the same rows in the same order, for every trainer of token
sequences; ``max_steps`` required, precompute refused, a bad row named when it streams past."""

import copy

import pytest
import torch
from datasets import Dataset, IterableDataset

from alignment.data.errors import DataFormatError
from alignment.trainers import get_method
from tests.helpers import preference_rows, rel_err, tiny_llama

COMMON = dict(use_cpu=True, bf16=False, report_to=[], per_device_train_batch_size=4, max_steps=2, learning_rate=0.5,
              optim="sgd", lr_scheduler_type="constant", logging_steps=1, save_strategy="no", seed=0,
              diagnostics=False, train_sampling_strategy="sequential")  # fmt: skip


def stream(rows: Dataset) -> IterableDataset:
    listed = rows.to_list()
    return IterableDataset.from_generator(lambda: iter(listed))


def rows_for(method, data_dir):
    if method == "sft":
        return preference_rows(data_dir, kind="sft", n=8)
    return preference_rows(data_dir, n=8)


@pytest.fixture(scope="module")
def tiny(tokenizer):
    return tiny_llama(len(tokenizer))


@pytest.mark.parametrize("method", ["dpo", "rpo", "cpo", "orpo", "sparsepo", "inpo", "kto", "sft"])
def test_a_stream_trains_as_the_same_rows_in_order(tiny, tokenizer, data_dir, tmp_path, method):
    registered = get_method(method)
    extra = {"sparsepo": {"mask_dropout": 0.0}, "inpo": {"precompute_ref_logps": False}}.get(method, {})
    results = []
    for name, data in (("map", rows_for(method, data_dir)), ("stream", stream(rows_for(method, data_dir)))):
        model = copy.deepcopy(tiny)
        args = registered.config(output_dir=str(tmp_path / name), **COMMON, **extra)
        trainer = registered.trainer(model, args=args, train_dataset=data, processing_class=tokenizer)
        batch = next(iter(trainer.get_train_dataloader()))
        trainer.train()
        results.append((batch, trainer.state.log_history[0]["loss"], dict(trainer.model.named_parameters())))
    (batch_a, loss_a, params_a), (batch_b, loss_b, params_b) = results
    for key in ("input_ids", "attention_mask", "completion_mask"):
        assert torch.equal(batch_a[key], batch_b[key]), key
    assert loss_b == pytest.approx(loss_a, rel=1e-6)
    for name, value in params_a.items():
        assert rel_err(params_b[name].detach(), value.detach()) <= 1e-6, name


def test_streamed_eval_datasets(tiny, tokenizer, data_dir, tmp_path):
    dpo = get_method("dpo")
    args = dpo.config(output_dir=str(tmp_path), **COMMON)
    trainer = dpo.trainer(copy.deepcopy(tiny), args=args, train_dataset=stream(preference_rows(data_dir, n=8)),
                          eval_dataset={"a": stream(preference_rows(data_dir, n=4, split="eval"))},
                          processing_class=tokenizer)  # fmt: skip
    assert "eval_a_loss" in trainer.evaluate()
    assert "eval_loss" in trainer.evaluate(stream(preference_rows(data_dir, n=4, split="eval")))


def test_what_a_stream_needs(tiny, tokenizer, data_dir, tmp_path):
    dpo = get_method("dpo")
    data = stream(preference_rows(data_dir, n=8))
    with pytest.raises(ValueError, match=r"has no length: set max_steps"):
        dpo.trainer(copy.deepcopy(tiny), args=dpo.config(output_dir=str(tmp_path), **{**COMMON, "max_steps": -1}),
                    train_dataset=data, processing_class=tokenizer)  # fmt: skip
    trl_words = r"`precompute_ref_log_probs=True` is not supported with IterableDataset"  # trl's tests match it
    rows = preference_rows(data_dir, n=8)
    for train, evaluation in ((data, None), (rows, stream(rows)), (rows, {"a": rows, "b": stream(rows)})):
        with pytest.raises(ValueError, match=trl_words + r".*cannot be precomputed: set precompute_ref_logps: false"):
            dpo.trainer(copy.deepcopy(tiny), args=dpo.config(output_dir=str(tmp_path), precompute_ref_logps=True,
                                                             **COMMON),
                        train_dataset=train, eval_dataset=evaluation, processing_class=tokenizer)  # fmt: skip


def test_a_bad_row_is_named_when_it_streams_past(tiny, tokenizer, data_dir, tmp_path):
    listed = preference_rows(data_dir, n=8).to_list()
    listed[5]["chosen"] = [{"role": "assistant"}]  # no content
    data = IterableDataset.from_generator(lambda: iter(listed))
    dpo = get_method("dpo")
    trainer = dpo.trainer(copy.deepcopy(tiny), args=dpo.config(output_dir=str(tmp_path), **COMMON),
                          train_dataset=data, processing_class=tokenizer)  # fmt: skip
    with pytest.raises(DataFormatError, match=r"train dataset, row 6, field 'chosen\[0\]': message has no 'content'"):
        trainer.train()


def test_a_stream_whose_rows_are_all_dropped_is_refused_naming_them(tiny, tokenizer, data_dir, tmp_path):
    """Each prompt fills max_length: the map-style path names the dropped rows; the stream does too, at once
    (accelerate's "Batch does not contain any data" was the message)."""
    from alignment.data.errors import DataError

    dpo = get_method("dpo")
    args = dpo.config(output_dir=str(tmp_path), **{**COMMON, "max_length": 4})
    with pytest.raises(DataError, match=r"every one of its 8 rows was dropped \(rows 1, 2, 3, 4, 5, \.\.\.\)"):
        dpo.trainer(copy.deepcopy(tiny), args=args, train_dataset=stream(preference_rows(data_dir, n=8)),
                    processing_class=tokenizer)  # fmt: skip
