"""The diagnostics callback inside real (tiny) training runs: first-order correctness, no side effects,
LoRA, parameter selection, softmax collapse from the kernel."""

import copy
import json
import statistics

import pytest
import torch
from peft import LoraConfig

from alignment.diagnostics.callback import FILE_NAME, DiagnosticsCallback
from alignment.trainers import DPOConfig, DPOTrainer, RPOConfig, RPOTrainer, SFTConfig, SFTTrainer
from tests.helpers import FRESH_SEED, preference_rows, tiny_llama, train_args


@pytest.fixture(scope="module")
def tiny_model(tokenizer):
    return tiny_llama(len(tokenizer))


def rows(data_dir, kind="pref", split="train", n=16, task="arithmetic"):
    return preference_rows(data_dir, kind, task, n, split)


def config(cls, tmp_path, **kw):
    return train_args(cls, tmp_path, **{"diagnostics_steps": 1, "diagnostics_probe_pairs": 4, **kw})


def records(trainer, kind=None):
    lines = (trainer.args.output_dir + "/" + FILE_NAME, "r")
    with open(*lines) as f:
        out = [json.loads(line) for line in f]
    return [r for r in out if kind is None or r["kind"] == kind]


@pytest.mark.parametrize("seed", [0, FRESH_SEED])
def test_first_order_prediction_matches_the_observed_change(tokenizer, data_dir, tmp_path, seed):
    """<delta theta, g_w> against the observed change of logp_w over one SGD step with a small learning
    rate, pair by pair (float64, so that the difference of two log-probabilities is exact enough). The
    second-order remainder grows as lr^2 against lr for the first-order term: at lr 1e-3 a fresh seed
    sometimes drew a pair whose first-order change nearly cancels (observed -6.4e-6, remainder 2.4e-6), so
    the step is smaller and such a pair is held to 10% of the typical change of the probe pairs."""
    model = tiny_llama(len(tokenizer), seed=seed).double()
    args = config(
        DPOConfig, tmp_path, max_steps=1, optim="sgd", learning_rate=1e-4, diagnostics_first_order=True,
        diagnostics_probe_pairs=8, beta=0.5,
    )  # fmt: skip
    trainer = DPOTrainer(
        model, args=args, train_dataset=rows(data_dir), eval_dataset=rows(data_dir, split="eval", n=8),
        processing_class=tokenizer,
    )  # fmt: skip
    trainer.train()
    (check,) = records(trainer, "first_order")
    pairs = check["pairs"]
    assert len(pairs["observed_dlogp_w"]) == 8
    for key in ("w", "l"):
        observed_all = pairs[f"observed_dlogp_{key}"]
        typical = statistics.median(abs(o) for o in observed_all)
        for predicted, observed in zip(pairs[f"predicted_dlogp_{key}"], observed_all):
            assert abs(observed) > 1e-9  # the step moved every probe pair measurably (float64)
            # within 10% of the observed change; for a pair whose change nearly cancels, 10% of the typical one
            assert abs(predicted - observed) <= 0.10 * max(abs(observed), typical), (key, predicted, observed)


def test_probes_do_not_change_training_and_are_recorded(tiny_model, tokenizer, data_dir, tmp_path):
    models, trainers = [], []
    for on in (False, True):
        model = copy.deepcopy(tiny_model)
        args = config(DPOConfig, tmp_path / str(on), max_steps=3, diagnostics=on, diagnostics_steps=2)
        trainer = DPOTrainer(model, args=args, train_dataset=rows(data_dir), processing_class=tokenizer)
        trainer.train()
        models.append(model)
        trainers.append(trainer)
    for (name, a), b in zip(models[0].named_parameters(), models[1].parameters()):
        assert torch.equal(a, b), name
    assert not any(isinstance(c, DiagnosticsCallback) for c in trainers[0].callback_handler.callbacks)
    probes = records(trainers[1], "probe")
    assert [r["step"] for r in probes] == [0, 2, 3]  # start, every 2 steps, end
    first, last = probes[0], probes[-1]
    assert first["summary"]["chosen_delta"] == 0.0 and len(first["pairs"]["rho"]) == 4
    assert last["summary"]["chosen_delta"] == pytest.approx(
        sum(last["pairs"]["logp_w"]) / 4 - sum(first["pairs"]["logp_w"]) / 4
    )
    assert all(len(t) > 0 for t in last["pairs"]["tokens_w"])
    logged = [r for r in trainers[1].state.log_history if "diagnostics/entangled_share" in r]
    assert logged and "diagnostics/sign_agreement_chosen" in logged[-1]
    assert "diagnostics/softmax_collapse" in trainers[1].state.log_history[0]
    assert "diagnostics/softmax_collapse" not in trainers[0].state.log_history[0]


def test_lora_probes_take_the_adapter_gradients(tiny_model, tokenizer, data_dir, tmp_path):
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    trainer = RPOTrainer(
        copy.deepcopy(tiny_model), args=config(RPOConfig, tmp_path, max_steps=1), train_dataset=rows(data_dir),
        processing_class=tokenizer, peft_config=lora,
    )  # fmt: skip
    callback = next(c for c in trainer.callback_handler.callbacks if isinstance(c, DiagnosticsCallback))
    from alignment.diagnostics import trainable_parameters

    names = [n for n, _ in trainable_parameters(trainer.model)]
    assert names and all("lora_" in n for n in names)
    trainer.train()
    probes = records(trainer, "probe")
    assert len(probes) == 2 and callback.start is not None
    # lora_B starts at zero, so the LoRA gradients of logp reach only lora_B at step 0; they are not zero
    assert all(n > 0 for n in probes[0]["pairs"]["norm_w"])


def test_parameter_pattern_narrows_the_probe(tiny_model, tokenizer, data_dir, tmp_path):
    from alignment.diagnostics import trainable_parameters

    head_only = trainable_parameters(tiny_model, r"lm_head")
    assert [n for n, _ in head_only] == ["lm_head.weight"]
    with pytest.raises(ValueError, match="no trainable parameter matches"):
        trainable_parameters(tiny_model, "nothing_like_this")
    with pytest.raises(ValueError, match="diagnostics_params is not a valid regular expression"):
        config(DPOConfig, tmp_path, diagnostics_params="(")
    with pytest.raises(ValueError, match="diagnostics_steps must be >= 1"):
        config(DPOConfig, tmp_path, diagnostics_steps=0)
    trainer = DPOTrainer(
        copy.deepcopy(tiny_model), args=config(DPOConfig, tmp_path, max_steps=1, diagnostics_params="lm_head"),
        train_dataset=rows(data_dir), processing_class=tokenizer,
    )  # fmt: skip
    assert "params ~ /lm_head/" in trainer.active_summary()["diagnostics"]
    trainer.train()
    assert len(records(trainer, "probe")) == 2


def test_softmax_collapse_comes_from_the_kernel(tiny_model, tokenizer, data_dir, tmp_path):
    """A head scaled up 10^4 times makes (nearly) every float32 softmax collapse; the unscaled one none."""
    model = copy.deepcopy(tiny_model)
    with torch.no_grad():
        model.lm_head.weight.mul_(1e4)
    for trainer_cls, cls, kind in ((DPOTrainer, DPOConfig, "pref"), (SFTTrainer, SFTConfig, "sft")):
        args = config(cls, tmp_path / kind, max_steps=1, learning_rate=0.0)
        data = rows(data_dir, kind)
        trainer = trainer_cls(copy.deepcopy(model), args=args, train_dataset=data, processing_class=tokenizer)
        trainer.train()
        logged = trainer.state.log_history[0]
        assert logged["diagnostics/softmax_collapse"] > 0.9, kind
        assert logged["diagnostics/zero_loss_tokens"] <= 1.0
    plain = SFTTrainer(
        copy.deepcopy(tiny_model), args=config(SFTConfig, tmp_path / "plain", max_steps=1),
        train_dataset=rows(data_dir, "sft"), processing_class=tokenizer,
    )  # fmt: skip
    assert plain.active_summary()["diagnostics"].startswith("softmax collapse every step; probes off: SFT")
    plain.train()
    assert plain.state.log_history[0]["diagnostics/softmax_collapse"] == 0.0
