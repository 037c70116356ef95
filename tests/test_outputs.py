"""A finished run is never overwritten silently; --resume_from_checkpoint continues a run from the CLI and
reproduces the uninterrupted run's losses, skipping a half-written checkpoint; diagnostics continue across a
resume; SIGTERM saves a checkpoint and exits cleanly. (Slow: real training runs.)"""

import json
import shutil

import pytest

from alignment.cli import main
from tests.conftest import ROOT

RECIPE = str(ROOT / "recipes" / "quickstart" / "dpo.yaml")


def train(out, *extra):
    args = ["train", RECIPE, "--output_dir", str(out), "--max_steps", "4", "--per_device_train_batch_size", "8",
            "--logging_steps", "1", "--eval_task", "null", "--report", "false", "--diagnostics", "false",
            *extra]  # fmt: skip
    return main(args)


def losses(out):
    history = json.loads((out / "alignment_run.json").read_text())["log_history"]
    return {e["step"]: e["loss"] for e in history if "loss" in e}


def test_finished_run_is_refused_then_overwritten_on_request(tmp_path, capsys):
    out, fast = tmp_path / "run", ("--precompute_ref_logps", "false")  # what is tested: the output folder
    assert train(out, *fast) == 0
    before = (out / "alignment_run.json").stat().st_mtime_ns
    capsys.readouterr()
    assert train(out, *fast) == 2
    err = capsys.readouterr().err.strip()
    assert "holds a finished run" in err and "--overwrite_output_dir true" in err and "\n" not in err
    assert "--resume_from_checkpoint" in err and (out / "alignment_run.json").stat().st_mtime_ns == before
    assert train(out, "--overwrite_output_dir", "true", *fast) == 0
    assert (out / "alignment_run.json").stat().st_mtime_ns != before


@pytest.mark.slow
def test_resume_from_the_cli_reproduces_the_losses(tmp_path, capsys):
    whole = tmp_path / "whole"
    assert train(whole, "--save_steps", "2") == 0  # save_steps alone turns checkpointing on
    assert sorted(p.name for p in whole.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(whole / "checkpoint-2", resumed / "checkpoint-2")
    state_file = resumed / "checkpoint-2" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    for entry in state["log_history"]:  # mark what the checkpoint carries: a restart from 0 would lose it
        entry["loss"] = 123.0
    state_file.write_text(json.dumps(state))
    # a save killed midway: checkpoint-3 without its trainer_state.json (written last) is not resumed from
    shutil.copytree(whole / "checkpoint-4", resumed / "checkpoint-3")
    (resumed / "checkpoint-3" / "trainer_state.json").unlink()
    (resumed / "checkpoint-3" / "model.safetensors").write_bytes(b"half")
    assert train(resumed, "--save_steps", "2", "--resume_from_checkpoint", "true") == 0
    a, b = losses(whole), losses(resumed)
    assert b[1] == b[2] == 123.0  # steps 1-2 came from the checkpoint, not from a new start
    assert all(abs(a[s] - b[s]) <= 1e-6 * max(1.0, abs(a[s])) for s in (3, 4)), (a, b)


def test_resume_errors_are_one_line(tmp_path, capsys):
    assert train(tmp_path / "empty", "--resume_from_checkpoint", "true") == 2
    assert "has no complete checkpoint-N folder" in capsys.readouterr().err
    assert train(tmp_path / "x", "--resume_from_checkpoint", str(tmp_path / "nope")) == 2
    assert "not a complete checkpoint (no trainer_state.json)" in capsys.readouterr().err


@pytest.mark.slow
def test_diagnostics_continue_across_a_resume(tmp_path):
    def probes(folder):
        rows = [json.loads(line) for line in (folder / "diagnostics.jsonl").read_text().splitlines()]
        return {r["step"]: r for r in rows if r.get("kind", "probe") == "probe"}

    extra = ["--diagnostics", "true", "--diagnostics_steps", "2", "--diagnostics_probe_pairs", "4", "--save_steps", "2"]
    whole = tmp_path / "whole"
    assert train(whole, *extra) == 0
    full = probes(whole)
    assert sorted(full) == [0, 2, 4]
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(whole / "checkpoint-2", resumed / "checkpoint-2")
    lines = (whole / "diagnostics.jsonl").read_text().splitlines()
    kept = [line for line in lines if json.loads(line)["step"] <= 2]
    killed = json.loads(lines[-1]) | {"step": 3}  # a probe written after the checkpoint by a run killed later
    (resumed / "diagnostics.jsonl").write_text("\n".join([*kept, json.dumps(killed)]) + "\n")
    assert train(resumed, *extra, "--resume_from_checkpoint", "true") == 0
    again = probes(resumed)
    assert sorted(again) == [0, 2, 4]  # the step-3 leftover dropped, step 4 probed after the resume
    assert again[0] == full[0]  # the baseline did not move
    for key in ("logp_chosen", "chosen_delta_mean"):
        if key in full[4]["summary"]:
            assert abs(again[4]["summary"][key] - full[4]["summary"][key]) < 1e-5, key


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "alignment.cli", "train", RECIPE, "--output_dir", str(out), "--max_steps", "500",
           "--per_device_train_batch_size", "8", "--eval_task", "null", "--diagnostics", "true",
           "--diagnostics_steps", "1000", "--diagnostics_probe_pairs", "2"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    probes = out / "diagnostics.jsonl"
    deadline = time.time() + 300
    while not (probes.exists() and probes.stat().st_size) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.5)  # the step-0 probe is written once training has started (the handler is in place)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    saved = [p for p in out.glob("checkpoint-*") if (p / "trainer_state.json").exists()]
    assert len(saved) == 1 and not (out / "alignment_run.json").exists()
    step = int(saved[0].name.split("-")[1])
    assert 1 <= step < 500 and f"stopped by SIGTERM at step {step}" in err and "--resume_from_checkpoint true" in err


KILL_DURING_SAVE = """
import os, signal, sys
from transformers import Trainer
from alignment.cli import main

original = Trainer._save_optimizer_and_scheduler

def save_then_die(self, output_dir):
    if self.state.global_step == 4:  # the weights of checkpoint-4 are on disk, the optimizer is not: SIGKILL
        os.kill(os.getpid(), signal.SIGKILL)
    original(self, output_dir)

Trainer._save_optimizer_and_scheduler = save_then_die
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_kill_during_a_save_leaves_the_previous_checkpoint_latest(tmp_path):
    import os
    import subprocess
    import sys

    from alignment.checkpoints import STAGING, latest_valid_checkpoint

    out = tmp_path / "run"
    args = ["train", RECIPE, "--output_dir", str(out), "--max_steps", "6", "--per_device_train_batch_size", "8",
            "--logging_steps", "1", "--eval_task", "null", "--report", "false", "--diagnostics", "false",
            "--save_steps", "2"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", KILL_DURING_SAVE, *args], cwd=ROOT, env=env, capture_output=True)
    assert proc.returncode == -9, proc.stderr[-3000:]  # really killed, mid-save
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]
    assert (out / STAGING / "checkpoint-4" / "model.safetensors").exists()  # the half-written save stayed aside
    assert latest_valid_checkpoint(out) == out / "checkpoint-2"
    assert main([*args, "--resume_from_checkpoint", "true"]) == 0
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    assert not (out / STAGING).exists() and max(losses(out)) == 6


def test_a_corrupt_stage_cache_of_the_loop_is_named_and_recomputed(tmp_path, caplog):
    """The self-play loop's cached stage files (samples.jsonl, pairs.jsonl) heal like the reference cache."""
    import logging

    from alignment.io import read_cached_jsonl, write_jsonl

    path = tmp_path / "samples.jsonl"
    assert read_cached_jsonl(path) is None
    write_jsonl(path, [{"prompt": "a", "responses": ["b"]}])
    with caplog.at_level(logging.INFO, logger="alignment"):
        assert read_cached_jsonl(path) == [{"prompt": "a", "responses": ["b"]}]
    assert f"cache hit: {path}" in caplog.text
    path.write_bytes(path.read_bytes()[:12])  # truncated mid-object
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="alignment"):
        assert read_cached_jsonl(path) is None
    assert f"{path}: unreadable cached file" in caplog.text
