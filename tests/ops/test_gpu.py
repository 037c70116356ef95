"""The chunked paths on a CUDA device against the float64 reference (run with `pytest -m gpu` on a GPU
machine; these tests fail, not skip, when selected without one)."""

import pytest
import torch

from tests.helpers import OUTPUTS, make, output_err, rel_err, run_op, run_reference


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("path", ["general", "frozen"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_matches_reference(path, dtype, backend):
    assert torch.cuda.is_available(), "the gpu tests need a CUDA device"
    cpu_inputs = make(0, 257, 64, 5000, dtype=dtype)
    cuda_inputs = [None if x is None else x.cuda() for x in cpu_inputs]
    out, grads, ups = run_op(*cuda_inputs, path, backend=backend)
    ref, ref_grads = run_reference(*cpu_inputs, path, [u.cpu() for u in ups])
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    for key in OUTPUTS:
        assert output_err(out, ref, key) <= tol, key
    for g, r in zip(grads, ref_grads):
        assert rel_err(g.cpu(), r) <= tol


@pytest.mark.gpu
def test_cuda_pair_fused_matches_cpu():
    from alignment.ops import pair_fused_loss
    from tests.helpers import dpo_fn, make_pairs

    assert torch.cuda.is_available(), "the gpu tests need a CUDA device"
    hidden, weight, bias, targets, ref = make_pairs(1, 6, 40, 64, 3000)
    hidden[0, -3:] *= 300.0  # some collapsed softmaxes
    results = []
    for device in ("cpu", "cuda"):
        leaves = [x.to(device).clone().requires_grad_() for x in (hidden, weight, bias)]
        out = pair_fused_loss(leaves[0], leaves[1], targets.to(device), dpo_fn(ref.to(device)), bias=leaves[2])
        grads = torch.autograd.grad(out.loss, leaves)
        results.append((out.loss.cpu(), [g.cpu() for g in grads], out.collapsed.cpu()))
    (loss_c, grads_c, col_c), (loss_g, grads_g, col_g) = results
    assert rel_err(loss_g, loss_c) <= 1e-5
    for a, b in zip(grads_g, grads_c):
        assert rel_err(a, b) <= 1e-4
    assert torch.equal(col_g, col_c)


@pytest.mark.gpu
def test_cuda_entanglement_probe_matches_cpu():
    from alignment.diagnostics.probes import probe_pair, trainable_parameters
    from tests.helpers import tiny_llama

    assert torch.cuda.is_available(), "the gpu tests need a CUDA device"
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 200, (2, 12), generator=gen)
    ids[1, :5] = ids[0, :5]  # a shared prompt
    mask = torch.zeros_like(ids)
    mask[:, 5:] = 1
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "completion_mask": mask}
    probes = []
    for device in ("cpu", "cuda"):
        model = tiny_llama(200).to(device).eval()
        params = [p for _, p in trainable_parameters(model)]
        probes.append(probe_pair(model, {k: v.to(device) for k, v in batch.items()}, params))
    cpu, gpu = probes
    for key in ("logp_w", "logp_l", "inner", "sq_w", "sq_l"):
        assert getattr(gpu, key) == pytest.approx(getattr(cpu, key), rel=1e-4), key
