"""Recipes and values are checked before any work: malformed YAML (an alias bomb, duplicate keys, non-text
keys) and every bad value of the cases users hit are one-line errors, never a traceback; a property test draws
every config field with bad values (0, negative, NaN, infinities, wrong types)."""

import dataclasses
import json
import math
import time

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from alignment.cli import main
from alignment.configs import ModelArguments, ScriptArguments
from alignment.errors import DiskFullError, RecipeError
from alignment.io import atomic_write_text
from alignment.loops.settings import SelfPlayArguments
from alignment.recipes import load_recipe
from alignment.trainers import DPOConfig
from tests.conftest import DATA, ROOT

DPO = ROOT / "recipes" / "quickstart" / "dpo.yaml"
INPO = ROOT / "recipes" / "quickstart" / "inpo.yaml"
BOMB = "".join(f"{a}: &{a} [{', '.join([f'*{p}' if p else '1'] * 9)}]\n" for p, a in zip(["", *"abcdefg"], "abcdefgh"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # list k holds 9 copies of list k-1: n_k = 1 + 9 n_{k-1}, n_a = 10; sum n_a..n_h = 54,481,004, + 11 for the
        # mapping itself, its 9 keys and "dpo"
        (BOMB + "method: dpo\n", "its aliases expand to 54,481,015 values (more than 100,000): refused"),
        ("method: dpo\nbeta: 0.1\nbeta: 0.2\n", "line 3: duplicate key 'beta' (the last one would silently win)"),
        ("method: dpo\n1: 2\n", "line 2: key 1 is not text (field names are words)"),
        ("method: dpo\ndataset_mixture:\n  - {path: a, path: b}\n", "line 3: duplicate key 'path'"),
        ("method: [dpo\n", "not valid YAML (while parsing a flow sequence in"),
    ],
)
def test_malformed_yaml_is_one_line_in_under_a_second(tmp_path, text, message):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    began = time.perf_counter()
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert time.perf_counter() - began < 1.0
    assert str(info.value).startswith(f"{path}: {message}") and "\n" not in str(info.value), str(info.value)


FAST = ["--max_steps", "1", "--eval_task", "null", "--eval_dataset", "null", "--report", "false",
        "--diagnostics", "false", "--precompute_ref_logps", "false"]  # fmt: skip
TRAIN_DATA = "data/tasks/arithmetic/pref_train_conversational.jsonl"


def _models(tmp_path):
    import shutil

    for name, size in (("truncated", 1000), ("empty", 0)):
        shutil.copytree(DATA / "sft_model", tmp_path / name)
        with open(tmp_path / name / "model.safetensors", "r+b") as f:
            f.truncate(size)
    (tmp_path / "notjson.json").write_text("not json")


CASES = {
    "accumulation 0": (["train", DPO, *FAST, "--gradient_accumulation_steps", "0"],
                       "gradient_accumulation_steps must be >= 1, got 0"),
    "batch 0": (["train", DPO, *FAST, "--per_device_train_batch_size", "0"],
                "per_device_train_batch_size must be >= 1, got 0"),
    "split 1.5": (["train", DPO, *FAST, "--test_split_size", "1.5"], "test_split_size must be a fraction in (0, 1)"),
    "weight nan": (["train", DPO, *FAST, "--dataset_mixture", f"[{TRAIN_DATA}:nan]"],
                   "weight must be a finite number > 0, got nan"),
    "weight inf": (["train", DPO, *FAST, "--dataset_mixture", f"[{{path: {TRAIN_DATA}, weight: .inf}}]"],
                   "weight must be a finite number > 0, got inf"),
    "output_dir file": (["train", DPO, *FAST, "--output_dir", "{tmp}/notjson.json"], "is a file, not a folder"),
    "truncated weights": (["train", DPO, *FAST, "--model_name_or_path", "{tmp}/truncated"],
                          "the model's weights cannot be read (a truncated or corrupt .safetensors file"),
    "empty weights": (["train", DPO, *FAST, "--model_name_or_path", "{tmp}/empty"], "weights cannot be read"),
    "eval truncated": (["eval", "{tmp}/truncated", "--task", "arithmetic", "--n", "2"], "weights cannot be read"),
    "eval empty": (["eval", "{tmp}/empty", "--task", "arithmetic", "--n", "2"], "weights cannot be read"),
    "init_from_config": (["train", DPO, *FAST, "--init_from_config", "{tmp}/notjson.json"],
                         "field 'init_from_config': {tmp}/notjson.json: not a JSON model config"),
    "chat_template": (["train", DPO, *FAST, "--chat_template", "{% for m in messages %}{{ m.content }"],
                      "chat_template is not a valid Jinja template (line 1: unexpected '}')"),
    "judge bogus": (["train", INPO, *FAST, "--judge", "bogus"], "judge must be task, task:NAME"),
    "judge path": (["train", INPO, *FAST, "--judge", "reward_model:/nonexistent"],
                   "/nonexistent is not a model folder"),
    "prompt_task": (["train", INPO, *FAST, "--prompt_task", "bogus"], "prompt_task must be one of"),
    "temperature 0": (["train", INPO, *FAST, "--temperature", "0"], "temperature must be > 0, got 0"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_values_are_one_line_errors(tmp_path, capsys, case):
    _models(tmp_path)
    argv, expected = CASES[case]
    argv = [str(a).replace("{tmp}", str(tmp_path)) for a in argv]
    if argv[0] == "train" and "--output_dir" not in argv:
        argv += ["--output_dir", str(tmp_path / "out")]
    assert main(argv) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: ") and expected.replace("{tmp}", str(tmp_path)) in last, last
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_eval_n_must_be_positive(capsys):
    with pytest.raises(SystemExit) as info:
        main(["eval", str(DATA / "sft_model"), "--task", "arithmetic", "--n", "-5"])
    assert info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.endswith("argument --n: expected a whole number >= 1, got '-5'")


def _run_dir(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    history = [{"loss": 0.7, "step": 1}, {"loss": 0.6, "step": 2}]
    record = {"method": "dpo", "log_history": history, "hyperparameters": {}}
    (run / "alignment_run.json").write_text(json.dumps(record))
    return run


def test_report_into_a_folder_and_a_malformed_run_record(tmp_path, capsys):
    run, folder = _run_dir(tmp_path), tmp_path / "pages"
    folder.mkdir()
    assert main(["report", str(run), "-o", str(folder)]) == 0
    assert (folder / "report.html").exists() and (folder / "report.md").exists()
    assert [p.name for p in folder.iterdir() if ".tmp" in p.name] == []
    (run / "alignment_run.json").write_text('{"method": "dpo", "log_h')
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {run / 'alignment_run.json'}: not valid JSON") and "\n" not in err


def test_a_failed_atomic_write_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "page.html"
    target.mkdir()  # a folder in the way: the rename fails
    with pytest.raises(DiskFullError, match=f"cannot write {target}"):
        atomic_write_text(target, "text")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["page.html"]


# ----- the property test: every field, bad values ----------------------------------------------------------
def _names(*classes):
    return sorted({f.name for cls in classes for f in dataclasses.fields(cls) if f.init})


DPO_FIELDS = _names(ScriptArguments, ModelArguments, DPOConfig)
LOOP_FIELDS = _names(SelfPlayArguments)
BAD = st.one_of(st.sampled_from([0, -1, -(10**9), math.nan, math.inf, -math.inf, 0.5, "x", "", True, [1], {"a": 1}]),
                st.floats(allow_nan=True, allow_infinity=True), st.integers(-(10**12), 10**12))  # fmt: skip


def _parse_or_one_line(recipe, overrides):
    try:
        load_recipe(recipe, {**overrides, "use_cpu": True})
    except RecipeError as e:
        message = str(e)
        assert message.startswith(str(recipe)) and "\n" not in message.strip(), message


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(overrides=st.dictionaries(st.sampled_from(DPO_FIELDS), BAD, min_size=1, max_size=2))
@example(overrides={"accelerator_config": "x"})  # file fields naming no file (transformers opens them)
@example(overrides={"fsdp": 0, "fsdp_config": "x"})
def test_every_field_with_bad_values_parses_or_fails_in_one_line(overrides):
    _parse_or_one_line(DPO, overrides)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(overrides=st.dictionaries(st.sampled_from(LOOP_FIELDS), BAD, min_size=1, max_size=2))
def test_every_self_play_field_with_bad_values_parses_or_fails_in_one_line(overrides):
    _parse_or_one_line(INPO, overrides)
