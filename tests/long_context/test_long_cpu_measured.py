"""Item of docs/planning.md "Measured where it can be": a long-context LoRA DPO step on this CPU (real random
weights, checkpointing, offloading, the tiled MLP and norms, an unequal pair) against its plan, within 10%
(benchmarks/long_context_cpu.py runs the 8k-token pair; this is its small case)."""

import sys

import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))


@pytest.mark.slow
def test_a_long_context_step_on_this_cpu_is_planned_within_10_percent():
    from long_context_cpu import compare

    row = compare(prompt=512, chosen=1536, rejected=1024)
    assert abs(row["error"]) <= 0.10, row
    assert row["breakdown_mib"]["offloaded_to_host"] > 0  # the checkpoints left for the host copies
