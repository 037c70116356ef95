"""The fused op against its plain twin (ops/reference.py) and the three paths against each other."""

import pytest
import torch

from alignment.ops import KernelOptions, token_logps
from alignment.ops.reference import reference_token_logps
from tests.helpers import FRESH_SEED, OUTPUTS, make, output_err, rel_err, run_op, run_reference

SEEDS = [0, 1, 2, FRESH_SEED]


SHAPES = [(1, 8, 5), (7, 16, 33), (50, 24, 257), (129, 32, 1000)]
LOGITS = [{}, {"temperature": 0.7}, {"logit_scale": 1.7, "softcap": 4.0}, {"softcap": 2.5, "temperature": 1.3}]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("path", ["general", "frozen"])
@pytest.mark.parametrize("shape", SHAPES, ids=[f"n{s[0]}_h{s[1]}_v{s[2]}" for s in SHAPES])
@pytest.mark.parametrize("chunks", [{}, {"token_chunk": 3, "vocab_chunk": 7}], ids=["auto", "tiny_chunks"])
def test_float32_matches_float64_reference(seed, path, shape, chunks):
    n, h, v = shape
    logit_kw = LOGITS[seed % len(LOGITS)]
    inputs = make(seed, n, h, v)
    out, grads, ups = run_op(*inputs, path, **chunks, **logit_kw)
    ref, ref_grads = run_reference(*inputs, path, ups, **logit_kw)
    assert out.path == path
    for key in OUTPUTS:
        assert getattr(out, key).dtype == torch.float32
        assert output_err(out, ref, key) <= 1e-5, (key, seed)
    assert torch.equal(out.collapsed, ref["collapsed"])
    for g, r in zip(grads, ref_grads):
        assert rel_err(g, r) <= 1e-5, seed


@pytest.mark.parametrize("path", ["general", "frozen"])
def test_masked_rows_get_zeros_and_zero_gradients(path):
    hidden, weight, bias, targets, ref_hidden = make(0, 20, 8, 40, masked=0.5)
    out, grads, _ = run_op(hidden, weight, bias, targets, ref_hidden, path)
    masked = targets == -100
    for key in OUTPUTS:
        assert torch.all(getattr(out, key)[masked] == 0)
    assert not out.collapsed[masked].any()
    assert torch.all(grads[0][masked] == 0) and grads[0][~masked].abs().sum() > 0


@pytest.mark.parametrize("path", ["general", "frozen"])
def test_every_row_masked(path):
    hidden, weight, bias, targets, ref_hidden = make(0, 6, 8, 40)
    targets[:] = -100
    out, grads, _ = run_op(hidden, weight, bias, targets, ref_hidden, path)
    for key in OUTPUTS:
        assert torch.all(getattr(out, key) == 0)
    for g in grads:
        assert torch.all(g == 0) and not torch.isnan(g).any()


@pytest.mark.parametrize("path", ["general", "frozen"])
@pytest.mark.parametrize("seed", [0, FRESH_SEED])
def test_bfloat16_inputs(path, seed):
    hidden, weight, bias, targets, ref_hidden = make(seed, 40, 32, 300, dtype=torch.bfloat16)
    out, grads, ups = run_op(hidden, weight, bias, targets, ref_hidden, path)
    ref, ref_grads = run_reference(hidden, weight, bias, targets, ref_hidden, path, ups)
    for key in OUTPUTS:
        assert getattr(out, key).dtype == torch.float32
        assert output_err(out, ref, key) <= 1e-2, key
    for g, r in zip(grads, ref_grads):
        assert g.dtype == torch.bfloat16
        assert rel_err(g, r) <= 1e-2


@pytest.mark.parametrize("path", ["general", "frozen"])
@pytest.mark.parametrize("logit_kw", [{}, {"softcap": 1.5, "temperature": 0.8, "logit_scale": 1.2}])
def test_gradcheck_float64(path, logit_kw):
    hidden, weight, bias, targets, ref_hidden = make(3, 5, 4, 11, dtype=torch.float64, masked=0.2)
    targets[0] = 2  # at least one scored row
    h = hidden.clone().requires_grad_()
    w = weight.clone().requires_grad_(path == "general")
    b = bias.clone().requires_grad_(path == "general")

    ref_weight = weight.clone()  # a fixed reference head: gradcheck's perturbations of w must not move it

    def fn(h, w, b):
        out = token_logps(
            h,
            w,
            targets,
            bias=b,
            entropy=True,
            ref_hidden=ref_hidden,
            ref_weight=ref_weight,
            path=path,
            vocab_chunk=4,
            token_chunk=2,
            **logit_kw,
        )
        return out.logps, out.lse, out.entropy, out.kl_ref

    assert torch.autograd.gradcheck(fn, (h, w, b), eps=1e-6, atol=1e-7)


def test_paths_agree_with_each_other():
    hidden, weight, bias, targets, ref_hidden = make(5, 64, 16, 120)
    g, g_grads, _ = run_op(hidden, weight, bias, targets, ref_hidden, "general", vocab_chunk=50)
    f, f_grads, _ = run_op(hidden, weight, bias, targets, ref_hidden, "frozen")
    for key in OUTPUTS:
        assert rel_err(getattr(f, key), getattr(g, key)) <= 1e-5
    assert rel_err(f_grads[0], g_grads[0]) <= 1e-5


def test_kl_ref_equals_naive_full_vocabulary_kl():
    hidden, weight, _, targets, ref_hidden = make(7, 30, 16, 77, masked=0.0)
    ref_weight = weight + 0.1 * torch.randn_like(weight)
    out = token_logps(hidden, weight, targets, ref_hidden=ref_hidden, ref_weight=ref_weight, vocab_chunk=20)
    logp = torch.log_softmax(hidden.double() @ weight.double().t(), -1)
    logq = torch.log_softmax(ref_hidden.double() @ ref_weight.double().t(), -1)
    naive = torch.nn.functional.kl_div(logp, logq, log_target=True, reduction="none").sum(-1)  # KL(q || p)
    assert rel_err(out.kl_ref, naive) <= 1e-5
    assert torch.all(out.kl_ref >= -1e-6)
    same = token_logps(hidden, weight, targets, ref_hidden=hidden)
    assert same.kl_ref.abs().max() < 1e-5  # KL of a distribution to itself


def test_collapsed_flags_on_constructed_logits():
    # logits = hidden (identity head): row 0 has one logit 200 above the rest (every other exp underflows in
    # float32), row 1 is ordinary, row 2 is collapsed by a large temperature-free gap in the middle.
    v = 10
    hidden = torch.zeros(3, v)
    hidden[0, 3] = 200.0
    hidden[1] = torch.linspace(0, 1, v)
    hidden[2, 7] = 120.0
    weight = torch.eye(v)
    targets = torch.tensor([3, 4, 1])
    for path_kw in ({"path": "general", "vocab_chunk": 4}, {"path": "frozen"}):
        out = token_logps(hidden, weight, targets, collapsed=True, **path_kw)
        assert out.collapsed.tolist() == [True, False, True]
    assert reference_token_logps(hidden, weight, targets)["collapsed"].tolist() == [True, False, True]
    # a collapsed row gives the target exactly log p = 0 and no gradient signal to its competitors
    assert token_logps(hidden, weight, targets).logps[0].item() == 0.0


def test_batched_shapes_are_kept():
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 5, 8, generator=gen)
    weight = torch.randn(20, 8, generator=gen)
    targets = torch.randint(0, 20, (3, 5), generator=gen)
    out = token_logps(hidden, weight, targets, entropy=True)
    assert out.logps.shape == (3, 5) and out.entropy.shape == (3, 5)
    ref = reference_token_logps(hidden, weight, targets)
    assert rel_err(out.logps, ref["logps"]) <= 1e-5


def test_detached_extras_have_no_gradient():
    hidden, weight, _, targets, ref_hidden = make(1, 10, 8, 30, masked=0.0)
    h = hidden.clone().requires_grad_()
    out = token_logps(h, weight, targets, entropy=True, ref_hidden=ref_hidden, extras_grad=False)
    assert out.logps.requires_grad and not out.entropy.requires_grad and not out.kl_ref.requires_grad


def test_bad_arguments_raise_clear_errors():
    hidden, weight, _, targets, _ = make(0, 4, 8, 10)
    with pytest.raises(ValueError, match="disagree"):
        token_logps(hidden, weight, targets[:3])
    with pytest.raises(ValueError, match=r"weight must be \[V, H\]"):
        token_logps(hidden, weight[:, :4], targets)
    with pytest.raises(ValueError, match="targets must be in"):
        token_logps(hidden, weight, torch.full((4,), 10))
    with pytest.raises(ValueError, match="path"):
        token_logps(hidden, weight, targets, path="fast")
    with pytest.raises(ValueError, match="Triton is a backend of every path, not a path: pass backend='triton'"):
        token_logps(hidden, weight, targets, path="triton")
    with pytest.raises(ValueError, match="frozen"):
        token_logps(hidden, weight.requires_grad_(), targets, path="frozen")
    with pytest.raises(ValueError, match="temperature"):
        KernelOptions(temperature=0)
    with pytest.raises(ValueError, match="softcap"):
        KernelOptions(softcap=-1.0)


def test_chunks_follow_the_memory_budget():
    opts = KernelOptions(memory_budget=4 * 1000 * 64)
    assert opts.chunks(10_000, 1000, buffers=1) == (64, 1000)
    assert opts.chunks(10, 1000, buffers=1) == (10, 1000)
    # too few whole rows fit: the general path tiles the vocabulary too
    tc, vc = KernelOptions(memory_budget=4 * 100_000).chunks(10_000, 200_000, buffers=1)
    assert vc < 200_000 and tc * vc * 4 <= 4 * 100_000 * 2
    # the fused paths always take whole rows
    assert KernelOptions(memory_budget=4 * 100).chunks(50, 1000, buffers=1, full_vocab=True) == (1, 1000)


@pytest.mark.parametrize("block", [7, 64, 100_000])
def test_row_dot_by_column_blocks_equals_the_float64_dot(block):
    """row_dot sums [n, block] products block by block (no whole-tile temporary): same value at any block."""
    from alignment.ops.tiles import row_dot

    g = torch.Generator().manual_seed(FRESH_SEED)
    a, b = torch.randn(5, 1000, generator=g), torch.randn(5, 1000, generator=g)
    expected = (a.double() * b.double()).sum(dim=1)
    assert rel_err(row_dot(a, b, block=block).double(), expected) < 1e-5


def test_one_kernel_options_argument_equals_the_keywords():
    import pytest as _pytest

    from alignment.ops import KernelOptions, pair_fused_loss, token_logps
    from tests.helpers import make, make_pairs
    from tests.ops.test_pair_fused import dpo_fn

    hidden, weight, bias, targets, _ = make(0, 12, 8, 50)
    keywords = dict(temperature=0.7, softcap=2.0, token_chunk=5, vocab_chunk=17)
    a = token_logps(hidden, weight, targets, bias=bias, **keywords)
    b = token_logps(hidden, weight, targets, bias=bias, options=KernelOptions(**keywords))
    assert torch.equal(a.logps, b.logps) and torch.equal(a.lse, b.lse)
    with _pytest.raises(ValueError, match="not both"):
        token_logps(hidden, weight, targets, temperature=0.5, options=KernelOptions())
    h, w, bb, t, ref = make_pairs(0, 2, 6, 8, 40)
    x = pair_fused_loss(h, w, t, dpo_fn(ref), bias=bb, token_chunk=5, temperature=0.8)
    y = pair_fused_loss(h, w, t, dpo_fn(ref), bias=bb, options=KernelOptions(token_chunk=5, temperature=0.8))
    assert torch.equal(x.loss, y.loss)
