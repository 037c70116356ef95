"""What ``alignment plan`` prints (:func:`describe`) and how it reads a memory size (:func:`parse_memory`)."""

from __future__ import annotations

from alignment.errors import RecipeError


def parse_memory(text: str, name: str = "--device_memory") -> int:
    """'80GB', '141GiB', '512MB', '1TB', '4096B' -> bytes (GB and GiB both read as 2^30: device memory is quoted
    that way).
    A number without a unit is refused (80 would be 80 bytes), and so is a size that is not positive or beyond
    1 PiB."""
    units = {"b": 1, "kb": 2**10, "kib": 2**10, "mb": 2**20, "mib": 2**20, "gb": 2**30, "gib": 2**30, "tb": 2**40,
             "tib": 2**40}  # fmt: skip
    lowered = str(text).strip().lower()
    for unit in sorted(units, key=len, reverse=True):
        if lowered.endswith(unit):
            try:
                value = float(lowered[: -len(unit)])
            except ValueError:
                break
            size = value * units[unit]
            if not 0 < size <= 2**50:
                raise RecipeError(f"{name} {text}: give a positive size up to 1PB (e.g. 80GB)")
            return int(size)
    raise RecipeError(f"{name} {text!r}: give a size with its unit, e.g. 80GB, 141GiB or 512MB")


def describe(plan) -> list[str]:
    """The plan's lines (alignment.planning.plan.Plan)."""

    def gib(x):
        return f"{x / 2**30:.2f} GiB" if x >= 2**30 else f"{x / 2**20:.1f} MiB"

    zero = "ZeRO-2" if plan.sequence_parallel > 1 else "ZeRO-3"
    where = f"{plan.target}" + (f", rank's share of {zero} on {plan.devices} devices" if plan.devices > 1 else "")
    if plan.sequence_parallel > 1:
        where += f", each pair split over {plan.sequence_parallel} ranks (DeepSpeed Ulysses)"
    who = "" if plan.trainer == "alignment" else f" ({plan.trainer}'s DPOTrainer)"
    pairs = "length-skewed pairs (halving) up to" if plan.skew else "pairs of"
    lines = [f"{plan.method}{who}: {plan.batch} {pairs} {plan.max_length} tokens per device ({where})",
             f"  length                       {plan.length_source}" if plan.length_source else None,
             f"  pair                         {plan.pair}" if plan.pair else None,
             f"  attention                    {plan.attention}",
             f"  resident                     {gib(plan.resident_bytes)} (model, anchors, optimizer state"
             + ("; a share)" if plan.devices > 1 else ")"),
             f"  step peak above it           {gib(plan.step_peak_bytes)}",
             f"  peak per device              {gib(plan.peak_bytes)}"
             + (f" (in the {plan.peak_phase})" if plan.peak_phase else "")]  # fmt: skip
    lines = [line for line in lines if line is not None]
    if plan.precompute_peak_bytes is not None:
        lines.append(f"  precompute phase peak        {gib(plan.precompute_peak_bytes)}")
    if plan.generation_peak_bytes is not None:
        gathered = ", the policy gathered whole (ZeRO-3)" if plan.devices > 1 else ""
        lines.append(f"  generation phase peak        {gib(plan.generation_peak_bytes)} (2 x {plan.batch} completions "
                     f"of {plan.new_tokens} tokens, KV cache{gathered})")  # fmt: skip
    if plan.sampler:
        lines.append(f"  sampling                     {plan.sampler}")
    if plan.host_offload_bytes is not None:
        lines.append(f"  CPU memory, offloaded        {gib(plan.host_offload_bytes)} per device (activation offload)")
    if plan.host_pinned_bytes is not None and plan.target == "cuda":
        node = plan.host_pinned_bytes * plan.devices_per_node
        verdict = "fits" if plan.host_fits else "DOES NOT FIT"
        per_node = f"{gib(node)} for {plan.devices_per_node} per node: {verdict} in {gib(plan.host_memory_bytes)}"
        lines.append(f"  pinned host memory           {gib(plan.host_pinned_bytes)} per device (power-of-two blocks), "
                     + per_node)  # fmt: skip
    lines.append("  at the peak: " + ", ".join(f"{k} {gib(v)}" for k, v in plan.breakdown.items() if v)
                 + f" (sum {gib(sum(plan.breakdown.values()))})")  # fmt: skip
    if plan.device:
        verdict = "fits" if plan.fits else "DOES NOT FIT"
        lines.append(f"  device                       {plan.device}: {verdict}")
    if plan.search:
        best = plan.search["best"]
        lines.append(f"  longest {plan.search['field']} that fits {gib(plan.search['device_memory'])}: "
                     + (str(best) if best else "none"))  # fmt: skip
    return lines
