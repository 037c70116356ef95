import json
import subprocess
import sys

import pytest

from alignment.data import DataLoadError, load_preference_data, load_preference_dataset, validate_dataset
from tests.helpers import STANDARD_ROWS, conversational, write


@pytest.mark.parametrize("kind", ["jsonl", "json", "csv", "parquet", "disk"])
def test_standard_rows_load_from_every_file_type(tmp_path, kind):
    path = write(tmp_path / f"rows.{kind}", STANDARD_ROWS, kind)
    ds, report = load_preference_dataset(path)
    assert ds.to_list() == STANDARD_ROWS
    assert report.kept == 3 and report.format == "standard" and not report.dropped


@pytest.mark.parametrize("kind", ["jsonl", "json", "parquet", "disk"])
def test_conversational_rows_load(tmp_path, kind):
    rows = conversational(STANDARD_ROWS)
    ds, report = load_preference_dataset(write(tmp_path / f"rows.{kind}", rows, kind))
    assert ds.to_list() == rows and report.format == "conversational"


def test_json_dict_of_columns(tmp_path):
    columns = {k: [r[k] for r in STANDARD_ROWS] for k in STANDARD_ROWS[0]}
    path = tmp_path / "cols.json"
    path.write_text(json.dumps(columns))
    assert load_preference_dataset(path)[0].to_list() == STANDARD_ROWS


def test_saved_datasetdict_picks_the_split(tmp_path):
    from datasets import Dataset, DatasetDict

    DatasetDict({"train": Dataset.from_list(STANDARD_ROWS), "test": Dataset.from_list(STANDARD_ROWS[:1])}).save_to_disk(
        str(tmp_path / "dd")
    )
    assert len(load_preference_dataset(tmp_path / "dd", split="test")[0]) == 1
    with pytest.raises(DataLoadError, match="no split 'validation'"):
        load_preference_dataset(tmp_path / "dd", split="validation")


def test_implicit_prompt_standard_is_extracted(tmp_path):
    rows = [{"chosen": "What is 1 + 2? 3", "rejected": "What is 1 + 2? 4"}]
    ds, _ = load_preference_dataset(write(tmp_path / "r.jsonl", rows))
    assert ds[0] == {"prompt": "What is 1 + 2?", "chosen": " 3", "rejected": " 4"}


def test_implicit_prompt_conversational_is_extracted(tmp_path):
    user = {"role": "user", "content": "Play."}
    rows = [
        {
            "chosen": [user, {"role": "assistant", "content": "paper"}],
            "rejected": [user, {"role": "assistant", "content": "I pass."}],
        }
    ]
    ds, report = load_preference_dataset(write(tmp_path / "r.jsonl", rows))
    assert ds[0] == {
        "prompt": [user],
        "chosen": [{"role": "assistant", "content": "paper"}],
        "rejected": [{"role": "assistant", "content": "I pass."}],
    }
    assert report.format == "conversational"


def test_shipped_task_files_all_load(data_dir):
    for path in sorted((data_dir / "tasks").rglob("pref_*.jsonl")):
        ds, report = load_preference_dataset(path)
        assert len(ds) == report.kept > 0 and not report.dropped


def test_mixing_with_weights_and_split(data_dir):
    a = str(data_dir / "tasks/arithmetic/pref_eval_standard.jsonl")
    b = str(data_dir / "tasks/rps/pref_eval_standard.jsonl")
    n_a, n_b = (len(load_preference_dataset(p)[0]) for p in (a, b))
    mixed = load_preference_data([{"path": a, "weight": 0.5}, {"path": b, "weight": 2.0}], seed=1)
    assert len(mixed) == round(0.5 * n_a) + 2 * n_b
    prompts = mixed["prompt"]
    assert sum(p.startswith("What is") for p in prompts) == round(0.5 * n_a)
    assert prompts[:50] != sorted(prompts[:50])  # shuffled
    again = load_preference_data({a: 0.5, b: 2.0}, seed=1)
    assert again["prompt"] == prompts  # same seed, same mix
    split = load_preference_data([a, b], test_split_size=0.1, seed=0)
    assert set(split) == {"train", "test"}
    assert len(split["test"]) == pytest.approx(0.1 * (n_a + n_b), abs=1)


def test_mixing_formats_is_refused(data_dir):
    a = str(data_dir / "tasks/rps/pref_eval_standard.jsonl")
    b = str(data_dir / "tasks/rps/pref_eval_conversational.jsonl")
    with pytest.raises(DataLoadError, match="different formats"):
        load_preference_data([a, b])
    with pytest.raises(DataLoadError, match="unknown keys"):
        load_preference_data([{"path": a, "wieght": 1}])
    with pytest.raises(DataLoadError, match="weight"):
        load_preference_data([{"path": a, "weight": 0}])


def test_missing_file_and_unknown_type(tmp_path):
    with pytest.raises(DataLoadError, match="no such file"):
        load_preference_dataset(tmp_path / "nope.jsonl")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(DataLoadError, match="unknown file type"):
        load_preference_dataset(tmp_path / "x.txt")


def test_hub_name_fails_with_a_clear_offline_message():
    # a subprocess: the Hub client reads HF_HUB_OFFLINE when it is imported
    code = (
        "from alignment.data import load_preference_dataset, DataLoadError\n"
        "try:\n    load_preference_dataset('trl-lib/ultrafeedback_binarized')\n"
        "except DataLoadError as e:\n    print('ERR', e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"},
        timeout=120,
    )
    assert out.stdout.startswith("ERR could not load Hub dataset 'trl-lib/ultrafeedback_binarized'"), out.stderr
    assert "not reachable" in out.stdout and "offline" in out.stdout


def test_validate_in_memory_dataset():
    from datasets import Dataset

    ds, report = validate_dataset(Dataset.from_list(conversational(STANDARD_ROWS)), "mine")
    assert len(ds) == 3 and report.source == "mine"
