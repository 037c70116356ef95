"""A run is one set of settings and one writer: resuming with another beta, learning rate, dataset or model is a
one-line error listing the differences (allow_changed_settings continues and records them); a self-play folder
rerun with another eta, samples_per_prompt or seed likewise; a second run into a folder that a live process
writes stops at once naming it, and a killed run's lock is taken over."""

import dataclasses
import json
import subprocess
import sys
import time

import pytest

from alignment.cli import main
from alignment.errors import OutputDirBusyError, SettingsChangedError
from alignment.locks import acquire, release
from alignment.loops.selfplay import SelfPlay, SelfPlayArguments
from alignment.trainers import INPOConfig
from tests.conftest import DATA, ROOT

RECIPE = str(ROOT / "recipes" / "quickstart" / "dpo.yaml")
OTHER_DATA = str(DATA / "tasks" / "arithmetic" / "pref_eval_conversational.jsonl")


def _train(capsys, out, *extra) -> tuple[int, str]:
    code = main(["train", RECIPE, "--output_dir", str(out), "--max_steps", "2", "--per_device_train_batch_size", "4",
                 "--eval_task", "null", "--eval_dataset", "null", "--report", "false", "--diagnostics", "false",
                 "--precompute_ref_logps", "false", "--save_steps", "2", *extra])  # fmt: skip
    err = capsys.readouterr().err.strip()
    return code, err.splitlines()[-1] if code else err


def test_a_resume_with_other_settings_is_one_line_listing_them_unless_allowed(tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(capsys, out)[0] == 0
    resume = ["--resume_from_checkpoint", "true"]
    code, err = _train(capsys, out, *resume, "--beta", "0.2", "--learning_rate", "1.0e-4")
    assert code == 2 and err.startswith(f"error: checkpoint {out / 'checkpoint-2'} was started with other settings")
    assert "beta: 8.0 -> 0.2" in err and "learning_rate: 3e-05 -> 0.0001" in err and "allow_changed_settings" in err
    code, err = _train(capsys, out, *resume, "--dataset_mixture", f"[{OTHER_DATA}]")
    assert code == 2 and "datasets: " in err and "pref_eval_conversational" in err and "train_rows" in err
    code, err = _train(capsys, out, *resume, "--model_name_or_path", str(DATA / "sft_model") + "/")
    assert code == 2 and "model: " in err
    assert _train(capsys, out, *resume, "--logging_steps", "1", "--save_total_limit", "3")[0] == 0  # free fields
    assert _train(capsys, out, *resume, "--beta", "0.2", "--allow_changed_settings", "true")[0] == 0
    record = json.loads((out / "alignment_run.json").read_text())
    assert record["setting_changes"] == ["beta: 8.0 -> 0.2"]


def _loop(tmp_path, **changes):
    loop = SelfPlayArguments(iterations=2, samples_per_prompt=4, prompts_per_iteration=8, prompt_task="rps",
                             loop_eval_prompts=8)  # fmt: skip
    config = INPOConfig(output_dir=str(tmp_path / "loop"), use_cpu=True, eta=0.5, seed=3, report_to=[])
    loop_changes = {k: v for k, v in changes.items() if hasattr(loop, k)}
    config_changes = {k: v for k, v in changes.items() if k not in loop_changes}
    loop, config = dataclasses.replace(loop, **loop_changes), dataclasses.replace(config, **config_changes)
    return SelfPlay("inpo", loop, str(DATA / "sft_model"), config)


def test_a_self_play_folder_rerun_with_other_settings_is_refused(tmp_path):
    _loop(tmp_path).check_settings()
    assert (tmp_path / "loop" / "self_play_settings.json").exists()
    _loop(tmp_path).check_settings()  # the same settings: fine
    _loop(tmp_path, iterations=5).check_settings()  # more iterations continue the same loop
    changes = [({"eta": 0.25}, "eta: 0.5 -> 0.25"), ({"samples_per_prompt": 6}, "samples_per_prompt: 4 -> 6"),
               ({"seed": 4}, "seed: 3 -> 4")]  # fmt: skip
    for change, shown in changes:
        with pytest.raises(SettingsChangedError, match="was started with other settings") as info:
            _loop(tmp_path, **change).check_settings()
        assert shown in str(info.value) and "\n" not in str(info.value)
    allowed = _loop(tmp_path, eta=0.25, allow_changed_settings=True)
    allowed.check_settings()
    assert allowed.info["setting_changes"] == ["eta: 0.5 -> 0.25"]
    _loop(tmp_path, eta=0.25).check_settings()  # the recorded settings are the new ones now


HOLDER = "import sys, time; from alignment.locks import acquire; acquire(sys.argv[1], 'holder'); print('held', flush=True); time.sleep(120)"  # noqa: E501


def test_a_second_writer_stops_at_once_and_a_killed_runs_lock_is_taken_over(tmp_path, capsys, caplog):
    out = tmp_path / "busy"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True,
                              env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        began = time.monotonic()
        code, err = _train(capsys, out)
        assert code == 2 and time.monotonic() - began < 5
        assert err.startswith(f"error: {out} is being written by another run (pid {holder.pid} on ") and "holder" in err
        with pytest.raises(OutputDirBusyError):
            acquire(out)
    finally:
        holder.kill()
        holder.wait()
    acquire(out)  # the killed run's lock is free: taken over, its record named in a warning
    release(out)
    assert f"taking over the lock of a run that ended without releasing it (pid {holder.pid}" in caplog.text
    assert not (out / "model.safetensors").exists()


def test_an_output_dir_that_is_a_file_is_one_line_before_anything_loads(tmp_path, capsys):
    path = tmp_path / "a-file"
    path.write_text("not a folder")
    code, err = _train(capsys, path)
    assert code == 2 and err == f"error: output_dir {path} is a file, not a folder: choose another --output_dir"


def test_a_resume_from_the_last_checkpoint_of_an_epoch_records_no_zero_train_loss(tmp_path, capsys, caplog):
    out = tmp_path / "run"
    one_epoch = ["--max_steps", "-1", "--num_train_epochs", "1", "--save_steps", "3",
                 "--dataset_mixture", "[data/tasks/arithmetic/pref_train_conversational.jsonl:0.004]"]  # fmt: skip
    assert _train(capsys, out, *one_epoch)[0] == 0  # 12 rows, 3 steps: checkpoint-3 is the end of the epoch
    assert (out / "checkpoint-3").exists()
    assert _train(capsys, out, *one_epoch, "--resume_from_checkpoint", "true")[0] == 0
    record = json.loads((out / "alignment_run.json").read_text())
    assert "train_loss" not in record["train_metrics"]  # it was 0.0: the mean over zero steps
    assert all("train_loss" not in entry for entry in record["log_history"])
    assert "nothing was left to train" in caplog.text


def test_a_resume_from_the_checkpoint_at_max_steps_trains_no_step_past_it(tmp_path, capsys, caplog):
    from safetensors.torch import load_file

    out = tmp_path / "run"
    assert _train(capsys, out, "--logging_steps", "1")[0] == 0  # checkpoint-2 is max_steps
    final = load_file(out / "checkpoint-2" / "model.safetensors")
    assert _train(capsys, out, "--logging_steps", "1", "--resume_from_checkpoint", "true")[0] == 0
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]  # no checkpoint-3
    record = json.loads((out / "alignment_run.json").read_text())
    assert max(e["step"] for e in record["log_history"]) == 2 and "train_loss" not in record["train_metrics"]
    again = load_file(out / "model.safetensors")
    assert all((again[k] == v).all() for k, v in final.items())  # the checkpoint's weights are the result
    assert "nothing was left to train" in caplog.text
