"""The fused op applied to real causal LMs (tiny configs) equals log_softmax of their own logits."""

import pytest
import torch

from alignment.heads import backbone, causal_token_logps, lm_head, shifted_targets
from tests.helpers import rel_err

VOCAB = 211


def tiny(arch: str, **extra):
    from transformers import (
        Gemma2Config,
        Gemma2ForCausalLM,
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    torch.manual_seed(0)
    common = {"vocab_size": VOCAB, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4}
    if arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(intermediate_size=64, num_key_value_heads=2, **common, **extra))
    elif arch == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(intermediate_size=64, num_key_value_heads=2, **common, **extra))
    elif arch == "gemma2":
        config = Gemma2Config(
            intermediate_size=64, num_key_value_heads=2, head_dim=8, final_logit_softcapping=3.0, **common, **extra
        )
        model = Gemma2ForCausalLM(config)
    elif arch == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, **extra))
    else:
        raise ValueError(arch)
    with torch.no_grad():  # larger logits than the default init, so softcapping matters
        lm_head(model).weight.mul_(8.0)
    return model.float().eval()


def batch(seed=0, b=3, t=12):
    gen = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, VOCAB, (b, t), generator=gen)
    attention_mask = torch.ones(b, t, dtype=torch.long)
    attention_mask[1, 9:] = 0
    completion_mask = attention_mask.clone()
    completion_mask[:, :4] = 0
    return input_ids, attention_mask, completion_mask


def logps_from_logits(model, input_ids, attention_mask, completion_mask):
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1].double()
    targets = shifted_targets(input_ids, completion_mask)
    logp = torch.log_softmax(logits, -1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return torch.where(targets != -100, logp, torch.zeros_like(logp))


def lora(model):
    from peft import LoraConfig, get_peft_model

    targets = ["c_attn"] if model.config.model_type == "gpt2" else ["q_proj", "v_proj"]
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=targets, lora_dropout=0.0))
    for name, param in peft_model.named_parameters():  # non-zero LoRA B so the adapter changes the output
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.5)
    return peft_model


ARCHS = ["llama", "qwen2", "gpt2", "gemma2"]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("wrapped", [False, True], ids=["plain", "peft"])
def test_logps_equal_log_softmax_of_model_logits(arch, wrapped):
    model = tiny(arch)
    if wrapped:
        model = lora(model)
    ids, attn, comp = batch()
    ours = causal_token_logps(model, ids, attn, comp)
    ref = logps_from_logits(model, ids, attn, comp)
    assert ours.logps.shape == ref.shape == (3, 11)
    assert rel_err(ours.logps, ref) <= 1e-5
    assert torch.all(ours.logps[comp[:, 1:] == 0] == 0)
    if arch == "gemma2":
        assert lm_head(model).softcap == 3.0
        plain = causal_token_logps(model, ids, attn, comp, softcap=None)
        assert rel_err(plain.logps, ref) > 1e-3  # softcapping really changes the result here
    if wrapped:
        with model.disable_adapter():
            base_ours = causal_token_logps(model, ids, attn, comp)
            base_ref = logps_from_logits(model, ids, attn, comp)
        assert rel_err(base_ours.logps, base_ref) <= 1e-5
        assert rel_err(base_ours.logps, ref) > 1e-4  # the adapter is really off


@pytest.mark.parametrize("arch", ["llama", "gemma2"])
def test_gradients_equal_the_model_logits_path(arch):
    model = tiny(arch).train()
    ids, attn, comp = batch(1)
    ours = causal_token_logps(model, ids, attn, comp).logps.sum()
    params = [p for p in model.parameters() if p.requires_grad]
    g_ours = torch.autograd.grad(ours, params)
    theirs = logps_from_logits(model, ids, attn, comp).sum()
    g_theirs = torch.autograd.grad(theirs, params)
    for a, b in zip(g_ours, g_theirs):
        assert rel_err(a, b) <= 1e-4


def test_lora_on_the_head_uses_the_effective_weight():
    from peft import LoraConfig, get_peft_model

    model = tiny("llama")
    model = get_peft_model(model, LoraConfig(r=2, target_modules=["lm_head", "q_proj"], lora_dropout=0.0))
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.5)
    ids, attn, comp = batch(2)
    assert rel_err(causal_token_logps(model, ids, attn, comp).logps, logps_from_logits(model, ids, attn, comp)) <= 1e-5


def test_backbone_and_head_lookup():
    model = tiny("gpt2")
    assert backbone(model) is model.transformer
    assert lm_head(model).weight is model.lm_head.weight
    assert backbone(lora(tiny("llama"))).__class__.__name__ == "LlamaModel"
