"""The StableMax normalizer (arXiv 2501.04697) in the fused op's three paths, against the float64 twin
(full logits, s(z) / sum s(z)): log-probabilities, lse and every gradient, with whole and tiled vocabularies,
under softcap, and inside the pair-fused path (one pass and two passes)."""

import pytest
import torch

from alignment.ops import pair_fused_loss, token_logps
from alignment.ops.reference import reference_pair_loss, reference_token_logps
from alignment.ops.tiles import stablemax, stablemax_slope, stablemax_slope_tile, stablemax_tile_sum
from tests.helpers import dpo_fn, make_pairs, rel_err


def test_stablemax_by_hand():
    x = torch.tensor([-3.0, -0.5, 0.0, 2.0])
    assert torch.allclose(stablemax(x), torch.tensor([0.25, 1 / 1.5, 1.0, 3.0]))
    # p = s(z) / sum s(z): [0.25, 0.6667, 1, 3] / 4.9167
    out = token_logps(x.view(1, 4), torch.eye(4), torch.tensor([3]), normalizer="stablemax")
    assert out.logps.item() == pytest.approx(torch.log(torch.tensor(3.0 / (0.25 + 1 / 1.5 + 1 + 3))).item(), rel=1e-6)


@pytest.mark.parametrize("block", [3, 8, 64])
def test_tiles_by_column_blocks_equal_whole(block):
    """The kernel's StableMax tile sums and slopes go by column blocks (temporaries [n, block]): same values."""
    z = torch.randn(5, 37, dtype=torch.float64) * 3
    assert torch.allclose(stablemax_tile_sum(z, block), stablemax(z).sum(dim=1), rtol=1e-12)
    assert torch.equal(stablemax_slope_tile(z, block), stablemax_slope(z))


def data(seed, n=12, h=8, v=37, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h, generator=gen, dtype=dtype) * 2
    weight = torch.randn(v, h, generator=gen, dtype=dtype)
    bias = torch.randn(v, generator=gen, dtype=dtype)
    targets = torch.randint(0, v, (n,), generator=gen)
    targets[::5] = -100
    return hidden, weight, bias, targets


@pytest.mark.parametrize("frozen", [False, True])
@pytest.mark.parametrize("kw", [{}, {"vocab_chunk": 10, "token_chunk": 5}, {"softcap": 3.0, "temperature": 0.7}])
def test_token_logps_and_gradients_match_the_twin(frozen, kw):
    if frozen and "vocab_chunk" in kw:
        kw = {"token_chunk": 5}  # the frozen path takes whole vocabulary rows
    hidden, weight, bias, targets = data(1)
    leaves = [x.clone().requires_grad_(not frozen or i == 0) for i, x in enumerate((hidden, weight, bias))]
    out = token_logps(leaves[0], leaves[1], targets, bias=leaves[2], normalizer="stablemax", collapsed=True, **kw)
    assert out.path == ("frozen" if frozen else "general")
    twin_leaves = [x.clone().requires_grad_(not frozen or i == 0) for i, x in enumerate((hidden, weight, bias))]
    logit_kw = {k: v for k, v in kw.items() if k in ("softcap", "temperature")}
    ref = reference_token_logps(*twin_leaves[:2], targets, twin_leaves[2], normalizer="stablemax", **logit_kw)
    assert rel_err(out.logps, ref["logps"]) <= 1e-10 and rel_err(out.lse, ref["lse"]) <= 1e-10
    assert torch.equal(out.collapsed, ref["collapsed"])
    coef = torch.linspace(-1, 2, targets.numel(), dtype=torch.float64)
    mine = torch.autograd.grad(((out.logps + 0.3 * out.lse) * coef).sum(), [x for x in leaves if x.requires_grad])
    theirs = torch.autograd.grad(
        ((ref["logps"] + 0.3 * ref["lse"]) * coef).sum(), [x for x in twin_leaves if x.requires_grad]
    )
    for a, b in zip(mine, theirs):
        assert rel_err(a, b) <= 1e-9


def test_differs_from_softmax_and_refuses_what_it_lacks():
    hidden, weight, bias, targets = data(2)
    soft = token_logps(hidden, weight, targets, bias=bias)
    stable = token_logps(hidden, weight, targets, bias=bias, normalizer="stablemax")
    assert not torch.allclose(soft.logps, stable.logps)
    with pytest.raises(NotImplementedError, match="StableMax"):
        token_logps(hidden, weight, targets, bias=bias, normalizer="stablemax", entropy=True)
    with pytest.raises(ValueError, match="normalizer must be one of"):
        token_logps(hidden, weight, targets, normalizer="sparsemax")


@pytest.mark.parametrize("token_chunk", [None, 30, 7])  # one pass, several chunks, two-pass pairs
def test_pair_fused_matches_the_twin(token_chunk):
    hidden, weight, bias, targets, ref = make_pairs(3, 3, 12, 16, 61, torch.float64)
    leaves = [x.clone().requires_grad_() for x in (hidden, weight, bias)]
    out = pair_fused_loss(leaves[0], leaves[1], targets, dpo_fn(ref), bias=leaves[2], normalizer="stablemax",
                          token_chunk=token_chunk)  # fmt: skip
    twin = [x.clone().requires_grad_() for x in (hidden, weight, bias)]
    ref_loss, _ = reference_pair_loss(twin[0], twin[1], targets, dpo_fn(ref), bias=twin[2], normalizer="stablemax")
    assert abs(out.loss.item() - ref_loss.item()) <= 1e-10 * max(1.0, abs(ref_loss.item()))
    for a, b in zip(torch.autograd.grad(out.loss, leaves), torch.autograd.grad(ref_loss, twin)):
        assert rel_err(a, b) <= 1e-9


def test_float32_inputs_within_1e5_of_the_float64_twin():
    hidden, weight, bias, targets, ref = make_pairs(4, 3, 12, 16, 61, torch.float32)
    leaves = [x.clone().requires_grad_() for x in (hidden, weight, bias)]
    out = pair_fused_loss(leaves[0], leaves[1], targets, dpo_fn(ref), bias=leaves[2], normalizer="stablemax")
    twin = [x.double().requires_grad_() for x in (hidden, weight, bias)]
    ref_loss, _ = reference_pair_loss(twin[0], twin[1], targets, dpo_fn(ref), bias=twin[2], normalizer="stablemax")
    assert abs(out.loss.item() - ref_loss.item()) <= 1e-5 * max(1.0, abs(ref_loss.item()))
    for a, b in zip(torch.autograd.grad(out.loss, leaves), torch.autograd.grad(ref_loss, twin)):
        assert a.dtype == torch.float32 and rel_err(a, b) <= 1e-5
