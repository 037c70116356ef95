"""The ops' CUDA code paths, run on CPU tensors under simulated_cuda() (what the planner simulates for a GPU
step): bf16 GEMMs with a float32 result, the gradient tile cast once to the weights' precision, the scaled
gradient formed without a second float32 [V, H]; values and gradients against the float64 twin."""

import pytest
import torch

from alignment.ops import tiles
from alignment.ops.backend import on_cuda, resolve, simulated_cuda
from tests.helpers import make, rel_err, run_op, run_reference
from tests.ops.test_pair_fused import compare


@pytest.fixture
def gpu_paths():
    saved = list(tiles._MM_OUT_DTYPE)
    with simulated_cuda():
        yield
    tiles._MM_OUT_DTYPE[:] = saved  # CPU's mm has no out_dtype: the fallback was taken


@pytest.mark.parametrize("path", ["general", "frozen"])
def test_general_and_frozen_paths_in_bf16(path, gpu_paths):
    hidden, weight, bias, targets, ref_hidden = make(4, 24, 16, 97, dtype=torch.bfloat16)
    out, grads, ups = run_op(hidden, weight, bias, targets, ref_hidden, path, backend="torch")
    ref, ref_grads = run_reference(hidden, weight, bias, targets, ref_hidden, path, ups)
    assert rel_err(out.logps, ref["logps"]) <= 1e-2 and all(rel_err(g, r) <= 2e-2 for g, r in zip(grads, ref_grads))


def test_pair_fused_path_in_bf16(gpu_paths):
    compare(2, 3, 10, 16, 90, dtype=torch.bfloat16, tol=1e-2, backend="torch")


def test_the_switch_is_scoped():
    cpu = torch.device("cpu")
    assert not on_cuda(cpu) and resolve("auto", cpu) == "torch"
    with simulated_cuda():
        assert on_cuda(cpu)
        assert tiles.gemm_operand(torch.zeros(2, 3), torch.zeros(3, 4, dtype=torch.bfloat16)).dtype == torch.bfloat16
    assert not on_cuda(cpu)
    assert tiles.gemm_operand(torch.zeros(2, 3), torch.zeros(3, 4, dtype=torch.bfloat16)).dtype == torch.float32
