"""The cards ``alignment plan --device NAME`` plans for: what torch reports as each card's total memory, and what
a training step can use of it.

``total_bytes`` is ``torch.cuda.get_device_properties(0).total_memory`` (the "GPU 0 has a total capacity of X GiB"
of torch's out-of-memory message), not the nameplate: an "80 GB" H100 gives torch 79.19 GiB. The figures are the
capacities printed in public out-of-memory reports and ``deviceQuery`` listings of each card (the source column);
drivers differ by up to about 0.1 GiB, which the reserve covers.

``usable_bytes`` = total - the reserve, where the reserve is what a training process holds outside torch's
allocated bytes (what the planner counts):

- the CUDA context, cuBLAS and NCCL workspaces: ``CONTEXT_BYTES`` (0.75 GiB; the 0.5-1 GiB that ``nvidia-smi``
  shows above ``torch.cuda.memory_reserved()`` in a training process);
- the caching allocator's fragmentation: ``FRAGMENTATION`` (3%) of the total. With ``expandable_segments:True``
  (which long-context runs set, alignment.run_settings) the allocator grows one mapped segment instead of keeping
  fixed-size blocks, so the gap between reserved and allocated memory stays within a few percent.

``--device_memory SIZE`` stays a raw budget: the plan fits when its peak is at most SIZE (no reserve taken off).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from alignment.errors import RecipeError

GIB = 2**30
CONTEXT_BYTES = int(0.75 * GIB)
FRAGMENTATION = 0.03


@dataclass(frozen=True)
class Device:
    name: str
    total_bytes: int
    source: str
    #: False for a raw --device_memory budget: nothing is reserved
    reserve: bool = True
    #: what a colocated vLLM engine takes of the card (online DPO's ``use_vllm``): gpu_memory_utilization x total
    engine_bytes: int = 0

    @property
    def reserve_bytes(self) -> int:
        return CONTEXT_BYTES + int(FRAGMENTATION * self.total_bytes) if self.reserve else 0

    @property
    def usable_bytes(self) -> int:
        return self.total_bytes - self.reserve_bytes - self.engine_bytes

    def with_engine(self, fraction: float) -> Device:
        """The card less a colocated vLLM engine's share: vLLM allocates ``gpu_memory_utilization`` of the
        card's total memory (weights, KV cache, CUDA graphs) up front and keeps it."""
        return replace(self, engine_bytes=int(fraction * self.total_bytes))

    def describe(self) -> str:
        engine = f", less {self.engine_bytes / GIB:.2f} GiB for the colocated vLLM engine" if self.engine_bytes else ""
        if not self.reserve:
            return f"{self.usable_bytes / GIB:.2f} GiB ({self.source}{engine})"
        reserve = f"reserve {self.reserve_bytes / GIB:.2f} GiB: CUDA context and allocator{engine}"
        usable = f"{self.usable_bytes / GIB:.2f} GiB usable of the {self.total_bytes / GIB:.2f} GiB torch reports"
        return f"{self.name}: {usable} ({reserve})"


def _gib(x: float) -> int:
    return int(x * GIB)


#: name -> (GiB torch reports, where the number comes from)
CARDS = {
    "h100-80gb": (79.19, "H100 80GB HBM3 (SXM); out-of-memory reports print 79.18-79.19 GiB"),
    "h100-94gb": (93.10, "H100 NVL 94GB; out-of-memory reports print 93.09-93.10 GiB"),
    "h200": (139.80, "H200 141GB; out-of-memory reports print 139.72-139.81 GiB"),
    "a100-40gb": (39.39, "A100-SXM4-40GB; deviceQuery: 42,298,834,944 bytes"),
    "a100-80gb": (79.15, "A100-SXM4-80GB; out-of-memory reports print 79.15 GiB"),
    "l40s": (44.39, "L40S 48GB; out-of-memory reports print 44.39-44.42 GiB"),
    "b200": (178.35, "B200 192GB; out-of-memory reports print 178.35-178.36 GiB"),
}


def device(name: str) -> Device:
    """The card called ``name`` (case-insensitive; ``h100`` reads as ``h100-80gb``, ``a100`` as ``a100-80gb``)."""
    key = {"h100": "h100-80gb", "a100": "a100-80gb", "h200-141gb": "h200", "b200-192gb": "b200"}.get(
        name.strip().lower(), name.strip().lower()
    )
    if key not in CARDS:
        raise RecipeError(f"--device {name!r}: not a card the planner knows; use one of {', '.join(CARDS)}, or "
                          "--device_memory SIZE (e.g. 80GB) for a raw budget")  # fmt: skip
    gib, source = CARDS[key]
    return Device(key, _gib(gib), source)


def raw(total_bytes: int) -> Device:
    return Device("budget", total_bytes, "--device_memory, no reserve", reserve=False)
