"""Disk and signals: a full disk (a real 20 MB tmpfs) is one line naming the folder, with no temporary file left
and nothing half-written promoted; Ctrl-C (SIGINT) saves a checkpoint and exits like SIGTERM, a second Ctrl-C
stops at once, neither with a traceback; a truncated iterations.jsonl or trained.json heals."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from alignment.checkpoints import STAGING
from alignment.cli import main
from alignment.loops.selfplay import SelfPlay, SelfPlayArguments
from alignment.trainers import INPOConfig
from tests.conftest import DATA, ROOT

RECIPE = str(ROOT / "recipes" / "quickstart" / "dpo.yaml")


@contextlib.contextmanager
def small_disk(path, megabytes):
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"mounting a {megabytes} MB tmpfs needs root: {done.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _train(capsys, out, *extra):
    code = main(["train", RECIPE, "--output_dir", str(out), "--max_steps", "2", "--per_device_train_batch_size", "4",
                 "--eval_task", "null", "--eval_dataset", "null", "--diagnostics", "false", *extra])  # fmt: skip
    err = capsys.readouterr().err.strip()
    return code, err.splitlines()[-1] if err else ""


def _leftovers(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if ".tmp" in p.name or STAGING in str(p))


def test_a_full_disk_during_a_checkpoint_is_one_line_and_leaves_nothing_half_written(tmp_path, capsys):
    with small_disk(tmp_path / "disk", 20) as disk:  # the model is 8.4 MB, a checkpoint with Adam's state ~25 MB
        out = disk / "run"
        code, last = _train(capsys, out, "--save_steps", "1", "--precompute_ref_logps", "false")
        assert code == 2 and last.startswith(f"error: could not save checkpoint-1 in {out} ("), last
        assert "the partial checkpoint was removed; no complete checkpoint exists yet" in last
        assert _leftovers(out) == [] and not list(out.glob("checkpoint-*"))


def test_a_full_disk_at_the_final_save_keeps_no_truncated_model(tmp_path, capsys):
    with small_disk(tmp_path / "disk", 5) as disk:
        out = disk / "run"
        code, last = _train(capsys, out, "--precompute_ref_logps", "false", "--report", "false")
        assert code == 2 and last.startswith(f"error: could not save the model in {out} ("), last
        assert _leftovers(out) == [] and not (out / "model.safetensors").exists()
        assert not (out / "_partial-model").exists() and not (out / "alignment_run.json").exists()


def _start(out, *extra):
    cmd = [sys.executable, "-m", "alignment.cli", "train", RECIPE, "--output_dir", str(out), "--max_steps", "500",
           "--per_device_train_batch_size", "8", "--eval_task", "null", "--diagnostics", "true",
           "--diagnostics_steps", "1000", "--diagnostics_probe_pairs", "2", *extra]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    probes, deadline = out / "diagnostics.jsonl", time.time() + 300
    while not (probes.exists() and probes.stat().st_size) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.5)  # the step-0 probe is written once training has started (the handler is in place)
    return proc


def test_ctrl_c_saves_a_checkpoint_and_a_second_one_stops_at_once(tmp_path):
    out = tmp_path / "once"
    proc = _start(out, "--precompute_ref_logps", "false")  # straight to training: the handler is what is tested
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0 and "Traceback" not in err, err[-3000:]
    saved = [p for p in out.glob("checkpoint-*") if (p / "trainer_state.json").exists()]
    step = int(saved[0].name.split("-")[1])
    assert len(saved) == 1 and f"stopped by SIGINT at step {step}" in err and "Ctrl-C again to stop at once" in err
    twice = tmp_path / "twice"
    proc = _start(twice, "--precompute_ref_logps", "false")
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130 and "Traceback" not in err, err[-3000:]
    assert err.strip().splitlines()[-1].startswith("interrupted (Ctrl-C): stopped at once")
    assert not (twice / "alignment_run.json").exists()


def test_a_truncated_iterations_log_or_trained_marker_heals(tmp_path, caplog, monkeypatch):
    loop = SelfPlayArguments(iterations=1, samples_per_prompt=2, prompts_per_iteration=4, prompt_task="rps",
                             loop_eval_prompts=4)  # fmt: skip
    config = INPOConfig(output_dir=str(tmp_path / "loop"), use_cpu=True, per_device_train_batch_size=4, max_steps=1,
                        report_to=[], save_strategy="no", logging_steps=1, seed=3)  # fmt: skip
    monkeypatch.setattr(SelfPlay, "evaluate", lambda self, t, path: {"greedy": {"t": t}, "sampled": {}})
    rows = SelfPlay("inpo", loop, str(DATA / "sft_model"), config).run()
    out = tmp_path / "loop"
    assert [r["iteration"] for r in rows] == [0, 1]
    assert not list((out / "iteration-1" / "model").glob("checkpoint-*"))  # save_strategy no is honoured
    lines = (out / "iterations.jsonl").read_text().splitlines()
    (out / "iterations.jsonl").write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])  # cut mid-line
    trained = out / "iteration-1" / "model" / "trained.json"
    trained.write_text(trained.read_text()[:10])
    again = SelfPlay("inpo", loop, str(DATA / "sft_model"), config).run()
    assert [r["iteration"] for r in again] == [0, 1] and again[1]["pairs"] == rows[1]["pairs"]
    assert "iterations.jsonl: line 2 is unreadable" in caplog.text and "trained.json: unreadable" in caplog.text
    assert json.loads(trained.read_text())["iteration"] == 1  # retrained and rewritten
