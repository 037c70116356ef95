"""Under DeepSpeed ZeRO-3 (LM head partitioned) on CPU with 2 processes, the fused op gives the same
log-probabilities, DPO loss and parameter updates as one process. Slow: two launches, and DeepSpeed
compiles a small communication op on its first run."""

import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT

SCRIPT = ROOT / "tests" / "distributed" / "zero3_logps.py"


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(ROOT)}


@pytest.mark.slow
def test_zero3_two_processes_equal_one_process(tmp_path):
    import deepspeed  # noqa: F401  (a clear ImportError when the deepspeed extra is missing)

    single, zero3 = tmp_path / "single.pt", tmp_path / "zero3.pt"
    subprocess.run([sys.executable, str(SCRIPT), str(single)], env=_env(), check=True, timeout=300)
    launch = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(ROOT / "accelerate_configs" / "deepspeed_zero3.yaml"),
        str(SCRIPT), str(zero3),
    ]  # fmt: skip
    done = subprocess.run(launch, env=_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    a, b = torch.load(single, weights_only=True), torch.load(zero3, weights_only=True)
    assert b["partitioned"] and not a["partitioned"]  # the head really was split across the 2 processes
    assert torch.allclose(a["logps"], b["logps"], rtol=1e-5, atol=1e-6)
    assert torch.allclose(a["pair_loss"], b["pair_loss"], rtol=1e-5)
    for name, value in a["params"].items():
        assert torch.allclose(value, b["params"][name], rtol=1e-5, atol=1e-6), name
    moved = (a["params"]["lm_head.weight"] - a["before"]["lm_head.weight"]).abs().max()
    assert moved > 1e-3  # the head's gradient reached it through the partitioned path
