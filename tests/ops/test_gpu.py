"""The chunked paths on a CUDA device against the float64 reference (run with `pytest -m gpu` on a GPU
machine; these tests fail, not skip, when selected without one)."""

import pytest
import torch

from tests.ops.test_token_logps import OUTPUTS, make, rel_err, run_op, run_reference


@pytest.mark.gpu
@pytest.mark.parametrize("path", ["general", "frozen"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_matches_reference(path, dtype):
    assert torch.cuda.is_available(), "the gpu tests need a CUDA device"
    cpu_inputs = make(0, 257, 64, 5000, dtype=dtype)
    cuda_inputs = [None if x is None else x.cuda() for x in cpu_inputs]
    out, grads, ups = run_op(*cuda_inputs, path)
    ref, ref_grads = run_reference(*cpu_inputs, path, [u.cpu() for u in ups])
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    for key in OUTPUTS:
        assert rel_err(getattr(out, key).cpu(), ref[key]) <= tol, key
    for g, r in zip(grads, ref_grads):
        assert rel_err(g.cpu(), r) <= tol
