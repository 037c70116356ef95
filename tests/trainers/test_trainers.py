"""Training a tiny model with each trainer: parameters move, references behave, options are honest."""

import copy
import logging

import pytest
import torch

from alignment.data import SFT
from alignment.trainers import DPOConfig, DPOTrainer, RPOConfig, RPOTrainer, SFTConfig, get_method, methods
from tests.helpers import changed, model_for, rel_err, tiny_llama, trainer_kwargs
from tests.helpers import preference_rows as rows
from tests.helpers import train_args as args


@pytest.fixture(scope="module")
def tiny(tokenizer):
    return tiny_llama(len(tokenizer))


#: extra settings per method for the matrix below; every registered method that trains a language model on
#: text rows is trained, with its defaults when it has no entry here, plus the extra variants listed (the
#: regret-loss trainer, whose model reads loss vectors, has its own tests: tests/trainers/test_regret.py)
VARIANTS = {
    "dpo": [{}, {"loss_type": "ipo"}],
    "rpo": [{"eta": 0.5}],
    "cpo": [{}, {"loss_type": "simpo", "cpo_alpha": 0.0}],
}
MATRIX = [
    pytest.param(method, extra, id=method + "".join(f"-{v}" for v in extra.values()))
    for method, registered in methods().items()
    if registered.trainer.needs_tokenizer
    for extra in VARIANTS.get(method, [{}])
]


@pytest.mark.parametrize(("method_name", "extra"), MATRIX)
def test_every_parameter_changes(tiny, tokenizer, data_dir, tmp_path, method_name, extra):
    method = get_method(method_name)
    kind = "sft" if method.trainer.completions == SFT else "pref"  # KTO unpairs preference rows
    model = model_for(method, tiny)
    config = args(method.config, tmp_path, **extra)
    trainer = method.trainer(
        model, args=config, train_dataset=rows(data_dir, kind), processing_class=tokenizer, **trainer_kwargs(method)
    )
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}  # with any module it adds
    trainer.train()
    assert sorted(changed(before, trainer.model)) == sorted(before)
    logged = trainer.state.log_history[0]
    if method_name == "reward":  # a scalar head: trl's reward metrics
        assert {"accuracy", "margin", "min_reward", "mean_reward", "max_reward", "num_tokens"} <= set(logged)
    elif method_name == "kto":  # unpaired: the first batch of the unpaired rows is all desirable (TRL's order)
        assert {"kl", "rewards/chosen", "logps/chosen"} <= set(logged)
    elif kind == "pref":
        for key in (
            "rewards/chosen",
            "rewards/rejected",
            "rewards/accuracies",
            "rewards/margins",
            "logps/chosen",
            "logps/rejected",
            "logps/chosen_per_token",
        ):
            assert key in logged
    else:
        assert logged["nll_per_token"] > 0


def test_the_matrix_covers_the_built_in_methods():
    assert {"sft", "dpo", "rpo"} <= {p.values[0] for p in MATRIX}


def test_model_object_without_reference_uses_a_frozen_copy(tiny, tokenizer, data_dir, tmp_path):
    model = copy.deepcopy(tiny)
    trainer = DPOTrainer(
        model, args=args(DPOConfig, tmp_path), train_dataset=rows(data_dir), processing_class=tokenizer
    )
    assert trainer.ref_mode == "copy"
    trainer.train()
    ref_params = dict(trainer.ref_model.named_parameters())
    for name, value in tiny.named_parameters():
        assert torch.equal(ref_params[name], value)  # the reference stayed where the policy started
    assert abs(trainer.state.log_history[0]["rewards/margins"]) < 1e-5  # first step: policy == reference


@pytest.mark.parametrize("disable", [True, False])
def test_disable_dropout_covers_the_adapters_dropout(tiny, tokenizer, data_dir, tmp_path, disable):
    """As TRL's disable_dropout: set after PEFT wraps the model, so lora_dropout is 0 too (it was left at 0.05)."""
    from peft import LoraConfig

    peft = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.05)
    trainer = DPOTrainer(copy.deepcopy(tiny), args=args(DPOConfig, tmp_path, disable_dropout=disable),
                         train_dataset=rows(data_dir), processing_class=tokenizer, peft_config=peft)  # fmt: skip
    lora = [m for n, m in trainer.model.named_modules() if isinstance(m, torch.nn.Dropout) and "lora_dropout" in n]
    assert lora and all(m.p == (0.0 if disable else 0.05) for m in lora)


def test_peft_reference_is_the_adapter_disabled(tiny, tokenizer, data_dir, tmp_path):
    from peft import LoraConfig

    model = copy.deepcopy(tiny)
    peft = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    trainer = DPOTrainer(
        model,
        args=args(DPOConfig, tmp_path),
        train_dataset=rows(data_dir),
        processing_class=tokenizer,
        peft_config=peft,
    )
    assert trainer.ref_mode == "adapter" and trainer.ref_model is None
    summary = trainer.active_summary()
    assert "LoraConfig r=4" in summary["peft"] and "head frozen" in summary["kernel path"]
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    moved = changed(before, trainer.model)
    assert moved and all("lora_" in n for n in moved)


def test_precomputed_reference_is_cached_and_equal(tiny, tokenizer, data_dir, tmp_path):
    data = rows(data_dir)
    common = dict(max_steps=1, learning_rate=0.0, ref_cache_dir=str(tmp_path / "cache"))
    live = DPOTrainer(
        copy.deepcopy(tiny), args=args(DPOConfig, tmp_path, **common), train_dataset=data, processing_class=tokenizer
    )
    live.train()
    pre = DPOTrainer(
        copy.deepcopy(tiny),
        args=args(DPOConfig, tmp_path, precompute_ref_logps=True, **common),
        train_dataset=data,
        processing_class=tokenizer,
    )
    assert pre.ref_mode == "precomputed (copy)" and len(pre.ref_cache_files) == 1
    cache = tmp_path / "cache"
    files = list(cache.iterdir())
    stamp = files[0].stat().st_mtime_ns
    again = DPOTrainer(
        copy.deepcopy(tiny),
        args=args(DPOConfig, tmp_path, precompute_ref_logps=True, **common),
        train_dataset=data,
        processing_class=tokenizer,
    )
    assert list(cache.iterdir()) == files and files[0].stat().st_mtime_ns == stamp  # read, not recomputed
    assert list(again.train_dataset["ref_chosen_logps"]) == list(pre.train_dataset["ref_chosen_logps"])
    pre.train()
    assert pre.state.log_history[0]["loss"] == pytest.approx(live.state.log_history[0]["loss"], rel=1e-5)
    # another model gets another cache entry
    other = copy.deepcopy(tiny)
    with torch.no_grad():
        other.lm_head.weight.add_(0.01)
    DPOTrainer(
        other,
        args=args(DPOConfig, tmp_path, precompute_ref_logps=True, **common),
        train_dataset=data,
        processing_class=tokenizer,
    )
    assert len(list(cache.iterdir())) == 2


@pytest.mark.parametrize(
    ("trainer_cls", "config_cls", "extra"),
    [(DPOTrainer, DPOConfig, {}), (RPOTrainer, RPOConfig, {"eta": 1.0, "sft_normalization": "token_mean"})],
)
def test_gradient_accumulation_equals_one_big_batch(
    tiny, tokenizer, data_dir, tmp_path, trainer_cls, config_cls, extra
):
    data = rows(data_dir, n=8)
    results = []
    for batch, steps in ((8, 1), (4, 2), (2, 4)):
        model = copy.deepcopy(tiny)
        cfg = args(
            config_cls,
            tmp_path,
            max_steps=1,
            per_device_train_batch_size=batch,
            gradient_accumulation_steps=steps,
            optim="sgd",
            learning_rate=0.5,
            lr_scheduler_type="constant",
            max_grad_norm=0.0,
            **extra,
        )
        trainer_cls(model, args=cfg, train_dataset=data, processing_class=tokenizer).train()
        results.append(dict(model.named_parameters()))
    for other in results[1:]:
        for name, value in results[0].items():
            assert rel_err(other[name].detach(), value.detach()) <= 1e-5, name


def test_unsupported_options_raise(tmp_path):
    with pytest.raises(ValueError, match="loss_type must be one of"):
        DPOConfig(output_dir=str(tmp_path), use_cpu=True, loss_type="kto")
    with pytest.raises(ValueError, match="label_smoothing"):
        DPOConfig(output_dir=str(tmp_path), use_cpu=True, label_smoothing=0.5)
    with pytest.raises(ValueError, match="beta"):
        DPOConfig(output_dir=str(tmp_path), use_cpu=True, beta=0)


def test_wrong_config_class_and_banner(tiny, tokenizer, data_dir, tmp_path, caplog):
    with pytest.raises(TypeError, match="needs a DPOConfig"):
        DPOTrainer(
            copy.deepcopy(tiny),
            args=args(SFTConfig, tmp_path),
            train_dataset=rows(data_dir),
            processing_class=tokenizer,
        )
    with caplog.at_level(logging.WARNING, logger="alignment"):
        RPOTrainer(
            copy.deepcopy(tiny),
            args=args(RPOConfig, tmp_path),
            train_dataset=rows(data_dir),
            processing_class=tokenizer,
        )
    text = caplog.text
    assert "rpo (Provably Mitigating" in text and "arXiv 2405.16436" in text and "pair-fused" in text
    assert "single process" in text and "reference             copy" in text
