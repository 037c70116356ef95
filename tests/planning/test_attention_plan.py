"""The attention a recipe runs, as the planner counts it on a GPU (alignment.planning.attention): the kernels'
own buffers, transformers' unpadding and masks around them, and the mask-free path of sdpa at long lengths."""

import json
from unittest import mock

import pytest
import torch

from alignment.errors import RecipeError
from alignment.long_context import unmasked
from alignment.planning import attention
from alignment.planning.fake import PairShape
from alignment.planning.plan import simulate
from alignment.planning.tracker import StorageTracker
from alignment.recipes import load_recipe
from tests.conftest import ROOT

SMALL = {"model_type": "llama", "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2,
         "num_attention_heads": 8, "num_key_value_heads": 2, "vocab_size": 1024,
         "max_position_embeddings": 65536}  # fmt: skip
UNEQUAL = PairShape(0.25, 0.5, True, "test")


def recipe(tmp_path, implementation):
    path = tmp_path / "model.json"
    path.write_text(json.dumps(SMALL))
    overrides = {"use_cpu": True, "init_from_config": str(path), "activation_checkpointing": True, "bf16": True,
                 "dtype": "bfloat16", "precompute_ref_logps": False,
                 "model_init_kwargs": {"attn_implementation": implementation}}  # fmt: skip
    return load_recipe(ROOT / "recipes" / "quickstart" / "dpo.yaml", overrides)


class Bare(torch.autograd.Function):
    """An attention that allocates its output and its gradients only: the baseline of a kernel's workspace."""

    @staticmethod
    def forward(ctx, q, k, v, *rest):
        ctx.save_for_backward(q, k, v)
        return torch.empty_like(q, memory_format=torch.contiguous_format)

    @staticmethod
    def backward(ctx, dout):
        q, k, v = ctx.saved_tensors
        return (*(torch.empty_like(t, memory_format=torch.contiguous_format) for t in (q, k, v)), None, None, None)


def backward_peak(fn, *shapes, dtype=torch.bfloat16):
    """The most the backward of ``fn`` on fake tensors of ``shapes`` allocates above its start."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        inputs = [torch.empty(s, dtype=dtype, requires_grad=True) for s in shapes]
        out = fn(*inputs)
        grad = torch.empty_like(out)
        with StorageTracker(*inputs, grad, out) as tracker, tracker.phase("backward"):
            out.backward(grad)
    return tracker.marks["backward"]


@pytest.mark.parametrize("version", [2, 3])
def test_the_flash_kernels_allocate_what_flash_attention_allocates(version):
    b, n, h, kv, d = 2, 1000, 8, 2, 64  # grouped heads: dk, dv expanded (FA2) or float32 accumulators (FA3)
    shapes = (b, n, h, d), (b, n, kv, d), (b, n, kv, d)
    peak = backward_peak(lambda q, k, v: attention.FlashKernel.apply(q, k, v, version, None, None), *shapes)
    bare = backward_peak(lambda q, k, v: Bare.apply(q, k, v, None, None, None), *shapes)
    r = 1024  # n rounded to 128
    if version == 2:
        work = 4 * b * h * r + 4 * b * r * h * d + 2 * 2 * b * n * h * d
    else:
        work = 2 * 4 * b * h * r + 4 * b * h * r * d + 2 * 4 * b * kv * r * d
    assert peak - bare == work


def test_sdpa_with_a_mask_takes_the_memory_efficient_kernel():
    b, h, n, d = 1, 4, 512, 32
    mask = torch.ones(b, 1, n, n, dtype=torch.bool)
    shapes = [(b, h, n, d)] * 3
    plain = backward_peak(lambda q, k, v: attention._sdpa(q, k, v), *shapes)
    masked = backward_peak(lambda q, k, v: attention._sdpa(q, k, v, attn_mask=mask), *shapes)
    bare = backward_peak(lambda q, k, v: Bare.apply(q, k, v, None, None, None), *shapes)
    assert masked - bare == 4 * b * h * n  # delta (float32); the bias was saved in the forward
    assert plain - bare == 4 * b * h * n + 4 * b * n * h * d  # the flash backend: softmax_d and dq_accum


def test_the_planner_runs_the_recipes_attention(tmp_path):
    calls = {"dense": 0, "varlen": 0}
    original = attention.FlashKernel.forward

    def counting(ctx, q, k, v, version, batch, longest):
        calls["dense" if batch is None else "varlen"] += 1
        return original(ctx, q, k, v, version, batch, longest)

    with mock.patch.object(attention.FlashKernel, "forward", staticmethod(counting)):
        flash = simulate(*recipe(tmp_path, "flash_attention_2"), 1, 1024, target="cuda", shape=UNEQUAL)
    assert calls["varlen"] > 0 and calls["dense"] == 0  # a padded pair: transformers unpads, the varlen kernel runs
    sdpa = simulate(*recipe(tmp_path, "sdpa"), 1, 1024, target="cuda", shape=UNEQUAL)
    assert flash.attention == "flash_attention_2" and sdpa.attention == "sdpa"
    assert sdpa.peak_bytes > flash.peak_bytes  # the [2, 1, T, T] mask and its bf16 bias
    with pytest.raises(RecipeError, match="CUDA only"):
        simulate(*recipe(tmp_path, "flash_attention_2"), 1, 256, target="cpu")
    with pytest.raises(NotImplementedError, match="flex"):
        simulate(*recipe(tmp_path, "flex_attention"), 1, 256, target="cuda")


def test_a_long_padded_pair_under_sdpa_plans_the_mask_free_path(tmp_path):
    """Above the mask limit the trainer runs each sequence alone (alignment.long_context.unmasked): the plan then
    holds no [2, 1, T, T] mask; with the limit lifted it holds the mask and its bias."""
    length = 2048
    mask = 2 * length * length
    with mock.patch.object(unmasked, "MASK_LIMIT_BYTES", 1 << 40):
        masked = simulate(*recipe(tmp_path, "sdpa"), 1, length, target="cuda", shape=UNEQUAL)
    with mock.patch.object(unmasked, "MASK_LIMIT_BYTES", mask // 4):
        alone = simulate(*recipe(tmp_path, "sdpa"), 1, length, target="cuda", shape=UNEQUAL)
    assert masked.step_peak_bytes - alone.step_peak_bytes >= mask  # at least the boolean mask itself
    for plan in (masked, alone):
        assert sum(plan.breakdown.values()) == plan.peak_bytes
