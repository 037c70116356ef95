"""The CUDA caching allocator for long sequences: ``expandable_segments:True``.

At 200k tokens a step's tensors are a few GiB each and change size from one layer's recomputation to the next; with
fixed-size segments the caching allocator keeps freed blocks it cannot reuse, and a run can fail with several GiB
"reserved but unallocated". Expandable segments map one growing segment instead (torch's CUDA memory notes,
``PYTORCH_CUDA_ALLOC_CONF``), which Arctic Long Sequence Training (arXiv 2506.13996) recommends for exactly these
runs. A long-context run (activation offloading, tiled MLP or norms, sequence parallelism) sets it unless the
user has configured the allocator (``PYTORCH_CUDA_ALLOC_CONF`` or torch's newer ``PYTORCH_ALLOC_CONF``); the
banner says which. The planner's reserve (alignment.planning.devices) assumes it.
"""

from __future__ import annotations

import os

SETTING = "expandable_segments:True"
VARIABLES = ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF")


def is_long_context(args) -> bool:
    return bool(getattr(args, "activation_offloading", False) or getattr(args, "tiled_mlp", False)
                or getattr(args, "tiled_norms", False) or getattr(args, "sequence_parallel_size", 1) > 1)  # fmt: skip


def _configured() -> str | None:
    """``NAME=value`` of the allocator setting in the environment, None when there is none."""
    return next((f"{name}={os.environ[name]}" for name in VARIABLES if os.environ.get(name)), None)


def configure_allocator(args) -> None:
    """Set expandable segments for a long-context run unless the allocator is configured (module docstring)."""
    if not is_long_context(args) or _configured():
        return
    os.environ["PYTORCH_CUDA_ALLOC_CONF"] = SETTING
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():  # read at the first allocation: set it now too
        torch.cuda.memory._set_allocator_settings(SETTING)


def allocator_summary(args) -> str | None:
    """The banner's words for the allocator of a long-context run (None when the run is not one)."""
    if not is_long_context(args):
        return None
    return _configured() or "default (not configured)"
