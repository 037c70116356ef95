"""The mask-free path of sdpa / eager attention (alignment.long_context.unmasked): a padded pair or packed rows
whose [N, 1, T, T] mask would pass the limit run one sequence at a time, with the padded batch's loss and
gradients, and no T x T tensor is made."""

import copy
import os
from unittest import mock

import pytest
import torch

from alignment.long_context import unmasked
from alignment.trainers import get_method
from tests.helpers import preference_rows, tiny_llama, train_args


@pytest.fixture(scope="module")
def tiny(tokenizer):
    return tiny_llama(len(tokenizer), hidden=32, layers=2)


class Largest(torch.utils._python_dispatch.TorchDispatchMode):
    """Every (rows, T) of an op's output that spans several rows and whose last two dimensions are T x T (a
    batch's mask or attention weights)."""

    def __init__(self):
        super().__init__()
        self.squares = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.dim() == 4 and t.shape[0] > 1 and t.shape[-1] == t.shape[-2]:
                self.squares.add(t.shape[-1])
        return out


def one_step(tiny, tokenizer, data_dir, tmp_path, limit, attention="sdpa", **kw):
    method = get_method("dpo")
    config = train_args(method.config, tmp_path, max_steps=1, per_device_train_batch_size=4, diagnostics=False, **kw)
    model = copy.deepcopy(tiny)
    model.config._attn_implementation = attention
    trainer = method.trainer(model, args=config, train_dataset=preference_rows(data_dir), processing_class=tokenizer)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    assert not bool(batch["attention_mask"].all())  # unequal completions: the batch is padded
    with mock.patch.object(unmasked, "MASK_LIMIT_BYTES", limit), Largest() as seen:
        loss = trainer.compute_loss(trainer.model, batch)
        loss.backward()
    grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    return loss.detach(), grads, seen.squares, batch["input_ids"].shape[1]


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_rows_alone_equal_the_padded_batch(attention, tiny, tokenizer, data_dir, tmp_path):
    loss, grads, square, length = one_step(tiny, tokenizer, data_dir, tmp_path / "a", 1 << 40, attention)
    assert length in square  # the padded batch builds a T x T mask
    alone_loss, alone_grads, alone_square, _ = one_step(tiny, tokenizer, data_dir, tmp_path / "b", 0, attention)
    assert length not in alone_square  # no T x T tensor at all spanning the rows
    assert alone_loss.item() == pytest.approx(loss.item(), rel=1e-5)
    for name, grad in grads.items():
        assert torch.allclose(alone_grads[name], grad, rtol=1e-4, atol=1e-6), name


def test_packed_rows_take_the_same_path(tiny, tokenizer, data_dir, tmp_path):
    loss, grads, _, length = one_step(tiny, tokenizer, data_dir, tmp_path / "a", 1 << 40)
    packed_loss, packed_grads, square, _ = one_step(tiny, tokenizer, data_dir, tmp_path / "b", 0, padding_free=True)
    assert length not in square
    assert packed_loss.item() == pytest.approx(loss.item(), rel=1e-5)
    for name, grad in grads.items():
        assert torch.allclose(packed_grads[name], grad, rtol=1e-4, atol=1e-6), name


def test_mask_size_follows_the_implementation(tiny):
    mask = torch.ones(2, 1000, dtype=torch.long)
    mask[1, 900:] = 0
    model = copy.deepcopy(tiny).model
    model.config._attn_implementation = "sdpa"
    assert unmasked.mask_bytes(model, mask, None) == 2 * 1000 * 1000
    model.config._attn_implementation = "flash_attention_2"
    assert unmasked.mask_bytes(model, mask, None) == 0
    model.config._attn_implementation = "eager"
    assert unmasked.mask_bytes(model, mask, None) == 2 * 1000 * 1000 * 4  # float32 mask
    with mock.patch.object(unmasked, "MASK_LIMIT_BYTES", 0):
        model.config._attn_implementation = "sdpa"
        assert unmasked.mask_bytes(model, torch.ones(2, 1000, dtype=torch.long), None) == 0  # unpadded: no mask


def test_long_context_runs_set_expandable_segments(monkeypatch, tmp_path):
    """A long-context config sets PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True unless the user set the
    allocator; the banner's long-context line names the setting; other runs leave it alone."""
    from alignment.long_context.allocator import SETTING
    from alignment.trainers.banner import long_context_summary
    from alignment.trainers.builtin.dpo import DPOConfig

    for name in ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF"):
        monkeypatch.delenv(name, raising=False)
    plain = train_args(DPOConfig, tmp_path)
    assert "PYTORCH_CUDA_ALLOC_CONF" not in os.environ and long_context_summary(plain) == "off"
    long = train_args(DPOConfig, tmp_path, activation_offloading=True)
    assert os.environ["PYTORCH_CUDA_ALLOC_CONF"] == SETTING
    assert f"allocator PYTORCH_CUDA_ALLOC_CONF={SETTING}" in long_context_summary(long)
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "max_split_size_mb:512")
    mine = train_args(DPOConfig, tmp_path, tiled_mlp=True)
    assert os.environ["PYTORCH_CUDA_ALLOC_CONF"] == "max_split_size_mb:512"
    assert "max_split_size_mb:512" in long_context_summary(mine)
