"""benchmarks/gpu_acceptance.sh --dry-run: the GPU acceptance run's code at tiny shapes on the CPU (the Triton
kernels in Triton's interpreter) writes its JSON and Markdown summary with every stage's numbers."""

import json
import subprocess

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_the_dry_run_writes_every_stage(tmp_path):
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_acceptance.sh"), "--dry-run", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "gpu_acceptance.json").read_text())
    assert summary["dry_run"] and summary["tests"]["returncode"] == 0 and "collected" in summary["tests"]["summary"]
    kernel = {r["method"]: r for r in summary["kernel"]}
    assert set(kernel) == {"gemm", "naive", "trl", "general_torch", "general_triton", "pair_fused_torch",
                           "pair_fused_triton"}  # fmt: skip
    assert all(r["ms"] > 0 and r["tflops"] > 0 and r["max_memory_mb"] > 0 for r in kernel.values()), kernel
    steps = {r["trainer"]: r for r in summary["dpo_step"]}
    assert set(steps) == {"trl", "ours"} and all(r["tokens_per_s"] > 0 for r in steps.values()), steps
    planner = summary["planner"]
    assert planner["planned_mb"] > 0 and abs(planner["error"]) <= 0.10, planner
    # stage 5 on the CPU: offloading + tiled MLP and norms, planned against the profiler's measurement (the CPU's
    # offloaded copies land in the same memory the profiler counts: looser than stage 4)
    long = summary["long_context"]
    assert long["tokens"] == 256 and long["planned_host_mb"] > 0 and abs(long["error"]) <= 0.15, long
    text = (tmp_path / "gpu_acceptance.md").read_text()
    assert "| pair_fused_triton |" in text and "long context (256 tokens per sequence" in text


def test_the_long_context_length_is_the_shorter_of_the_device_and_host_lines():
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from gpu_acceptance import card_of, long_length, long_rows

    from alignment.planning.devices import CARDS

    gib = 2**30
    h100 = int(CARDS["h100-80gb"][0] * gib)
    assert card_of(h100) == "h100-80gb" and card_of(12 * gib) is None
    row = long_rows("h100-80gb", "llama-3-8b")[0]
    big_host = long_length(h100, 4096 * gib)  # an H100 80GB on a host with plenty of memory: the table's length
    assert big_host["limited_by"] == "device" and big_host["tokens"] % 4096 == 0, big_host
    assert row["longest"] - 2 * 4096 <= big_host["tokens"] <= row["longest"] + 4096, (big_host, row["longest"])
    small_host = long_length(h100, 128 * gib)  # the same GPU on a 128 GiB host: the pinned copies set it
    assert small_host["limited_by"] == "host" and small_host["tokens"] < big_host["tokens"], small_host
