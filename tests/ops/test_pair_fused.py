"""The pair-fused path: a preference loss evaluated inside the op, gradients formed in the forward."""

import pytest
import torch

from alignment.losses import dpo_loss
from alignment.ops import pair_fused_loss, token_logps
from alignment.ops.pair_fused import plan_chunks
from alignment.ops.reference import reference_pair_loss
from tests.helpers import FRESH_SEED, dpo_fn, make_pairs, rel_err


def token_level_fn(ref):
    """A loss that uses per-token entropy and KL too (as SparsePO-like losses do)."""
    base = dpo_fn(ref)

    def loss_fn(chunk):
        loss, metrics = base(chunk)
        extra = 0.01 * chunk.token_entropy.sum() + 0.05 * (chunk.token_kl * chunk.token_chosen).sum()
        return loss + extra / ref.shape[1], metrics

    return loss_fn


def grads_of(loss, tensors):
    return torch.autograd.grad(loss, tensors)


def compare(seed, b, t, h, v, fn_factory=dpo_fn, kl=False, dtype=torch.float32, tol=1e-5, **kw):
    hidden, weight, bias, targets, ref = make_pairs(seed, b, t, h, v, dtype)
    ref_hidden = torch.randn_like(hidden) if kl else None
    leaves = [x.clone().requires_grad_() for x in (hidden, weight, bias)]
    logit_kw = {k: kw[k] for k in ("temperature", "softcap", "logit_scale") if k in kw}
    out = pair_fused_loss(
        leaves[0],
        leaves[1],
        targets,
        fn_factory(ref),
        bias=leaves[2],
        entropy=kl,
        ref_hidden=ref_hidden,
        ref_weight=weight.clone() if kl else None,
        **kw,
    )
    grads = grads_of(out.loss * 1.3, leaves)
    dleaves = [x.double().requires_grad_() for x in (hidden, weight, bias)]
    ref_loss, ref_metrics = reference_pair_loss(
        dleaves[0],
        dleaves[1],
        targets,
        fn_factory(ref),
        bias=dleaves[2],
        ref_hidden=None if ref_hidden is None else ref_hidden.double(),
        ref_weight=weight.double() if kl else None,
        **logit_kw,
    )
    ref_grads = grads_of(ref_loss * 1.3, dleaves)
    assert abs(out.loss.item() - ref_loss.item()) <= tol * max(1.0, abs(ref_loss.item()))
    for g, r in zip(grads, ref_grads):
        assert g.dtype == dtype
        assert rel_err(g, r) <= tol
    for key, value in ref_metrics.items():
        assert rel_err(out.metrics[key], value) <= max(tol, 1e-5) * 10, key
    return out


@pytest.mark.parametrize("seed", [0, 1, FRESH_SEED])
@pytest.mark.parametrize(
    "shape_kw",
    [
        ((1, 1, 8, 5), {}),
        ((3, 9, 16, 53), {}),
        ((4, 12, 16, 130), {"token_chunk": 30}),  # several chunks of whole pairs
        ((2, 20, 8, 64), {"token_chunk": 7}),  # every pair longer than the chunk: two-pass path
        ((3, 10, 8, 40), {"softcap": 2.0, "temperature": 0.6, "logit_scale": 1.5}),
    ],
    ids=["tiny", "plain", "multi_chunk", "long_pairs", "softcap_temperature"],
)
def test_dpo_through_pair_fused_matches_reference(seed, shape_kw):
    shape, kw = shape_kw
    compare(seed, *shape, **kw)


@pytest.mark.parametrize("token_chunk", [None, 9])
def test_token_level_terms_entropy_and_kl(token_chunk):
    compare(4, 3, 8, 8, 37, fn_factory=token_level_fn, kl=True, token_chunk=token_chunk)


def test_bfloat16_inputs():
    compare(2, 3, 10, 16, 90, dtype=torch.bfloat16, tol=1e-2)


def test_gradcheck_float64():
    hidden, weight, bias, targets, ref = make_pairs(6, 2, 4, 3, 9, torch.float64)
    targets[:, -1] = 1  # every sequence scores at least one token

    def fn(h, w, b):
        return pair_fused_loss(h, w, targets, dpo_fn(ref), bias=b, token_chunk=5).loss

    leaves = tuple(x.clone().requires_grad_() for x in (hidden, weight, bias))
    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-7)


def test_all_rows_masked():
    hidden, weight, bias, targets, ref = make_pairs(0, 2, 5, 8, 20)
    targets[:] = -100
    leaves = [x.clone().requires_grad_() for x in (hidden, weight, bias)]
    out = pair_fused_loss(leaves[0], leaves[1], targets, dpo_fn(ref * 0), bias=leaves[2])
    assert out.loss.item() == pytest.approx(torch.log(torch.tensor(2.0)).item())  # margin 0
    for g in grads_of(out.loss, leaves):
        assert torch.all(g == 0) and not torch.isnan(g).any()
    assert torch.all(out.token_logps == 0)


def test_equals_general_path_plus_the_same_loss():
    hidden, weight, bias, targets, ref = make_pairs(9, 4, 10, 16, 70)
    a = [x.clone().requires_grad_() for x in (hidden, weight, bias)]
    fused = pair_fused_loss(a[0], a[1], targets, dpo_fn(ref), bias=a[2], token_chunk=25)
    b = [x.clone().requires_grad_() for x in (hidden, weight, bias)]
    seq = token_logps(b[0], b[1], targets, bias=b[2], path="general").logps.sum(-1)
    losses, _ = dpo_loss(seq[:4], seq[4:], ref[0].float(), ref[1].float(), 0.3)
    general = losses.mean()
    assert abs(fused.loss.item() - general.item()) < 1e-6
    for g1, g2 in zip(grads_of(fused.loss, a), grads_of(general, b)):
        assert rel_err(g1, g2) <= 1e-5
    assert rel_err(fused.seq_logps, seq.detach()) <= 1e-6


def test_plan_chunks_keeps_pairs_whole():
    assert plan_chunks([3, 3, 3, 3], 6) == [(0, 2), (2, 4)]
    assert plan_chunks([10, 2, 2], 4) == [(0, 1), (1, 3)]
    assert plan_chunks([1, 1, 1], 100) == [(0, 3)]
    assert plan_chunks([], 5) == []


def test_bad_inputs():
    hidden, weight, _, targets, ref = make_pairs(0, 2, 5, 8, 20)
    with pytest.raises(ValueError, match=r"\[2B, T, H\]"):
        pair_fused_loss(hidden[:3], weight, targets[:3], dpo_fn(ref))
    with pytest.raises(ValueError, match="scalar"):
        pair_fused_loss(hidden, weight, targets, lambda chunk: (chunk.chosen_logps, {}))


@pytest.mark.parametrize("token_chunk", [None, 3])  # 3: every pair goes through the two-pass route
def test_collapsed_flags_equal_the_token_path(token_chunk):
    hidden, weight, bias, targets, ref = make_pairs(5, 3, 6, 8, 40)
    big = targets[0] != -100
    assert big.any()
    hidden[0, big] *= 400.0  # a huge logit margin: every other exp underflows in float32
    out = pair_fused_loss(hidden, weight, targets, dpo_fn(ref), bias=bias, token_chunk=token_chunk)
    flags = token_logps(hidden, weight, targets, bias=bias, collapsed=True).collapsed
    assert torch.equal(out.collapsed, flags)
    assert out.collapsed[0, big].all() and not out.collapsed[0, ~big].any() and not out.collapsed[1:].any()


# ----- token inputs: extra per-token tensors compacted beside the log-probabilities, with gradients ---------
def masked_dpo_fn(ref, beta=0.3):
    """DPO on mask-weighted sequence log-probabilities sum_t m_t logp_t (a SparsePO-shaped use of a token
    input that requires grad), plus a term in a second input that does not."""
    n_pairs = ref.shape[1]

    def loss_fn(chunk):
        mask, bonus = chunk.token_inputs["mask"], chunk.token_inputs["bonus"]
        chosen, rejected = chunk.token_sums(mask * chunk.token_logps)
        dt = chosen.dtype
        losses, metrics = dpo_loss(chosen, rejected, ref[0, chunk.pair_index].to(dt), ref[1, chunk.pair_index].to(dt))
        extra = (bonus * mask).sum()
        return (losses.sum() + 0.1 * extra) / n_pairs, metrics

    return loss_fn


def token_input_case(seed, b, t, h, v, dtype):
    hidden, weight, bias, targets, ref = make_pairs(seed, b, t, h, v, dtype)
    gen = torch.Generator().manual_seed(seed + 1)
    mask = torch.rand(targets.shape, generator=gen, dtype=torch.float64).to(dtype)
    bonus = torch.randn(targets.shape, generator=gen, dtype=torch.float64).to(dtype)
    return hidden, weight, bias, targets, ref, mask, bonus


@pytest.mark.parametrize("token_chunk", [None, 11, 3])  # one chunk, several chunks, two-pass pairs
@pytest.mark.parametrize("seed", [0, FRESH_SEED])
def test_token_inputs_get_the_gradients_of_autograd_through_the_twin(seed, token_chunk):
    hidden, weight, bias, targets, ref, mask, bonus = token_input_case(seed, 3, 9, 8, 37, torch.float32)
    leaves = [x.clone().requires_grad_() for x in (hidden, weight, bias, mask)]
    out = pair_fused_loss(
        leaves[0], leaves[1], targets, masked_dpo_fn(ref), bias=leaves[2],
        token_inputs={"mask": leaves[3], "bonus": bonus}, token_chunk=token_chunk,
    )  # fmt: skip
    grads = grads_of(out.loss * 1.7, leaves)
    dleaves = [x.double().requires_grad_() for x in (hidden, weight, bias, mask)]
    twin, _ = reference_pair_loss(
        dleaves[0], dleaves[1], targets, masked_dpo_fn(ref), bias=dleaves[2],
        token_inputs={"mask": dleaves[3], "bonus": bonus.double()},
    )  # fmt: skip
    twin_grads = grads_of(twin * 1.7, dleaves)
    assert abs(out.loss.item() - twin.item()) <= 1e-5 * max(1.0, abs(twin.item()))
    for g, r in zip(grads, twin_grads):
        assert rel_err(g, r) <= 1e-5
    unscored = targets == -100
    assert torch.all(grads[3][unscored] == 0) and grads[3][~unscored].abs().sum() > 0


def test_token_inputs_gradcheck_float64():
    hidden, weight, bias, targets, ref, mask, bonus = token_input_case(6, 2, 4, 3, 9, torch.float64)
    targets[:, -1] = 1  # every sequence scores at least one token

    def fn(h, w, m):
        inputs = {"mask": m, "bonus": bonus}
        return pair_fused_loss(h, w, targets, masked_dpo_fn(ref), bias=bias, token_inputs=inputs, token_chunk=5).loss

    leaves = tuple(x.clone().requires_grad_() for x in (hidden, weight, mask))
    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-7)


def test_token_inputs_without_grad_and_bad_shapes():
    hidden, weight, _, targets, ref, mask, bonus = token_input_case(2, 2, 6, 8, 20, torch.float32)
    h = hidden.clone().requires_grad_()
    out = pair_fused_loss(h, weight, targets, masked_dpo_fn(ref), token_inputs={"mask": mask, "bonus": bonus})
    twin, _ = reference_pair_loss(
        hidden.double(), weight.double(), targets, masked_dpo_fn(ref),
        token_inputs={"mask": mask.double(), "bonus": bonus.double()},
    )  # fmt: skip
    assert out.loss.item() == pytest.approx(twin.item(), rel=1e-5)
    assert h.grad is None and grads_of(out.loss, [h])[0].abs().sum() > 0
    with pytest.raises(ValueError, match=r"token_inputs\['mask'\] must be a tensor shaped like targets"):
        pair_fused_loss(hidden, weight, targets, masked_dpo_fn(ref), token_inputs={"mask": mask[:, 1:]})


def aot_fn(ref, beta=0.3):
    """AOT: sorts the batch's log-ratios, so it is evaluated on the whole batch (``whole_batch``)."""
    n_pairs = ref.shape[1]

    def loss_fn(chunk):
        assert chunk.pair_index.numel() == n_pairs  # never called on a part of the batch
        dt = chunk.chosen_logps.dtype
        losses, metrics = dpo_loss(
            chunk.chosen_logps, chunk.rejected_logps, ref[0].to(dt), ref[1].to(dt), beta, loss_type="aot"
        )
        return losses.sum() / n_pairs, metrics

    loss_fn.whole_batch = True
    return loss_fn


@pytest.mark.parametrize("token_chunk", [None, 30, 7])  # one chunk; a budget for a few pairs; two-pass tiles
def test_a_whole_batch_loss_sees_every_pair_at_once(token_chunk):
    compare(3, 5, 12, 16, 61, fn_factory=aot_fn, token_chunk=token_chunk)


def z_loss_fn(ref, coef=0.05):
    """DPO plus a z-loss coef * lse^2 per scored token (the token lse as a differentiable per-token output)."""
    base = dpo_fn(ref)

    def loss_fn(chunk):
        loss, metrics = base(chunk)
        return loss + coef * (chunk.token_lse**2).sum() / ref.shape[1], metrics

    return loss_fn


@pytest.mark.parametrize("token_chunk", [None, 30, 7])  # one chunk, several, two-pass pairs
def test_z_loss_on_the_token_lse_matches_the_twin(token_chunk):
    out = compare(5, 3, 12, 16, 61, fn_factory=z_loss_fn, token_chunk=token_chunk)
    plain = compare(5, 3, 12, 16, 61, token_chunk=token_chunk)
    assert out.loss.item() > plain.loss.item()  # the term is really there


def test_packed_rows_with_sequence_ids_equal_the_padded_batch():
    """Padding-free groundwork (issue 14): the same pairs packed into one row, each position naming its
    sequence, give the padded batch's loss, metrics, per-sequence log-probabilities and gradients."""
    hidden, weight, bias, targets, ref = make_pairs(6, 3, 10, 16, 41)
    targets[0, :3] = -100  # unscored positions (prompt, padding) travel in the packed row too
    rows, length, width = hidden.shape
    ids = torch.arange(rows).repeat_interleave(length).unsqueeze(0)  # sequence r's positions, one after another
    ids[0, :3] = -1  # a position that names no sequence (padding) is fine where it is not scored
    leaves_p = [x.clone().requires_grad_() for x in (hidden.reshape(1, rows * length, width), weight, bias)]
    packed = pair_fused_loss(leaves_p[0], leaves_p[1], targets.reshape(1, -1), dpo_fn(ref), bias=leaves_p[2],
                             token_chunk=9, sequence_ids=ids)  # fmt: skip
    leaves = [x.clone().requires_grad_() for x in (hidden, weight, bias)]
    padded = pair_fused_loss(leaves[0], leaves[1], targets, dpo_fn(ref), bias=leaves[2], token_chunk=9)
    assert abs(packed.loss.item() - padded.loss.item()) <= 1e-6 * max(1.0, abs(padded.loss.item()))
    assert rel_err(packed.seq_logps, padded.seq_logps) <= 1e-6
    for key, value in padded.metrics.items():
        assert rel_err(packed.metrics[key], value) <= 1e-6, key
    g_packed = torch.autograd.grad(packed.loss, leaves_p)
    g_padded = torch.autograd.grad(padded.loss, leaves)
    assert rel_err(g_packed[0].reshape(hidden.shape), g_padded[0]) <= 1e-5
    assert rel_err(g_packed[1], g_padded[1]) <= 1e-5 and rel_err(g_packed[2], g_padded[2]) <= 1e-5
    with pytest.raises(ValueError, match="sequence_ids must be shaped like targets"):
        pair_fused_loss(leaves_p[0], weight, targets.reshape(1, -1), dpo_fn(ref), sequence_ids=ids[:, :-1])
