"""The self-play loop as users run it: `alignment train` in a subprocess, killed (SIGKILL) in the middle of a
stage and run again; and two processes under `accelerate launch` (cpu_ddp, gloo) sharing the sampling, the
judging and the Bradley-Terry fit. Slow: real processes."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from alignment.io import read_jsonl
from alignment.tasks import get_task
from tests.conftest import ROOT

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
TINY = ["--prompts_per_iteration", "16", "--samples_per_prompt", "4", "--loop_eval_prompts", "16",
        "--per_device_train_batch_size", "4"]  # fmt: skip


def train_command(recipe, out, *extra, launch=None):
    cli = ["-m", "alignment.cli", "train", str(ROOT / "recipes" / "quickstart" / recipe), "--output_dir", str(out)]
    prefix = [sys.executable]
    if launch:
        prefix += ["-m", "accelerate.commands.launch", "--config_file", str(ROOT / "accelerate_configs" / launch)]
    return [*prefix, *cli, *TINY, *extra]


def run(cmd):
    done = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


@pytest.mark.slow
def test_killed_inside_training_resumes_from_its_checkpoint(tmp_path):
    out = tmp_path / "run"
    cmd = train_command("inpo.yaml", out, "--iterations", "1", "--num_train_epochs", "8", "--save_strategy", "steps",
                        "--save_steps", "2", "--logging_steps", "1")  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = out / "iteration-1" / "model" / "checkpoint-2"
    deadline = time.time() + 600
    while not (checkpoint / "trainer_state.json").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert checkpoint.exists() and not (out / "iteration-1" / "model" / "trained.json").exists()
    sampled = (out / "iteration-1" / "samples.jsonl").stat().st_mtime_ns
    judged = (out / "iteration-1" / "pairs.jsonl").stat().st_mtime_ns
    done = run(cmd)  # the finished stages do not run again; training goes on from the last checkpoint
    assert (out / "iteration-1" / "samples.jsonl").stat().st_mtime_ns == sampled
    assert (out / "iteration-1" / "pairs.jsonl").stat().st_mtime_ns == judged
    trained = json.loads((out / "iteration-1" / "model" / "trained.json").read_text())
    assert f"iteration 1: resuming the training from {out / 'iteration-1' / 'model' / 'checkpoint-'}" in done.stderr
    steps = [e["step"] for e in trained["log_history"] if "loss" in e]
    assert steps == list(range(1, trained["steps"] + 1))  # the checkpoint's log, then the rest: no step twice
    assert [r["iteration"] for r in read_jsonl(out / "iterations.jsonl")] == [0, 1]


@pytest.mark.slow
def test_two_processes_share_sampling_judging_and_the_bt_fit(tmp_path):
    out = tmp_path / "run"
    cmd = train_command("iterative_dpo.yaml", out, "--iterations", "2", "--judge_fit_prompts", "16",
                        "--judge_fit_epochs", "1", launch="cpu_ddp.yaml")  # fmt: skip
    done = run(cmd)
    for t in (1, 2):
        for rank in (0, 1):
            assert f"Iteration {t}: sampling pi_{t}: process {rank} sampled 8 of 16 prompts" in done.stderr
        samples = read_jsonl(out / f"iteration-{t}" / "samples.jsonl")
        assert [s["prompt"] for s in samples] == get_task("rps").prompts("train", 16, seed=t)  # order kept
        assert all(len(s["responses"]) == 4 for s in samples)
        verdicts = read_jsonl(out / f"iteration-{t}" / "verdicts.jsonl")
        assert [v["prompt"] for v in verdicts] == [s["prompt"] for s in samples]
    rows = read_jsonl(out / "iterations.jsonl")
    assert [r["processes"] for r in rows[1:]] == [2, 2]
    # the pointwise judge scores each process's 8 prompts x 4 responses once: 2 calls, 64 items in all
    assert rows[1]["judge_calls"] == 2 and rows[1]["judge_comparisons"] == 64
    fit = json.loads((out / "judge" / "fit.json").read_text())
    assert fit["processes"] == 2 and fit["comparisons"] > 0
    # a second launch finds every stage done: nothing is sampled again
    files = {p: p.stat().st_mtime_ns for p in out.rglob("*.jsonl")}
    again = run(cmd)
    assert "sampled" not in again.stderr and {p: p.stat().st_mtime_ns for p in out.rglob("*.jsonl")} == files
