"""A GPU step's code paths on CPU fake tensors, for the planner: the fused op's GEMMs in the inputs' precision with
a float32 output (no upcast copies), the Triton backend where ``auto`` picks it on CUDA, and every Triton launch
a no-op - a kernel reads and writes tensors allocated before it by torch, so it allocates nothing itself. trl's
fused LM head takes its CUDA path the same way (compact positions, its Triton folds, fp32-output GEMMs)."""

from __future__ import annotations

import contextlib
import importlib
import types
from unittest import mock

import torch

from alignment.ops.backend import simulated_cuda, triton_installed

OUR_KERNELS = ("fold_softmax", "fold_stablemax", "probabilities", "grad_tile", "frozen_tiles")


class _NoLaunch:
    """``kernel[grid](...)`` that does nothing (its outputs were allocated by the caller)."""

    def __getitem__(self, grid):
        return lambda *args, **kwargs: None


def _addmm_fp32(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    if a.dtype in (torch.float16, torch.bfloat16):  # trl's CUDA branch: no float32 copies of the operands
        torch.addmm(acc, a, b, out_dtype=torch.float32, out=acc)
    else:
        acc.addmm_(a, b)


@contextlib.contextmanager
def gpu_code_paths():
    """Within the block, CPU (fake) tensors take the CUDA code paths of our op and of trl's fused head."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(simulated_cuda())
        if triton_installed():
            kernels = importlib.import_module("alignment.ops.triton.kernels")
            for name in OUR_KERNELS:
                stack.enter_context(mock.patch.object(kernels, name, _NoLaunch()))
        _trl_cuda_paths(stack)
        yield


def _trl_cuda_paths(stack: contextlib.ExitStack) -> None:
    try:
        chunked = importlib.import_module("trl.kernels.chunked_logprob")
        utils = importlib.import_module("trl.trainer.utils")
    except ImportError:
        return
    for module in (chunked, utils):
        if hasattr(module, "_use_triton"):
            stack.enter_context(mock.patch.object(module, "_use_triton", lambda device: True))
    for name in ("_forward_kernel", "_backward_kernel"):
        stack.enter_context(mock.patch.object(chunked, name, _NoLaunch(), create=True))
    stack.enter_context(mock.patch.object(chunked, "_addmm_fp32", _addmm_fp32))
    if not hasattr(chunked, "triton"):
        cdiv = types.SimpleNamespace(cdiv=lambda a, b: -(-a // b))
        stack.enter_context(mock.patch.object(chunked, "triton", cdiv, create=True))
