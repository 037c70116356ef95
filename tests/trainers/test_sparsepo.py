"""SparsePOTrainer on a tiny Llama: the mask network trains with the policy, is saved beside it and reloaded;
LoRA; every mask type; the DPO identity at the trainer level; clear errors."""

import copy

import pytest
import torch
from peft import LoraConfig
from safetensors.torch import load_file
from transformers import TrainerCallback

from alignment.trainers import DPOConfig, DPOTrainer, SparsePOConfig, SparsePOTrainer
from tests.helpers import changed, preference_rows, tiny_llama, train_args


@pytest.fixture(scope="module")
def tiny(tokenizer):
    return tiny_llama(len(tokenizer))


def sentiment(data_dir, n=16):
    return preference_rows(data_dir, task="sentiment", n=n)


def make(tiny, tokenizer, data_dir, tmp_path, peft=None, **kw):
    return SparsePOTrainer(
        copy.deepcopy(tiny), args=train_args(SparsePOConfig, tmp_path, **kw), train_dataset=sentiment(data_dir),
        processing_class=tokenizer, peft_config=peft,
    )  # fmt: skip


def test_learned_masks_train_save_and_reload(tiny, tokenizer, data_dir, tmp_path):
    trainer = make(tiny, tokenizer, data_dir, tmp_path, mask_sharing="independent")
    net = trainer.mask_network
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    assert "learned, independent on reward and KL" in trainer.active_summary()["token masks"]
    trainer.train()
    assert sorted(changed(before, net)) == sorted(before)  # every mask parameter moved
    logged = trainer.state.log_history[0]
    for key in ("sparsepo/mask_sparsity_reward", "sparsepo/mask_mean_kl", "sparsepo/kl_chosen", "rewards/margins"):
        assert key in logged
    assert logged["sparsepo/kl_chosen"] == pytest.approx(0.0, abs=1e-5)  # step 1: policy == reference
    out = tmp_path / "saved"
    trainer.save_model(str(out))
    assert (out / "token_mask.safetensors").exists() and (out / "token_mask.json").exists()
    assert not any("sparsepo_mask" in k for k in load_file(str(out / "model.safetensors")))
    again = SparsePOTrainer(
        str(out), args=train_args(SparsePOConfig, tmp_path / "again"), train_dataset=sentiment(data_dir),
        processing_class=tokenizer,
    )  # fmt: skip
    for name, value in net.state_dict().items():
        assert torch.equal(again.mask_network.state_dict()[name].cpu(), value.cpu()), name


def test_lora_trains_adapters_and_masks_against_the_adapter_off_reference(tiny, tokenizer, data_dir, tmp_path):
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    trainer = make(tiny, tokenizer, data_dir, tmp_path, peft=lora)
    assert trainer.ref_mode == "adapter" and trainer.ref_model is None
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    moved = changed(before, trainer.model)
    assert any("sparsepo_mask" in n for n in moved) and any("lora_" in n for n in moved)
    assert all("lora_" in n or "sparsepo_mask" in n for n in moved)  # the base model stays frozen


@pytest.mark.parametrize(
    "options",
    [
        {"mask_type": "activation"},
        {"mask_type": "constant"},
        {"mask_type": "random", "mask_sharing": "independent"},
        {"mask_type": "learned", "kl_coef": 0.0, "mask_on_kl": False},
        {"mask_type": "learned", "mask_on_reward": False},
        {"mask_type": "learned", "mask_inputs": "token"},
    ],
    ids=["activation", "constant", "random", "no_kl", "kl_mask_only", "token_inputs"],
)
def test_every_mask_type_trains(tiny, tokenizer, data_dir, tmp_path, options):
    trainer = make(tiny, tokenizer, data_dir, tmp_path, max_steps=1, **options)
    assert (trainer.mask_network is not None) == (options["mask_type"] == "learned")
    trainer.train()
    loss = trainer.state.log_history[0]["loss"]
    assert loss == loss and loss > 0


def test_mask_warmup_holds_the_masks_then_trains_them(tiny, tokenizer, data_dir, tmp_path):
    """mask_warmup_ratio 0.5 of 4 steps: the masks stay put (zero gradient, learning rate 0) for 2 steps while
    the policy trains, then ramp in (the Trainer's warm-up length, 2 steps here) and move."""
    trainer = make(tiny, tokenizer, data_dir, tmp_path, max_steps=4, mask_warmup_ratio=0.5, warmup_steps=2,
                   lr_scheduler_type="constant_with_warmup", mask_learning_rate=1e-2)  # fmt: skip
    net, lrs, mask_grads = trainer.mask_network, [], []
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    policy_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    seen = {}

    class Watch(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, **kw):
            mask_grads.append(max(p.grad.abs().max().item() for p in net.parameters()))
            lrs.append(trainer.optimizer.param_groups[-1]["lr"])

        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 2:
                seen["masks"] = changed(before, net)
                seen["policy"] = changed(policy_before, trainer.model)

    trainer.add_callback(Watch())
    trainer.train()
    assert seen["masks"] == [] and len(seen["policy"]) > 0  # held: the policy moved, the masks did not
    assert mask_grads[:2] == [0.0, 0.0] and all(g > 0 for g in mask_grads[2:])
    assert lrs[:2] == [0.0, 0.0] and lrs[2] == pytest.approx(0.5e-2) and lrs[3] == pytest.approx(1e-2)
    assert sorted(changed(before, net)) == sorted(before)  # then every mask parameter moved


def test_constant_masks_without_the_kl_term_equal_dpo(tiny, tokenizer, data_dir, tmp_path):
    ref = copy.deepcopy(tiny)
    with torch.no_grad():
        ref.lm_head.weight.mul_(0.7)  # a reference unlike the policy: non-zero margins
    results = []
    for cls, config, extra in (
        (SparsePOTrainer, SparsePOConfig, {"mask_type": "constant", "kl_coef": 0.0}),
        (DPOTrainer, DPOConfig, {}),
    ):
        args = train_args(config, tmp_path / cls.__name__, max_steps=1, learning_rate=0.0, beta=0.5, **extra)
        trainer = cls(copy.deepcopy(tiny), ref_model=ref, args=args, train_dataset=sentiment(data_dir),
                      processing_class=tokenizer)  # fmt: skip
        trainer.train()
        results.append(trainer.state.log_history[0])
    assert abs(results[1]["rewards/margins"]) > 1e-3
    for key in ("loss", "rewards/margins", "rewards/chosen", "logps/chosen"):
        assert results[0][key] == pytest.approx(results[1][key], rel=1e-5, abs=1e-5), key  # float32 sums


def test_config_errors(tmp_path):
    common = dict(output_dir=str(tmp_path), use_cpu=True)
    with pytest.raises(ValueError, match="precompute_ref_logps cannot be used"):
        SparsePOConfig(precompute_ref_logps=True, **common)
    assert SparsePOConfig(precompute_ref_logps=True, mask_type="constant", kl_coef=0.0, **common)
    with pytest.raises(ValueError, match="mask_type must be one of"):
        SparsePOConfig(mask_type="sparse", **common)
    with pytest.raises(ValueError, match="mask_warmup_ratio must be in"):
        SparsePOConfig(mask_warmup_ratio=1.0, **common)
    with pytest.raises(ValueError, match="lambda_kl"):
        SparsePOConfig(lambda_kl=-1, **common)
    assert SparsePOConfig(**common).beta == 0.8


def test_sparsity_target_moves_the_l1_multiplier_and_is_saved(tiny, tokenizer, data_dir, tmp_path):
    """mask_sparsity_target: after every training batch, log multiplier += rate * (target - the batch's share of
    zero reward masks); the L1 weights the loss gets are lambda * multiplier; saved with the masks."""
    trainer = make(tiny, tokenizer, data_dir, tmp_path, mask_sparsity_target=0.9, mask_sparsity_rate=0.25,
                   lambda_reward=1e-3, lambda_kl=1e-3)  # fmt: skip
    seen = []
    original = trainer.pair_losses

    def spy(chunk, anchors, token_scale):
        seen.append(trainer.l1_scale())
        return original(chunk, anchors, token_scale)

    trainer.pair_losses = spy
    trainer.train()
    logged = [e for e in trainer.state.log_history if "sparsepo/l1_scale" in e]
    sparsity = [e["sparsepo/mask_sparsity_reward"] for e in logged]
    assert seen[0] == 1.0 and all(s < 0.9 for s in sparsity)  # masks near 1 at the start: far below the target
    expected = sum(0.25 * (0.9 - s) for s in sparsity)  # logging_steps 1: one logged value per batch
    assert float(trainer.mask_network.l1_log_scale) == pytest.approx(expected, rel=1e-4)
    assert seen[-1] > seen[0]  # raised while the masks are less sparse than the target
    trainer.save_model(str(tmp_path / "saved"))
    saved = load_file(str(tmp_path / "saved" / "token_mask.safetensors"))
    assert float(saved["l1_log_scale"]) == pytest.approx(expected, rel=1e-4)
    plain = make(tiny, tokenizer, data_dir, tmp_path / "plain")
    assert plain.l1_scale() == 1.0  # no target: the configured lambdas (the authors' behaviour)


def test_sparsity_target_errors(tmp_path):
    common = dict(output_dir=str(tmp_path), use_cpu=True)
    with pytest.raises(ValueError, match="mask_sparsity_target must be in"):
        SparsePOConfig(mask_sparsity_target=1.0, **common)
    with pytest.raises(ValueError, match="needs mask_type: learned"):
        SparsePOConfig(mask_sparsity_target=0.5, mask_type="activation", **common)
