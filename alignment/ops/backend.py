"""Which implementation runs the per-tile work of the fused op: ``torch`` (the chunked PyTorch tiles) or
``triton`` (alignment/ops/triton: one fused kernel per tile for the online max/sum fold, the target gather,
the entropy and KL sums, StableMax, the probabilities and the gradient tile formed in place; the GEMMs stay
cuBLAS/torch.mm). ``auto`` picks Triton on a CUDA device when triton is installed, torch otherwise.

Set per call (``backend=``), per run (the config field ``kernel_backend``) or per process
(``ALIGNMENT_KERNEL_BACKEND``). ``triton`` needs a CUDA device, or Triton's CPU interpreter
(``TRITON_INTERPRET=1`` set before triton is imported: the tests run the kernels on CPU tensors that way).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os

import torch

BACKENDS = ("auto", "torch", "triton")

_SIMULATED_CUDA = [False]  # alignment plan: CPU fake tensors take the CUDA code paths (simulated_cuda())


def on_cuda(device: torch.device) -> bool:
    """Whether tensors on ``device`` take the ops' CUDA code paths (a CUDA device, or a simulated one)."""
    return device.type == "cuda" or _SIMULATED_CUDA[0]


@contextlib.contextmanager
def simulated_cuda():
    """Within the block, CPU tensors take the CUDA code paths (GEMMs in the inputs' precision with a float32
    output, the Triton backend under ``auto``): the memory planner runs a GPU step on CPU fake tensors so."""
    previous, _SIMULATED_CUDA[0] = _SIMULATED_CUDA[0], True
    try:
        yield
    finally:
        _SIMULATED_CUDA[0] = previous


@functools.cache
def triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def interpreter_on() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def requested(backend: str | None) -> str:
    """The backend asked for: the argument, else ALIGNMENT_KERNEL_BACKEND, else auto."""
    name = backend or os.environ.get("ALIGNMENT_KERNEL_BACKEND") or "auto"
    if name not in BACKENDS:
        from alignment.errors import RecipeError

        where = "" if backend else f"ALIGNMENT_KERNEL_BACKEND {name!r} (environment or the recipe's env:): "
        raise RecipeError(f"{where}backend must be one of {list(BACKENDS)} (kernel_backend, ALIGNMENT_KERNEL_BACKEND), "
                          f"got {name!r}")  # fmt: skip
    return name


def resolve(backend: str | None, device: torch.device) -> str:
    """``torch`` or ``triton`` for tensors on ``device`` (one clear error when Triton cannot run here)."""
    name = requested(backend)
    if name == "auto":
        return "triton" if on_cuda(device) and triton_installed() else "torch"
    if name == "triton":
        from alignment.errors import UnavailableError

        if not triton_installed():
            raise UnavailableError("backend 'triton' needs triton: pip install 'alignment[triton]'")
        if not on_cuda(device) and not interpreter_on():
            raise UnavailableError(
                f"backend 'triton' runs on a CUDA device, and these tensors are on {device.type}: use backend "
                "'torch' (or 'auto'), or set TRITON_INTERPRET=1 before triton is imported to run the kernels in "
                "Triton's CPU interpreter (slow: for tests)"
            )
    return name
