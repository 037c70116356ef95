"""padding_free: packed batches equal padded ones (per-sequence log-probabilities, losses, gradients) for
Llama, Qwen2 and Gemma-2 tiny configs, every preference method and SFT, with LoRA; the layout itself; the
banner; the one-line errors (a model whose attention lets packed sequences see each other, a collator that
does not pack, a method without sequences)."""

import pytest
import torch
from datasets import Dataset
from transformers import AutoTokenizer

from alignment.data.packing import Packing, pack_batch, plan_rows
from alignment.trainers import (
    CPOConfig,
    CPOTrainer,
    DPOConfig,
    DPOTrainer,
    INPOConfig,
    INPOTrainer,
    ORPOConfig,
    ORPOTrainer,
    RegretConfig,
    RegretLossTrainer,
    RPOConfig,
    RPOTrainer,
    SFTConfig,
    SFTTrainer,
    SparsePOConfig,
    SparsePOTrainer,
)
from tests.conftest import DATA
from tests.helpers import rel_err

COMMON = dict(use_cpu=True, bf16=False, report_to=[], per_device_train_batch_size=6, diagnostics=False,
              save_strategy="no")  # fmt: skip


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(str(DATA / "tokenizer"))


def skewed_rows(n=6, sft=False):
    """Rows of very different lengths (prompts repeated 1..4 times, completions of 1..10 words)."""
    rows = []
    for i in range(n):
        a, b = 10 + 7 * i, 3 + i
        prompt = " ".join([f"What is {a} + {b}?"] * (1 + i % 4))
        chosen = f"{a + b}" + " yes" * (3 * i % 10)
        rows.append({"prompt": prompt, "chosen": chosen, "rejected": f"{a - b}" + " no" * (i % 3)})
    if sft:
        return Dataset.from_list([{"prompt": r["prompt"], "completion": r["chosen"]} for r in rows])
    return Dataset.from_list(rows)


def tiny(arch: str, vocab: int, seed: int = 0):
    from transformers import (
        Gemma2Config,
        Gemma2ForCausalLM,
        LlamaConfig,
        LlamaForCausalLM,
        MixtralConfig,
        MixtralForCausalLM,
        OPTConfig,
        OPTForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    torch.manual_seed(seed)
    ids = dict(pad_token_id=0, bos_token_id=1, eos_token_id=2)
    common = dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  **ids)  # fmt: skip
    if arch == "llama":
        return LlamaForCausalLM(LlamaConfig(num_key_value_heads=2, **common))
    if arch == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(num_key_value_heads=2, **common))
    if arch == "gemma2":  # sliding-window layers (window 8, shorter than most sequences) and softcapping
        config = Gemma2Config(num_key_value_heads=2, head_dim=8, sliding_window=8, final_logit_softcapping=3.0,
                              attn_implementation="eager", **common)  # fmt: skip
        return Gemma2ForCausalLM(config)
    if arch == "mixtral":
        return MixtralForCausalLM(MixtralConfig(num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2,
                                                **common))  # fmt: skip
    if arch == "opt":
        return OPTForCausalLM(OPTConfig(ffn_dim=64, word_embed_proj_dim=32, **common))
    raise ValueError(arch)


# ----- the layout --------------------------------------------------------------------------------------------
def test_pack_batch_layout_and_unpack():
    ids = torch.tensor([[5, 6, 7], [8, 9, 0], [4, 0, 0]])
    mask = (ids > 0).long()
    packed = pack_batch(ids, mask, pad_token_id=0)
    # capacity 3 (the longest): row 0 holds the 3-token sequence, row 1 the 2-token one and the 1-token one
    assert packed["packed_input_ids"].tolist() == [[5, 6, 7], [8, 9, 4]]
    assert packed["packed_position_ids"].tolist() == [[0, 1, 2], [0, 1, 0]]
    assert packed["packed_index"].tolist() == [[0, 1, 2], [3, 4, -1], [5, -1, -1]]
    one = pack_batch(ids, mask, pad_token_id=0, single_row=True, pad_to_multiple_of=4)
    assert one["packed_input_ids"].tolist() == [[5, 6, 7, 8, 9, 4, 0, 0]]
    assert one["packed_position_ids"].tolist() == [[0, 1, 2, 0, 1, 0, 0, 1]]
    packing = Packing.from_batch(one)
    assert packing.token_mask.tolist() == [[1, 1, 1, 1, 1, 1, 0, 0]]
    states = torch.arange(8.0).view(1, 8, 1).requires_grad_()
    out = packing.unpack(states)
    assert out.squeeze(-1).tolist() == [[0, 1, 2], [3, 4, 0], [5, 0, 0]]
    out.sum().backward()
    assert states.grad.view(-1).tolist() == [1, 1, 1, 1, 1, 1, 0, 0]
    assert Packing.from_batch({"input_ids": ids}) is None


def test_plan_rows_first_fit_decreasing():
    rows = plan_rows([5, 2, 4, 1, 3], capacity=5)
    assert rows == [[0], [2, 3], [4, 1]]
    assert all(sum([5, 2, 4, 1, 3][i] for i in r) <= 5 for r in rows)


# ----- packed equals padded -------------------------------------------------------------------------------
def step(trainer, batch):
    """Loss, per-sequence log-probabilities and every gradient of one compute_loss on ``batch``."""
    model = trainer.model
    model.zero_grad()
    loss, out = trainer.compute_loss(model, batch, return_outputs=True)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    seq = out.seq_logps if hasattr(out, "seq_logps") else (out.logps.sum(dim=-1))
    return loss.detach(), seq.detach(), grads


def assert_packed_equals_padded(trainer, single_row=False, tol=1e-5):
    trainer.data_collator.single_row = single_row
    batch = next(iter(trainer.get_train_dataloader()))
    packing = Packing.from_batch(batch)
    assert packing is not None
    rows, length = packing.input_ids.shape
    assert rows * length < batch["input_ids"].numel()  # packing removed padding
    if single_row:
        assert rows == 1
    padded = {k: v for k, v in batch.items() if not k.startswith("packed_")}
    trainer.args.padding_free = False
    loss_a, seq_a, grads_a = step(trainer, padded)
    trainer.args.padding_free = True
    loss_b, seq_b, grads_b = step(trainer, batch)
    assert rel_err(loss_b, loss_a) <= tol
    assert rel_err(seq_b, seq_a) <= tol
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name in grads_a:
        assert rel_err(grads_b[name], grads_a[name]) <= tol, name


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma2"])
@pytest.mark.parametrize("single_row", [False, True])
def test_dpo_packed_equals_padded(tmp_path, tokenizer, arch, single_row):
    model = tiny(arch, len(tokenizer))
    args = DPOConfig(output_dir=str(tmp_path), padding_free=True, beta=0.3, **COMMON)
    trainer = DPOTrainer(model, args=args, train_dataset=skewed_rows(), processing_class=tokenizer)
    assert trainer.active_summary()["padding-free"].startswith("on: packed rows")
    assert_packed_equals_padded(trainer, single_row)


def method_trainer(method, tmp_path, tokenizer):
    model, ref = tiny("llama", len(tokenizer)), tiny("llama", len(tokenizer), seed=1)
    rows = skewed_rows()
    if method == "rpo":
        args = RPOConfig(output_dir=str(tmp_path), padding_free=True, eta=1.0, **COMMON)
        return RPOTrainer(model, ref_model=ref, args=args, train_dataset=rows, processing_class=tokenizer)
    if method == "sparsepo":
        args = SparsePOConfig(output_dir=str(tmp_path), padding_free=True, mask_dropout=0.0, **COMMON)
        return SparsePOTrainer(model, ref_model=ref, args=args, train_dataset=rows, processing_class=tokenizer)
    if method == "inpo":
        args = INPOConfig(output_dir=str(tmp_path), padding_free=True, eta=0.5, tau=0.1, **COMMON)
        return INPOTrainer(model, args=args, train_dataset=rows, processing_class=tokenizer, anchors={"prev": ref})
    if method == "dpo_wpo_ld":  # the TRL options that read the batch's tokens (WPO's extra pass, LD-DPO)
        args = DPOConfig(output_dir=str(tmp_path), padding_free=True, use_weighting=True, ld_alpha=0.5, **COMMON)
        return DPOTrainer(model, ref_model=ref, args=args, train_dataset=rows, processing_class=tokenizer)
    if method in ("cpo", "simpo"):  # reference-free: no anchor pass
        options = {"loss_type": "simpo", "cpo_alpha": 0.0} if method == "simpo" else {}
        args = CPOConfig(output_dir=str(tmp_path), padding_free=True, **options, **COMMON)
        return CPOTrainer(model, args=args, train_dataset=rows, processing_class=tokenizer)
    if method == "orpo":  # the NLL scores the chosen prompts too
        args = ORPOConfig(output_dir=str(tmp_path), padding_free=True, **COMMON)
        return ORPOTrainer(model, args=args, train_dataset=rows, processing_class=tokenizer)
    if method == "sft":
        args = SFTConfig(output_dir=str(tmp_path), padding_free=True, **COMMON)
        return SFTTrainer(model, args=args, train_dataset=skewed_rows(sft=True), processing_class=tokenizer)
    raise ValueError(method)


@pytest.mark.parametrize("method", ["rpo", "sparsepo", "inpo", "dpo_wpo_ld", "cpo", "simpo", "orpo", "sft"])
def test_every_method_packed_equals_padded(tmp_path, tokenizer, method):
    assert_packed_equals_padded(method_trainer(method, tmp_path, tokenizer))


def test_mixture_of_experts_router_loss_packed_equals_padded(tmp_path, tokenizer):
    """The router's load-balancing loss reads the packed rows' real tokens (the router logits are per packed
    position): same loss and gradients as padded."""
    args = DPOConfig(output_dir=str(tmp_path), padding_free=True, router_aux_loss_coef=0.5, **COMMON)
    trainer = DPOTrainer(tiny("mixtral", len(tokenizer)), args=args, train_dataset=skewed_rows(),
                         processing_class=tokenizer)  # fmt: skip
    assert trainer.router_coef == 0.5
    assert_packed_equals_padded(trainer, single_row=True)


def test_lora_packed_equals_padded(tmp_path, tokenizer):
    from peft import LoraConfig

    args = DPOConfig(output_dir=str(tmp_path), padding_free=True, **COMMON)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    trainer = DPOTrainer(tiny("llama", len(tokenizer)), args=args, train_dataset=skewed_rows(),
                         processing_class=tokenizer, peft_config=lora)  # fmt: skip
    assert trainer.ref_mode.startswith("adapter")
    assert_packed_equals_padded(trainer)


def test_training_packed_matches_padded_over_steps(tmp_path, tokenizer):
    """Two SGD steps end to end (Trainer loop, precomputed reference): same losses and weights."""

    def train(padding_free):
        args = DPOConfig(output_dir=str(tmp_path / str(padding_free)), padding_free=padding_free, max_steps=2,
                         per_device_train_batch_size=3, learning_rate=0.5, optim="sgd", lr_scheduler_type="constant",
                         logging_steps=1, precompute_ref_logps=True,
                         **{k: v for k, v in COMMON.items() if k != "per_device_train_batch_size"})  # fmt: skip
        trainer = DPOTrainer(tiny("llama", len(tokenizer)), args=args, train_dataset=skewed_rows(),
                             processing_class=tokenizer)  # fmt: skip
        trainer.train()
        losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
        return losses, dict(trainer.model.named_parameters())

    (loss_a, params_a), (loss_b, params_b) = train(False), train(True)
    assert loss_b == pytest.approx(loss_a, rel=1e-5)
    for name, value in params_a.items():
        assert rel_err(params_b[name].detach(), value.detach()) <= 1e-5, name


# ----- errors -----------------------------------------------------------------------------------------------
def test_a_model_that_mixes_packed_sequences_is_refused(tmp_path, tokenizer):
    args = DPOConfig(output_dir=str(tmp_path), padding_free=True, **COMMON)
    model = tiny("opt", len(tokenizer))
    trainer = DPOTrainer(model, args=args, train_dataset=skewed_rows(), processing_class=tokenizer)
    batch = next(iter(trainer.get_train_dataloader()))
    with pytest.raises(ValueError, match=r"OPTForCausalLM .* does not keep packed sequences apart.*padding_free: fals"):
        trainer.compute_loss(trainer.model, batch)


def test_precompute_checks_the_model_before_caching(tmp_path, tokenizer):
    """precompute_ref_logps runs packed batches at construction: the check comes first, nothing is cached."""
    cache = tmp_path / "cache"
    args = DPOConfig(output_dir=str(tmp_path), padding_free=True, precompute_ref_logps=True,
                     ref_cache_dir=str(cache), **COMMON)  # fmt: skip
    with pytest.raises(ValueError, match=r"OPTForCausalLM .* does not keep packed sequences apart"):
        DPOTrainer(tiny("opt", len(tokenizer)), args=args, train_dataset=skewed_rows(), processing_class=tokenizer)
    assert not cache.exists() or not any(cache.iterdir())


def test_a_collator_that_does_not_pack_is_named(tmp_path, tokenizer):
    from alignment.data import PreferenceCollator

    args = DPOConfig(output_dir=str(tmp_path), padding_free=True, **COMMON)

    class Mine(PreferenceCollator):
        padding_free = property(lambda self: False, lambda self, v: None)

    trainer = DPOTrainer(tiny("llama", len(tokenizer)), args=args, train_dataset=skewed_rows(),
                         processing_class=tokenizer, data_collator=Mine(0))  # fmt: skip
    batch = next(iter(trainer.get_train_dataloader()))
    with pytest.raises(ValueError, match=r"padding_free is on but the data collator \(Mine\) did not pack"):
        trainer.compute_loss(trainer.model, batch)


def test_off_by_default_and_refused_without_sequences(tmp_path, tokenizer):
    args = DPOConfig(output_dir=str(tmp_path), **COMMON)
    trainer = DPOTrainer(tiny("llama", len(tokenizer)), args=args, train_dataset=skewed_rows(),
                         processing_class=tokenizer)  # fmt: skip
    assert trainer.active_summary()["padding-free"] == "off"
    assert "packed_input_ids" not in next(iter(trainer.get_train_dataloader()))
    cfg = RegretConfig(output_dir=str(tmp_path / "r"), padding_free=True, mode="numeric", max_steps=1, **COMMON)
    with pytest.raises(ValueError, match="padding_free packs token sequences: regret"):
        RegretLossTrainer(None, args=cfg)


def test_a_step_reads_its_packing_once_and_checks_its_loss_type_once(tmp_path, tokenizer, monkeypatch):
    """The packing is read from the batch once per step and passed down (anchors, WPO's half-temperature pass,
    the pair-fused step); the DPO options are checked when the config is built, not on every chunk."""
    from alignment.data import packing as packing_module
    from alignment.losses import dpo as dpo_module

    args = DPOConfig(output_dir=str(tmp_path), padding_free=True, use_weighting=True, **COMMON)
    trainer = DPOTrainer(tiny("llama", len(tokenizer)), args=args, train_dataset=skewed_rows(),
                         processing_class=tokenizer)  # fmt: skip
    batch = next(iter(trainer.get_train_dataloader()))
    reads, checks = [], []
    original, check = packing_module.Packing.from_batch.__func__, dpo_module.check_combination
    monkeypatch.setattr(
        packing_module.Packing, "from_batch", classmethod(lambda cls, b: reads.append(1) or original(cls, b))
    )
    monkeypatch.setattr(dpo_module, "check_combination", lambda *a, **k: checks.append(1) or check(*a, **k))
    trainer.compute_loss(trainer.model, batch)
    assert len(reads) == 1 and not checks
