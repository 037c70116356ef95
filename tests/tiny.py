"""Shared builders for the tests and the scripts they launch (run with PYTHONPATH = the repository)."""

import torch


def tiny_llama(vocab_size: int, hidden: int = 32, layers: int = 2, heads: int = 4, kv_heads: int = 2, seed: int = 0):
    """A randomly initialised Llama (seeded), intermediate size 2 * hidden, pad/bos/eos = 0/1/2 as in the
    shipped tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    return LlamaForCausalLM(config)


def full_parameters(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Copies of every parameter, gathered whole when DeepSpeed ZeRO-3 has partitioned it."""
    params = {}
    for name, param in module.named_parameters():
        if hasattr(param, "ds_id"):
            import deepspeed

            with deepspeed.zero.GatheredParameters([param]):
                params[name] = param.detach().clone()
        else:
            params[name] = param.detach().clone()
    return params
