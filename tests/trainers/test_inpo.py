"""INPOTrainer (one INPO iteration) on a tiny Llama: its loss against a plain computation from sequence
log-probabilities with distinct pi_ref and pi_t, the precomputed anchors, the config."""

import copy

import pytest
import torch

from alignment.data import PreferenceCollator
from alignment.heads import causal_token_logps
from alignment.losses.inpo import inpo_loss
from alignment.trainers import INPOConfig, INPOTrainer
from tests.helpers import preference_rows, tiny_llama, train_args


@pytest.fixture(scope="module")
def tiny(tokenizer):
    return tiny_llama(len(tokenizer))


def perturbed(model, scale):
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.lm_head.weight.mul_(scale)
    return other.eval()


def sums(model, batch):
    with torch.no_grad():
        out = causal_token_logps(model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    seq = out.logps.sum(-1)
    half = seq.shape[0] // 2
    return seq[:half], seq[half:]


def test_one_step_loss_is_inpo_on_sequence_sums_with_distinct_anchors(tiny, tokenizer, data_dir, tmp_path):
    ref, prev = perturbed(tiny, 0.7), perturbed(tiny, 1.2)
    data = preference_rows(data_dir, n=8)
    args = train_args(INPOConfig, tmp_path, max_steps=1, learning_rate=0.0, eta=0.5, tau=0.1,
                      ref_cache_dir=str(tmp_path / "cache"))  # fmt: skip
    trainer = INPOTrainer(copy.deepcopy(tiny), args=args, train_dataset=data, processing_class=tokenizer,
                          anchors={"ref": ref, "prev": prev})  # fmt: skip
    assert args.precompute_ref_logps and len(trainer.ref_cache_files) == 2
    assert trainer.active_summary()["anchor prev"] == "precomputed (model)"
    trainer.train()
    logged = trainer.state.log_history[0]
    rows = [trainer.train_dataset[i] for i in range(8)]
    batch = PreferenceCollator(tokenizer.pad_token_id)(rows)
    expected, metrics = inpo_loss(*sums(tiny.eval(), batch), *sums(ref, batch), *sums(prev, batch), eta=0.5, tau=0.1)
    assert logged["loss"] == pytest.approx(expected.mean().item(), rel=1e-4)
    assert logged["inpo/h"] == pytest.approx(metrics["inpo/h"].mean().item(), rel=1e-4, abs=1e-4)


def test_config_defaults_and_errors(tmp_path):
    common = dict(output_dir=str(tmp_path), use_cpu=True)
    config = INPOConfig(**common)
    assert (config.eta, config.tau, config.precompute_ref_logps) == (0.005, pytest.approx(0.005 / 3), True)
    with pytest.raises(ValueError, match="tau must be in"):
        INPOConfig(eta=0.1, tau=0.5, **common)
    with pytest.raises(ValueError, match="eta must be > 0"):
        INPOConfig(eta=0.0, **common)


def test_peft_anchors_are_the_adapter_off_and_the_starting_adapter(tiny, tokenizer, data_dir, tmp_path):
    from peft import LoraConfig

    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0, init_lora_weights=False)
    args = train_args(INPOConfig, tmp_path, max_steps=2, learning_rate=1e-2, eta=0.5, precompute_ref_logps=False)
    base = {n: p.detach().clone() for n, p in tiny.named_parameters()}
    trainer = INPOTrainer(copy.deepcopy(tiny), args=args, train_dataset=preference_rows(data_dir, n=8),
                          processing_class=tokenizer, peft_config=lora)  # fmt: skip
    assert trainer.anchors["ref"].kind == "adapter" and trainer.anchors["prev"].kind == "adapter state"
    trainer.train()
    first, second = trainer.state.log_history[:2]
    # at step 1 the policy is pi_t (the starting adapter, random here), which is not pi_ref (the base model);
    # pi_t stays put while the policy moves
    assert first["inpo/margin_vs_prev"] == pytest.approx(0.0, abs=1e-5) and abs(first["inpo/margin_vs_ref"]) > 1e-4
    assert abs(second["inpo/margin_vs_prev"]) > 1e-4
    assert torch.isfinite(torch.tensor([first["loss"], second["loss"]])).all()
    frozen = {n.replace("base_model.model.", "").replace(".base_layer", ""): p
              for n, p in trainer.model.named_parameters() if "lora_" not in n}  # fmt: skip
    assert all(torch.equal(frozen[n], base[n]) for n in base)  # only the adapter trained
