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
    assert "| pair_fused_triton |" in (tmp_path / "gpu_acceptance.md").read_text()
