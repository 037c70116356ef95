"""Named anchors: ref and prev from a model, a frozen copy, the adapter (off or a saved state) or data
columns; per-token values; precomputed once and cached per anchor; the same loss either way."""

import copy
import logging

import pytest
import torch
from peft import LoraConfig

from alignment.trainers.anchors import adapter_snapshot, adapter_swapped
from alignment.trainers.registry import unregister
from tests.helpers import preference_rows, register_two_anchor_method, tiny_llama, train_args

METHOD = None  # the registered two-anchor method, set by the fixture below


@pytest.fixture(scope="module", autouse=True)
def method():
    """The two-anchor test method, registered for this module only."""
    global METHOD
    METHOD = register_two_anchor_method()
    yield METHOD
    unregister("two_anchor")


@pytest.fixture(scope="module")
def tiny(tokenizer):
    return tiny_llama(len(tokenizer))


def other_policy(model, scale=0.5):
    prev = copy.deepcopy(model)
    with torch.no_grad():
        prev.lm_head.weight.mul_(scale)
    return prev


def make(tiny, tokenizer, data_dir, tmp_path, anchors=None, peft=None, data=None, trainer_cls=None, **kw):
    cfg = train_args(METHOD.config, tmp_path, **{"max_steps": 1, "learning_rate": 0.0, **kw})
    cls = trainer_cls or METHOD.trainer
    return cls(
        copy.deepcopy(tiny), args=cfg, train_dataset=data if data is not None else preference_rows(data_dir),
        processing_class=tokenizer, anchors=anchors, peft_config=peft,
    )  # fmt: skip


def first_log(trainer):
    trainer.train()
    return trainer.state.log_history[0]


def test_defaults_share_one_frozen_copy_and_the_banner_names_each_anchor(tiny, tokenizer, data_dir, tmp_path):
    trainer = make(tiny, tokenizer, data_dir, tmp_path)
    assert {n: a.kind for n, a in trainer.anchors.items()} == {"ref": "copy", "prev": "copy"}
    assert trainer.anchors["ref"].model is trainer.anchors["prev"].model  # one copy of the starting policy
    summary = trainer.active_summary()
    assert summary["reference"] == "copy" and summary["anchor prev"] == "copy"
    logged = first_log(trainer)
    assert logged["anchors/ref_chosen"] == pytest.approx(logged["logps/chosen"], rel=1e-6)
    # the per-token values sum to the sequence values
    assert logged["anchors/ref_token_gap"] < 1e-4 and logged["anchors/prev_token_gap"] < 1e-4


def test_a_prev_model_is_used_and_equals_its_precomputed_columns(tiny, tokenizer, data_dir, tmp_path, caplog):
    prev = other_policy(tiny)
    live = make(tiny, tokenizer, data_dir, tmp_path / "live", anchors={"prev": prev})
    assert live.anchors["prev"].kind == "model" and live.anchors["ref"].kind == "copy"
    live_log = first_log(live)
    assert abs(live_log["anchors/prev_chosen"] - live_log["anchors/ref_chosen"]) > 1e-3  # a different policy
    cache = tmp_path / "cache"
    pre = make(
        tiny, tokenizer, data_dir, tmp_path / "pre", anchors={"prev": prev},
        precompute_ref_logps=True, ref_cache_dir=str(cache),
    )  # fmt: skip
    assert len(pre.ref_cache_files) == 2 and len(list(cache.iterdir())) == 2  # one file per anchor
    columns = set(pre.train_dataset.column_names)
    for name in ("ref", "prev"):
        assert {f"{name}_chosen_logps", f"{name}_rejected_logps", f"{name}_chosen_token_logps"} <= columns
    row = pre.train_dataset[0]
    assert sum(row["prev_chosen_token_logps"]) == pytest.approx(row["prev_chosen_logps"], abs=1e-4)
    assert len(row["prev_chosen_token_logps"]) == len(row["chosen_ids"])
    assert pre.active_summary()["anchor prev"] == "precomputed (model)"
    pre_log = first_log(pre)
    for key in ("loss", "anchors/ref_chosen", "anchors/prev_chosen"):
        assert pre_log[key] == pytest.approx(live_log[key], rel=1e-5), key
    assert pre_log["anchors/prev_token_gap"] < 1e-4
    # a truncated cache file is named in a warning and recomputed; the intact one is a logged hit
    broken = sorted(cache.iterdir())[0]
    broken.write_bytes(broken.read_bytes()[:100])
    with caplog.at_level(logging.INFO, logger="alignment"):
        again = make(tiny, tokenizer, data_dir, tmp_path / "again", anchors={"prev": prev},
                     precompute_ref_logps=True, ref_cache_dir=str(cache))  # fmt: skip
    messages = [r.getMessage() for r in caplog.records]
    assert any(str(broken) in m and "unreadable reference cache" in m for m in messages)
    assert sum("reference cache hit" in m for m in messages) == 1
    assert again.train_dataset["prev_chosen_logps"] == pre.train_dataset["prev_chosen_logps"]
    assert again.train_dataset["ref_chosen_logps"] == pre.train_dataset["ref_chosen_logps"]


def test_columns_in_the_data_are_an_anchor_and_travel_through_tokenization(tiny, tokenizer, data_dir, tmp_path):
    data = preference_rows(data_dir, n=8)
    data = data.add_column("prev_chosen_logps", [-1.0 - i for i in range(8)])
    data = data.add_column("prev_rejected_logps", [-2.0 - i for i in range(8)])

    class SumsOnly(METHOD.trainer):  # a subclass of a registered trainer is that method
        anchor_token_logps = False

    trainer = make(tiny, tokenizer, data_dir, tmp_path, data=data, trainer_cls=SumsOnly)
    assert trainer.anchors["prev"].kind == "columns" and trainer.anchors["prev"].model is None
    assert trainer.train_dataset["prev_chosen_logps"] == [-1.0 - i for i in range(8)]
    logged = first_log(trainer)
    assert logged["anchors/prev_chosen"] == pytest.approx(-4.5)  # the mean of the given values
    needs_tokens = make(tiny, tokenizer, data_dir, tmp_path / "tokens", data=data)
    with pytest.raises(ValueError, match="per-token values of anchor 'prev'"):
        needs_tokens.train()


def test_peft_ref_is_the_adapter_off_and_prev_the_starting_adapter(tiny, tokenizer, data_dir, tmp_path):
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0, init_lora_weights=False)
    data = preference_rows(data_dir, n=8)  # both steps see the same 8 pairs
    trainer = make(tiny, tokenizer, data_dir, tmp_path, peft=lora, data=data, learning_rate=1e-2, max_steps=2)
    assert trainer.anchors["ref"].kind == "adapter" and trainer.anchors["prev"].kind == "adapter state"
    start = dict(trainer.anchors["prev"].adapter_state)
    trainer.train()
    first, second = trainer.state.log_history[:2]
    # prev is the starting adapter (random LoRA weights here, so not the base model); it stays put while
    # the policy moves, and the policy's own adapter is back in place after every anchor pass
    assert first["anchors/prev_chosen"] == pytest.approx(first["logps/chosen"], rel=1e-5)
    assert abs(first["anchors/prev_chosen"] - first["anchors/ref_chosen"]) > 1e-4
    assert second["anchors/prev_chosen"] == pytest.approx(first["anchors/prev_chosen"], rel=1e-5)
    assert abs(second["logps/chosen"] - first["logps/chosen"]) > 1e-4
    now = adapter_snapshot(trainer.model)
    assert any(not torch.equal(now[n], start[n]) for n in start)


def test_adapter_swap_restores_the_weights_and_rejects_unknown_names(tiny):
    from peft import get_peft_model

    model = get_peft_model(copy.deepcopy(tiny), LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    state = {n: torch.zeros_like(v) for n, v in adapter_snapshot(model).items()}
    before = adapter_snapshot(model)
    with adapter_swapped(model, state):
        assert all(torch.equal(p, state[n]) for n, p in adapter_snapshot(model).items())
    assert all(torch.equal(p, before[n]) for n, p in adapter_snapshot(model).items())
    with pytest.raises(ValueError, match="does not have"), adapter_swapped(model, {"nope": torch.zeros(1)}):
        pass


def test_anchor_errors(tiny, tokenizer, data_dir, tmp_path):
    with pytest.raises(ValueError, match=r"anchors \['other'\] are not used by this method"):
        make(tiny, tokenizer, data_dir, tmp_path, anchors={"other": tiny})
    with pytest.raises(ValueError, match="either as ref_model or as anchors"):
        METHOD.trainer(
            copy.deepcopy(tiny), ref_model=tiny, args=train_args(METHOD.config, tmp_path),
            train_dataset=preference_rows(data_dir), processing_class=tokenizer, anchors={"ref": tiny},
        )  # fmt: skip
