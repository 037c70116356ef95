"""TRL drop-in compatibility (issue 13 item 5): a TRL user's DPOTrainer code runs unchanged. Our own tests,
not TRL's; the numerical equivalence of every loss type and option is in tests/trainers/test_trl_equivalence.py."""

import logging

import numpy as np
import pytest
import torch
from datasets import Dataset, load_dataset

from alignment.trainers import DPOConfig, DPOTrainer, RPOConfig, SFTConfig
from tests.conftest import DATA

MODEL = str(DATA / "sft_model")


def test_precompute_ref_log_probs_is_an_alias():
    assert DPOConfig(output_dir="x", use_cpu=True, precompute_ref_log_probs=True).precompute_ref_logps
    assert RPOConfig(output_dir="x", use_cpu=True, precompute_ref_log_probs=True).precompute_ref_logps
    ours = DPOConfig(output_dir="x", use_cpu=True, precompute_ref_logps=True)
    assert ours.precompute_ref_logps and ours.precompute_ref_log_probs is None
    assert not DPOConfig(output_dir="x", use_cpu=True).precompute_ref_logps


def test_trl_defaults():
    config = DPOConfig(output_dir="x", use_cpu=True)
    assert config.learning_rate == 1e-6 and config.disable_dropout and config.max_length == 1024
    assert config.pad_to_multiple_of is None and config.precompute_ref_batch_size is None
    assert config.loss_type == "sigmoid" and config.beta == 0.1
    assert SFTConfig(output_dir="x", use_cpu=True).learning_rate == 2e-5


def rows(n=8, fmt="standard"):
    path = DATA / "tasks" / "arithmetic" / f"pref_train_{fmt}.jsonl"
    return load_dataset("json", data_files=str(path), split="train").select(range(n))


def config(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to=[], per_device_train_batch_size=4,
                per_device_eval_batch_size=4, max_steps=1, diagnostics=False, logging_steps=1)  # fmt: skip
    return DPOConfig(**{**base, **kw})


def test_model_init_kwargs_accept_torch_dtypes_and_json(tmp_path):
    trainer = DPOTrainer(MODEL, args=config(tmp_path, model_init_kwargs={"dtype": torch.float16}), train_dataset=rows())
    assert next(trainer.model.parameters()).dtype == torch.float16
    args = config(tmp_path, model_init_kwargs='{"torch_dtype": "bfloat16"}')  # the CLI's form, TRL's older key
    assert next(DPOTrainer(MODEL, args=args, train_dataset=rows()).model.parameters()).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="model_init_kwargs is not valid JSON"):
        config(tmp_path, model_init_kwargs="{dtype")


def test_tags_pad_token_and_dropout(tmp_path, tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=16, n_layer=1, n_head=2, resid_pdrop=0.3))
    assert any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules())
    pad = tokenizer.convert_ids_to_tokens(3)
    trainer = DPOTrainer(model, args=config(tmp_path, pad_token=pad), train_dataset=rows(), processing_class=tokenizer)
    assert all(m.p == 0 for m in trainer.model.modules() if isinstance(m, torch.nn.Dropout))
    assert tokenizer.pad_token == pad and {"alignment", "dpo"} <= set(trainer.model.model_tags)
    assert "trl" not in trainer.model.model_tags  # deliberate (README, "Coming from TRL"): not trained by trl
    kept = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=16, n_layer=1, n_head=2, resid_pdrop=0.3))
    DPOTrainer(kept, args=config(tmp_path, disable_dropout=False), train_dataset=rows(), processing_class=tokenizer)
    assert any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in kept.modules())
    with pytest.raises(ValueError, match="not in the tokenizer's vocabulary"):
        DPOTrainer(MODEL, args=config(tmp_path, pad_token="<no such token>"), train_dataset=rows())


def test_missing_train_dataset_is_refused(tmp_path):
    with pytest.raises(ValueError, match="`train_dataset` is required"):  # TRL's words
        DPOTrainer(MODEL, args=config(tmp_path), train_dataset=None)


def test_evaluate_takes_raw_rows_and_compute_metrics_gets_rewards(tmp_path):
    seen = {}

    def compute_metrics(prediction):
        seen["shape"] = prediction.predictions.shape
        seen["labels"] = prediction.label_ids
        return {"pair_accuracy": float(np.mean(prediction.predictions[:, 0] > prediction.predictions[:, 1]))}

    args = config(tmp_path, max_steps=2, learning_rate=1e-3, per_device_eval_batch_size=6)  # one eval batch
    trainer = DPOTrainer(MODEL, args=args, train_dataset=rows(), compute_metrics=compute_metrics)
    trainer.train()
    raw = rows(6, "conversational")
    metrics = trainer.evaluate(eval_dataset=raw)
    assert np.isfinite(metrics["eval_loss"]) and "eval_rewards/margins" in metrics
    assert seen["shape"] == (6, 2) and list(seen["labels"]) == [0] * 6
    assert metrics["eval_pair_accuracy"] == pytest.approx(metrics["eval_rewards/accuracies"])
    split = trainer.evaluate(eval_dataset={"a": raw, "b": rows(4)})
    assert "eval_a_loss" in split and "eval_b_loss" in split


def test_evaluate_precomputes_the_reference_for_raw_rows(tmp_path):
    trainer = DPOTrainer(MODEL, args=config(tmp_path, precompute_ref_log_probs=True, precompute_ref_batch_size=3),
                         train_dataset=rows())  # fmt: skip
    metrics = trainer.evaluate(eval_dataset=rows(5, "conversational"))
    assert np.isfinite(metrics["eval_loss"]) and len(trainer.ref_cache_files) == 2


def test_options_other_methods_do_not_have_are_refused(tmp_path):
    from alignment.trainers import INPOConfig, INPOTrainer

    with pytest.raises(ValueError, match="ld_alpha is supported by the dpo and rpo methods"):
        INPOTrainer(MODEL, args=INPOConfig(output_dir=str(tmp_path), use_cpu=True, ld_alpha=0.5), train_dataset=rows())


def test_router_aux_loss_coef_on_a_dense_model_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="not a mixture of experts"):
        DPOTrainer(MODEL, args=config(tmp_path, router_aux_loss_coef=0.1), train_dataset=rows())


def test_the_banner_says_checkpoints_differ_from_trl(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="alignment"):
        DPOTrainer(MODEL, args=config(tmp_path), train_dataset=rows())
    assert "TRL saves every 500 steps by default" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="alignment"):
        DPOTrainer(MODEL, args=config(tmp_path, save_steps=50), train_dataset=rows())
    assert "every 50 steps" in caplog.text


def test_train_from_a_dataset_object(tmp_path):
    trainer = DPOTrainer(MODEL, args=config(tmp_path), train_dataset=Dataset.from_list(rows().to_list()))
    assert trainer.train().global_step == 1


def test_activation_offloading_trains_the_same(tmp_path, monkeypatch):
    """TRL's SFTConfig field, in every trainer here (exactness per method: tests/long_context)."""
    from alignment.trainers import base

    entered = []
    original = base.offload_context

    def recording(model, device):
        entered.append(device)
        return original(model, device)

    monkeypatch.setattr(base, "offload_context", recording)

    def train(**kw):
        torch.manual_seed(0)
        trainer = DPOTrainer(MODEL, args=config(tmp_path, learning_rate=1e-3, **kw), train_dataset=rows())
        trainer.train()
        return trainer.state.log_history[0]["loss"], next(trainer.model.parameters()).detach().clone()

    (a, pa) = train()
    assert not entered
    (b, pb) = train(activation_offloading=True)
    assert len(entered) == 1  # one manager for the run, made at its first step
    assert a == pytest.approx(b, rel=1e-6) and torch.allclose(pa, pb, atol=1e-7)


@pytest.mark.parametrize("value, expected", [("auto", None), ("none", None), ("8", 8), (16, 16)])
def test_pad_to_multiple_of_takes_trls_auto(value, expected):
    assert DPOConfig(output_dir="x", use_cpu=True, pad_to_multiple_of=value).pad_to_multiple_of == expected
    with pytest.raises(ValueError, match="pad_to_multiple_of must be"):
        DPOConfig(output_dir="x", use_cpu=True, pad_to_multiple_of="every")


def test_a_local_folder_with_custom_code_loads_with_trust_remote_code(tmp_path):
    """A model folder whose config maps AutoModelForCausalLM to its own modeling file (auto_map) trains with
    trust_remote_code=True, as with TRL; without it, one line says what to set."""
    import json

    from transformers import AutoTokenizer

    from tests.helpers import tiny_llama

    tokenizer = AutoTokenizer.from_pretrained(MODEL)
    folder = tmp_path / "custom"
    tiny_llama(len(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "configuration_toy.py").write_text(
        "from transformers import LlamaConfig\n\n\nclass ToyConfig(LlamaConfig):\n    model_type = 'toy_llama'\n"
    )
    (folder / "modeling_toy.py").write_text(
        "from transformers import LlamaForCausalLM\n\nfrom .configuration_toy import ToyConfig\n\n\n"
        "class ToyForCausalLM(LlamaForCausalLM):\n    config_class = ToyConfig\n"
    )
    model_config = json.loads((folder / "config.json").read_text())
    model_config.update(model_type="toy_llama", architectures=["ToyForCausalLM"],
                        auto_map={"AutoConfig": "configuration_toy.ToyConfig",
                                  "AutoModelForCausalLM": "modeling_toy.ToyForCausalLM"})  # fmt: skip
    (folder / "config.json").write_text(json.dumps(model_config))
    trainer = DPOTrainer(str(folder), args=config(tmp_path, trust_remote_code=True), train_dataset=rows())
    assert type(trainer.model).__name__ == "ToyForCausalLM" and trainer.aux_loss_enabled is False
    trainer.train()
    with pytest.raises(ValueError, match=r"custom code\); set trust_remote_code: true"):  # trl's tests: ValueError
        DPOTrainer(str(folder), args=config(tmp_path), train_dataset=rows())


def test_a_dataset_dict_is_refused_with_trls_words(tmp_path):
    """trl's test file matches TypeError("`train_dataset` must be a `Dataset` or `IterableDataset`"); ours adds
    the split to pass, before any model loads."""
    from datasets import DatasetDict

    from alignment.errors import one_line

    with pytest.raises(TypeError, match="`train_dataset` must be a `Dataset` or `IterableDataset`") as caught:
        DPOTrainer("no/such-model", args=config(tmp_path), train_dataset=DatasetDict({"train": rows()}))
    assert "dataset['train']" in str(caught.value) and one_line(caught.value)
