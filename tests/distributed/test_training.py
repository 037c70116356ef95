"""Several processes give the same training step as one (same global batch): DDP on CPU (gloo), with
and without gradient accumulation, and DeepSpeed ZeRO-3 against DDP. Slow: real `accelerate launch`es."""

import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT
from tests.helpers import rel_err

SCRIPT = ROOT / "tests" / "distributed" / "train_script.py"


def run(out, method, batch, accum, config=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(ROOT)}
    args = [str(SCRIPT), str(out), method, str(batch), str(accum)]
    if config is None:
        cmd = [sys.executable, *args]
    else:
        cmd = [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            str(ROOT / "accelerate_configs" / config),
            *args,
        ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{cmd}\n{done.stderr[-4000:]}"
    return torch.load(out, weights_only=True)


def same(a, b, tol=1e-5):
    assert a["log"]["loss"] == pytest.approx(b["log"]["loss"], rel=tol)
    for name, value in a["params"].items():
        assert rel_err(b["params"][name], value) <= tol, name


@pytest.mark.slow
@pytest.mark.parametrize(
    "method", ["dpo", "rpo", "sparsepo", "inpo", "two_anchor", "regret_numeric", "regret_text", "online_dpo"]
)
def test_ddp_two_processes_equal_one(tmp_path, method):
    single = run(tmp_path / "single.pt", method, 8, 1)
    ddp = run(tmp_path / "ddp.pt", method, 4, 1, "cpu_ddp.yaml")
    ddp_accum = run(tmp_path / "ddp_accum.pt", method, 2, 2, "cpu_ddp.yaml")
    assert "DDP, 2 process(es)" in ddp["summary"]["distributed"]
    if method == "two_anchor":  # each anchor precomputed once (rank 0 writes, rank 1 reads the cache)
        assert ddp["summary"]["anchor prev"] == "precomputed (model)"
        assert len(list((tmp_path / "ddp.pt.cache").iterdir())) == 2
    same(single, ddp)
    same(single, ddp_accum)
    if method == "online_dpo":  # the judge's statistics are means over the processes too
        for key in ("objective/scores", "objective/scores_margin", "objective/kl", "val/contain_eos_token"):
            assert ddp["log"][key] == pytest.approx(single["log"][key], rel=1e-5), key


@pytest.mark.slow
@pytest.mark.parametrize("method", ["dpo", "sparsepo", "inpo", "kto"])
def test_deepspeed_zero3_matches_ddp(tmp_path, method):
    import deepspeed  # noqa: F401  (a clear ImportError when the deepspeed extra is missing)

    ddp = run(tmp_path / "ddp.pt", method, 4, 1, "cpu_ddp.yaml")
    zero3 = run(tmp_path / "zero3.pt", method, 4, 1, "deepspeed_zero3.yaml")
    assert "DeepSpeed ZeRO-3, 2 process(es)" in zero3["summary"]["distributed"]
    same(ddp, zero3)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["dpo", "sparsepo"])
def test_packed_batches_under_ddp_and_zero3_equal_padded(tmp_path, method):
    """padding_free with DDP and DeepSpeed ZeRO-3 (2 processes x 4 pairs, each batch packed into one row): the
    same step as one padded process of 8 pairs."""
    import deepspeed  # noqa: F401

    single = run(tmp_path / "single.pt", method, 8, 1)
    ddp = run(tmp_path / "ddp.pt", f"{method}:packed", 4, 1, "cpu_ddp.yaml")
    zero3 = run(tmp_path / "zero3.pt", f"{method}:packed", 4, 1, "deepspeed_zero3.yaml")
    for packed in (ddp, zero3):
        assert packed["summary"]["padding-free"].startswith("on: one packed row per batch")
        same(single, packed)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["cpo", "orpo", "kto_apo"])
def test_cpo_orpo_kto_under_ddp_and_zero3_equal_one_process(tmp_path, method):
    """CPO and ORPO (their NLL is a token mean over the global batch) and KTO's apo_zero_unpaired (a row mean, no
    KL term): 2 processes x 2 rows x 2 accumulation steps under DDP, and 2 x 4 under DeepSpeed ZeRO-3, give the
    step of one process of 8 rows."""
    import deepspeed  # noqa: F401

    single = run(tmp_path / "single.pt", method, 8, 1)
    ddp_accum = run(tmp_path / "ddp_accum.pt", method, 2, 2, "cpu_ddp.yaml")
    zero3 = run(tmp_path / "zero3.pt", method, 4, 1, "deepspeed_zero3.yaml")
    assert single["summary"]["reference"] == ("none" if method != "kto_apo" else "model")
    assert "DeepSpeed ZeRO-3, 2 process(es)" in zero3["summary"]["distributed"]
    same(single, ddp_accum)
    same(single, zero3)
