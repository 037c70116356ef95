"""CPO / SimPO / AlphaPO and ORPO as trainers: no reference anywhere (no anchor, no reference pass, the
reference options refused), LoRA, diagnostics and the model card like every other method."""

import copy
import json

import pytest

from alignment.trainers import CPOConfig, CPOTrainer, ORPOConfig, ORPOTrainer
from tests.helpers import changed, tiny_llama
from tests.helpers import preference_rows as rows
from tests.helpers import train_args as args

METHODS = {"cpo": (CPOTrainer, CPOConfig), "orpo": (ORPOTrainer, ORPOConfig)}


@pytest.fixture(scope="module")
def tiny(tokenizer):
    return tiny_llama(len(tokenizer))


@pytest.mark.parametrize("method", sorted(METHODS))
def test_no_reference_is_built_or_run(tiny, tokenizer, data_dir, tmp_path, method, monkeypatch):
    import alignment.trainers.anchors.kinds as kinds

    monkeypatch.setattr(kinds, "frozen_copy", lambda model: pytest.fail("a reference-free method copied the policy"))
    trainer_cls, config_cls = METHODS[method]
    trainer = trainer_cls(copy.deepcopy(tiny), args=args(config_cls, tmp_path), train_dataset=rows(data_dir),
                          processing_class=tokenizer)  # fmt: skip
    assert trainer.anchors == {} and trainer.ref_model is None
    assert trainer.active_summary()["reference"] == "none"
    trainer.train()
    assert trainer.state.log_history[0]["nll_loss"] > 0


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize(
    ("option", "message"),
    [
        ({"precompute_ref_logps": True}, "reference-free: precompute_ref_logps"),
        ({"sync_ref_model": True}, "reference-free: sync_ref_model"),
        ({"ld_alpha": 0.5}, "ld_alpha is supported by the dpo and rpo methods"),
    ],
)
def test_reference_options_are_refused(tiny, tokenizer, data_dir, tmp_path, method, option, message):
    trainer_cls, config_cls = METHODS[method]
    with pytest.raises(ValueError, match=message):
        trainer_cls(copy.deepcopy(tiny), args=args(config_cls, tmp_path, **option), train_dataset=rows(data_dir),
                    processing_class=tokenizer)  # fmt: skip


def test_a_ref_model_is_refused(tiny, tokenizer, data_dir, tmp_path):
    with pytest.raises(ValueError, match="cpo is reference-free: it takes no ref_model"):
        CPOTrainer(copy.deepcopy(tiny), ref_model=copy.deepcopy(tiny), args=args(CPOConfig, tmp_path),
                   train_dataset=rows(data_dir), processing_class=tokenizer)  # fmt: skip


def test_config_spellings_and_checks(tmp_path):
    alphapo = CPOConfig(output_dir=str(tmp_path), loss_type="alphapo", alpha=0.25)
    assert (alphapo.loss_type, alphapo.cpo_alpha, alphapo.alpha) == ("simpo", 0.0, 0.25)  # TRL's sugar
    with pytest.raises(ValueError, match="loss_type"):
        CPOConfig(output_dir=str(tmp_path), loss_type="kto_pair")
    with pytest.raises(ValueError, match="cpo_alpha must be >= 0"):
        CPOConfig(output_dir=str(tmp_path), cpo_alpha=-1.0)
    with pytest.raises(ValueError, match="beta must be > 0"):
        ORPOConfig(output_dir=str(tmp_path), beta=0.0)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_lora_trains_only_the_adapters(tiny, tokenizer, data_dir, tmp_path, method):
    from peft import LoraConfig

    trainer_cls, config_cls = METHODS[method]
    peft = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    trainer = trainer_cls(copy.deepcopy(tiny), args=args(config_cls, tmp_path), train_dataset=rows(data_dir),
                          processing_class=tokenizer, peft_config=peft)  # fmt: skip
    assert trainer.active_summary()["reference"] == "none" and "head frozen" in trainer.active_summary()["kernel path"]
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    moved = changed(before, trainer.model)
    assert moved and all("lora_" in n for n in moved)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_diagnostics_and_the_model_card(tiny, tokenizer, data_dir, tmp_path, method):
    trainer_cls, config_cls = METHODS[method]
    config = args(config_cls, tmp_path, diagnostics=True, diagnostics_steps=1, diagnostics_probe_pairs=4)
    trainer = trainer_cls(copy.deepcopy(tiny), args=config, train_dataset=rows(data_dir), processing_class=tokenizer)
    trainer.train()
    trainer.save_model()
    trainer.create_model_card()
    out = tmp_path / "out"
    records = [json.loads(line) for line in (out / "diagnostics.jsonl").read_text().splitlines()]
    assert records and all(r["kind"] == "probe" and "cosine_mean" in r["summary"] for r in records)
    card = (out / "README.md").read_text()
    assert f"- {method}\n" in card.split("---")[1]  # the tags
    assert trainer.method.arxiv in card
    assert "precompute_ref_logps" not in card and "sync_ref_model" not in card  # nothing about a reference
