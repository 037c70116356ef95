"""The attention a recipe runs, as the planner counts it on a GPU: what each implementation allocates, on fake
tensors, with transformers' own code around the kernel (its masks, unpadding and head repetition run as they are).

- ``flash_attention_2`` / ``flash_attention_3``: transformers' ``_flash_attention_forward`` runs unchanged (the
  unpadding copies of q, k, v when the batch is padded, ``pad_input`` of the output, the packed path of a
  padding-free row); only the kernels are replaced by :class:`FlashKernel`, which allocates what the CUDA kernels
  allocate (flash-attention's ``csrc/flash_attn/flash_api.cpp`` for FA2, ``hopper/flash_api.cpp`` for FA3):

  - forward: the output (q's shape) and ``softmax_lse`` float32 [B, H, L] (varlen: [H, total]), both saved;
  - backward (FA2): dq, dk, dv; ``softmax_d`` float32 [B, H, L rounded to 128]; ``dq_accum`` float32
    [B, L rounded, H, d] (varlen: [H, total + 128 B, d]); with grouped heads (H_kv < H) ``dk_expanded`` and
    ``dv_expanded`` [B, L, H, d] in the input's dtype, summed into dk, dv;
  - backward (FA3): dq, dk, dv; ``softmax_d`` and ``softmax_lse_log2`` float32 [B, H, L rounded];
    ``dq_accum`` float32 [B, H, L rounded x d]; with grouped heads ``dk_accum`` and ``dv_accum`` float32
    [B, H_kv, L rounded x d].

- ``sdpa``: transformers' ``sdpa_attention_forward`` runs unchanged (``repeat_kv`` copies when it cannot pass
  ``enable_gqa``, i.e. with a mask); ``torch.nn.functional.scaled_dot_product_attention`` is :class:`SdpaKernel`,
  the backend torch picks on CUDA: without a mask its flash backend (the FA2 kernels above, dense), with a mask the
  memory-efficient backend, which converts a boolean mask into an additive bias in the query's dtype
  (``convert_boolean_attn_mask``: [B, 1, L, L], saved for the backward), saves ``logsumexp`` float32
  [B, H, L rounded to 32], and allocates dq, dk, dv and a float32 ``delta`` [B, H, L] in the backward.
  The mask itself is transformers' (``sdpa_mask``: a boolean [B, 1, L, L] when the batch has padding).

- ``eager``: transformers' eager attention on the fake tensors as it is (its [B, H, L, L] weights included).

On the CPU (``use_cpu`` recipes) sdpa runs as torch's CPU kernels do on fake tensors (what the CPU calibration
measures); flash attention does not run on a CPU and is refused there; flex attention is not counted yet.
"""

from __future__ import annotations

import contextlib
from unittest import mock

import torch

from alignment.errors import RecipeError

IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2", "flash_attention_3")
FLASH = ("flash_attention_2", "flash_attention_3")


def recipe_attention(config) -> str:
    """The attention implementation a recipe loads its model with (``model_init_kwargs``; transformers' default
    for these models is sdpa)."""
    return str((getattr(config, "model_init_kwargs", None) or {}).get("attn_implementation") or "sdpa")


def check(attention: str, target: str) -> None:
    """Refuse, in one line, an implementation the planner cannot count on ``target``."""
    if attention.startswith("flex"):
        raise NotImplementedError(f"attn_implementation {attention!r}: the planner does not count flex attention's "
                                  "block masks and kernels yet; plan with sdpa or flash_attention_2")  # fmt: skip
    if attention not in IMPLEMENTATIONS:
        raise RecipeError(f"attn_implementation {attention!r}: the planner counts {', '.join(IMPLEMENTATIONS)}")
    if attention in FLASH and target != "cuda":
        raise RecipeError(f"attn_implementation {attention}: flash attention runs on CUDA only; plan the GPU step "
                          "(--target cuda, the default for a recipe without use_cpu)")  # fmt: skip


def _round(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


class FlashKernel(torch.autograd.Function):
    """FlashAttention's forward and backward as their allocations (module docstring). q [B, L, H, d] (dense) or
    [total, H, d] (varlen, ``batch`` sequences of at most ``longest`` tokens); k, v with H_kv heads."""

    @staticmethod
    def forward(ctx, q, k, v, version: int, batch: int | None, longest: int | None):
        out = torch.empty_like(q, memory_format=torch.contiguous_format)
        if batch is None:
            lse = q.new_empty((q.shape[0], q.shape[2], q.shape[1]), dtype=torch.float32)
        else:
            lse = q.new_empty((q.shape[1], q.shape[0]), dtype=torch.float32)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.version, ctx.batch, ctx.longest = version, batch, longest
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, _out, _lse = ctx.saved_tensors
        dq, dk, dv = (torch.empty_like(t, memory_format=torch.contiguous_format) for t in (q, k, v))
        heads, kv, d = q.shape[-2], k.shape[-2], _round(q.shape[-1], 8)
        grouped = kv != heads
        f32 = {"dtype": torch.float32}
        if ctx.batch is None:  # dense [B, L, H, d]
            b, n, nk = q.shape[0], _round(q.shape[1], 128), _round(k.shape[1], 128)
            if ctx.version == 2:
                work = [q.new_empty((b, heads, n), **f32), q.new_empty((b, n, heads, d), **f32)]
                if grouped:
                    work += [q.new_empty((b, k.shape[1], heads, k.shape[-1])) for _ in range(2)]
            else:
                work = [q.new_empty((b, heads, n), **f32) for _ in range(2)] + [q.new_empty((b, heads, n * d), **f32)]
                if grouped:
                    work += [q.new_empty((b, kv, nk * d), **f32) for _ in range(2)]
        else:  # varlen [total, H, d]
            b, n, total, total_k = ctx.batch, _round(ctx.longest, 128), q.shape[0], k.shape[0]
            padded = _round(total + 128 * b, 128)
            if ctx.version == 2:
                work = [q.new_empty((b, heads, n), **f32), q.new_empty((heads, total + 128 * b, d), **f32)]
                if grouped:
                    work += [q.new_empty((total_k, heads, k.shape[-1])) for _ in range(2)]
            else:
                work = [q.new_empty((heads, padded), **f32) for _ in range(2)]
                work += [q.new_empty((heads, padded * d), **f32)]
                if grouped:
                    work += [q.new_empty((kv, _round(total_k + 128 * b, 128) * d), **f32) for _ in range(2)]
        del work
        return dq, dk, dv, None, None, None


def _flash_functions(version: int):
    """(flash_attn_func, flash_attn_varlen_func) with the signatures transformers inspects, on FlashKernel."""

    def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                        softcap=0.0, deterministic=False, **kwargs):  # fmt: skip
        return FlashKernel.apply(q, k, v, version, None, None)

    def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                               softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0,
                               deterministic=False, **kwargs):  # fmt: skip
        return FlashKernel.apply(q, k, v, version, int(cu_seqlens_q.shape[0]) - 1, int(max_seqlen_q))

    return flash_attn_func, flash_attn_varlen_func


class SdpaKernel(torch.autograd.Function):
    """torch's CUDA scaled_dot_product_attention as its allocations (module docstring). q [B, H, L, d]."""

    @staticmethod
    def forward(ctx, q, k, v, bias):
        out = torch.empty_like(q, memory_format=torch.contiguous_format)
        b, h, n = q.shape[0], q.shape[1], q.shape[2]
        if bias is None:  # flash backend
            lse = q.new_empty((b, h, n), dtype=torch.float32)
        else:  # memory-efficient backend
            lse = q.new_empty((b, h, _round(n, 32)), dtype=torch.float32)
        ctx.save_for_backward(q, k, v, out, lse, bias)
        ctx.masked = bias is not None
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, _out, _lse, _bias = ctx.saved_tensors
        dq, dk, dv = (torch.empty_like(t, memory_format=torch.contiguous_format) for t in (q, k, v))
        b, h, n, d = q.shape[0], q.shape[1], q.shape[2], _round(q.shape[3], 8)
        if ctx.masked:
            work = [q.new_empty((b, h, n), dtype=torch.float32)]
        else:
            rounded = _round(n, 128)
            work = [
                q.new_empty((b, h, rounded), dtype=torch.float32),
                q.new_empty((b, rounded, h, d), dtype=torch.float32),
            ]
            if k.shape[1] != h:  # enable_gqa: the flash kernel's expanded dk, dv
                work += [q.new_empty((b, k.shape[2], h, k.shape[3])) for _ in range(2)]
        del work
        return dq, dk, dv, None


def _sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    bias = None
    if attn_mask is not None:
        bias = attn_mask if attn_mask.dtype != torch.bool else query.new_empty(attn_mask.shape)
    return SdpaKernel.apply(query, key, value, bias)


@contextlib.contextmanager
def gpu_attention(attention: str, model):
    """Within the block the model's attention allocates what ``attention`` allocates on a GPU (module docstring)."""
    if attention in FLASH:
        from transformers import modeling_flash_attention_utils as fa

        version = 2 if attention == "flash_attention_2" else 3
        flash, varlen = _flash_functions(version)
        imports = lambda *args, **kwargs: (flash, varlen, None, fa._pad_input, fa._unpad_input)  # noqa: E731
        configs = [m.config for m in model.modules() if hasattr(m, "config")]
        before = [c._attn_implementation_internal for c in configs]
        for c in configs:
            c._attn_implementation_internal = attention  # transformers' check wants the package installed
        try:
            with mock.patch.object(fa, "_lazy_imports", imports), mock.patch.object(fa, "_loaded_implementation", None):
                yield
        finally:
            for c, value in zip(configs, before):
                c._attn_implementation_internal = value
        return
    if attention == "sdpa":
        from transformers.integrations import sdpa_attention

        with mock.patch.object(sdpa_attention.torch.nn.functional, "scaled_dot_product_attention", _sdpa):
            yield
        return
    yield
