"""Activation offloading on fake tensors: trl's OffloadActivations (alignment.long_context.offload) as the planner
counts it. A tensor saved for the backward pass leaves the device's count when the forward pass saves it (its copy
is made outside the tracker: host memory, counted in ``host_current`` / ``host_peak``) and comes back as a new
device tensor when the backward pass reads it, freed once that step of the backward is done with it.

trl's rules, kept: tensors under ``min_offload_size`` bytes (1 KiB) and parameters stay on the device; on a GPU the
last ``max_fwd_stash_size`` (5) offloaded tensors stay alive on the device until their copies complete on the side
stream (the stash), and a storage saved again while its first copy is in flight is kept on the device rather than
copied twice. What the fused op saves is kept on the device (``keep_on_device``: innermost hooks win) as in a run.

Host memory as the pinned allocator takes it (``pinned_bytes``): on a GPU trl copies into pinned memory
(``torch.empty(..., pin_memory=True)``), which torch's CachingHostAllocator serves in blocks of a power of two
bytes (``aten/src/ATen/core/CachingHostAllocator.h``: ``c10::llvm::PowerOf2Ceil(size)``), caches on free and
reuses only for a request of the same rounded size. So a 3.25 GiB checkpoint pins 4 GiB, and the host memory held
is, per rounded size, the most blocks of that size alive at once, times the size. On the CPU (no pinning)
``pinned_bytes`` is the plain ``host_peak``.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict

import torch

MIN_OFFLOAD_BYTES = 1024
FWD_STASH = 5


class PlannedOffload(torch.autograd.graph.saved_tensors_hooks):
    """saved_tensors_hooks counting what trl's manager would move to host memory (see the module docstring)."""

    def __init__(self, parameters, streams: bool = True, tracker=None):
        """``streams``: a GPU's manager (pinned host copies on a side stream, outside the device's count); without
        them the CPU's (the host copy is made in the same memory, so it is counted, under ``tracker``'s label
        "offloaded_to_host", and trl's unpack hands back the copy itself)."""
        self.host_current = self.host_peak = 0
        self.offloaded = 0  # tensors moved in all
        self._blocks: dict[int, list[int]] = {}  # rounded size -> [alive, most alive at once]
        self._params = {p.untyped_storage()._cdata for p in parameters}
        self._stash: OrderedDict[int, torch.Tensor] = OrderedDict()  # in flight on the side stream (GPU)
        self._in_flight: set[int] = set()
        self._streams = streams
        self._tracker = tracker
        super().__init__(self._pack, self._unpack)

    def _pack(self, tensor: torch.Tensor):
        size = tensor.numel() * tensor.element_size()
        storage = tensor.untyped_storage()._cdata
        if size < MIN_OFFLOAD_BYTES or isinstance(tensor, torch.nn.Parameter) or storage in self._params:
            return ("kept", tensor)
        if self._streams and storage in self._in_flight:  # trl: a storage already being copied stays on the device
            return ("kept", tensor)
        if self._streams:
            from torch.utils._python_dispatch import _disable_current_modes

            with _disable_current_modes():  # the host copy: outside the device count
                host = tensor.detach().clone()
        else:  # the CPU is the device: the copy is made (and counted) in the same memory
            label = self._tracker.labelled("offloaded_to_host") if self._tracker is not None else None
            with label or contextlib.nullcontext():
                host = tensor.detach().clone()
        self.host_current += size
        self.host_peak = max(self.host_peak, self.host_current)
        self.offloaded += 1
        block = self._blocks.setdefault(pinned_size(size), [0, 0])
        block[0] += 1
        block[1] = max(block[1], block[0])
        if self._streams:
            self._stash[id(host)] = tensor
            self._in_flight.add(storage)
            while len(self._stash) > FWD_STASH:
                self._stash.popitem(last=False)
                self._in_flight = {t.untyped_storage()._cdata for t in self._stash.values()}
        return ("host", host, size)

    def _unpack(self, packed):
        if packed[0] == "kept":
            return packed[1]
        self._stash.clear()  # the backward has begun: the forward's copies are done
        self._in_flight.clear()
        _, host, size = packed
        self.host_current -= size
        self._blocks[pinned_size(size)][0] -= 1
        if not self._streams:
            return host  # trl's .to(device) of a CPU tensor on the CPU: the copy itself
        return host.clone()  # back on the device (counted), freed when autograd lets it go

    @property
    def pinned_bytes(self) -> int:
        """The host memory the step holds (module docstring): pinned blocks on a GPU, the copies on the CPU."""
        if not self._streams:
            return self.host_peak
        return sum(size * most for size, (_, most) in self._blocks.items())


def pinned_size(size: int) -> int:
    """The block torch's pinned (CachingHostAllocator) memory serves for ``size`` bytes: the next power of two."""
    return 1 << max(size - 1, 0).bit_length()
