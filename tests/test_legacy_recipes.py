"""Recipes from elsewhere (issue 15): the alignment-handbook's and TRL's recipe shapes, written for these
tests with local model and data paths, parsed and trained for two steps; the WARNING each mapped field
prints is asserted."""

import json
import logging

import pytest
import yaml
from datasets import Dataset, DatasetDict

from alignment.cli import main
from alignment.data.tokenize import cut_parts
from alignment.recipes import RecipeError, load_recipe
from tests.conftest import DATA
from tests.helpers import required_recipe_fields

MODEL = str(DATA / "sft_model")
ROWS = DATA / "tasks" / "arithmetic" / "pref_train_conversational.jsonl"


@pytest.fixture(scope="module")
def ultrafeedback_copy(tmp_path_factory):
    """A local dataset in ultrafeedback_binarized's shape: a prompt string, chosen/rejected as whole
    conversations (the user turn included), extra columns, splits train_prefs/test_prefs."""
    rows = [json.loads(line) for line in ROWS.read_text().splitlines()[:40]]

    def shaped(row):
        user = row["prompt"]
        return {"prompt": user[-1]["content"], "chosen": user + row["chosen"], "rejected": user + row["rejected"],
                "messages": user + row["chosen"], "score_chosen": 8.0, "score_rejected": 3.0}  # fmt: skip

    folder = tmp_path_factory.mktemp("ultrafeedback") / "ultrafeedback_binarized"
    shaped_rows = [shaped(r) for r in rows]
    DatasetDict(
        {"train_prefs": Dataset.from_list(shaped_rows[:32]), "test_prefs": Dataset.from_list(shaped_rows[32:])}
    ).save_to_disk(str(folder))
    return str(folder)


COMMON = {"model_name_or_path": MODEL, "bf16": False, "use_cpu": True, "max_steps": 2, "logging_steps": 1,
          "per_device_train_batch_size": 4, "per_device_eval_batch_size": 4, "save_strategy": "no",
          "report_to": "none", "eval_task": None, "report": False, "diagnostics": False}  # fmt: skip


def write(tmp_path, recipe: dict):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return str(path)


def warnings_of(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "recipe field" in r.getMessage()]


def test_handbook_recipe_runs_with_the_dpo_command(tmp_path, ultrafeedback_copy, caplog):
    """recipes/zephyr-7b-beta/dpo/config_full.yaml's shape, no method field: `alignment dpo --config`."""
    recipe = {
        **COMMON, "torch_dtype": None,
        "dataset_mixture": {"datasets": [
            {"id": ultrafeedback_copy, "config": "default", "split": "train_prefs", "columns": ["chosen", "rejected"],
             "weight": 1.0},
            {"id": ultrafeedback_copy, "split": "test_prefs", "columns": ["chosen", "rejected"], "weight": 1.0}],
            "test_split_size": 8, "seed": 0},
        "dataset_num_proc": 1, "beta": 0.01, "do_eval": True, "eval_strategy": "steps", "eval_steps": 2,
        "gradient_checkpointing": True, "gradient_checkpointing_kwargs": {"use_reentrant": False},
        "learning_rate": 5.0e-7, "log_level": "info", "lr_scheduler_type": "cosine", "max_length": 1024,
        "max_prompt_length": 512, "optim": "adamw_torch", "output_dir": str(tmp_path / "out"), "seed": 42,
        "warmup_ratio": 0.1,
    }  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="alignment"):
        assert main(["dpo", "--config", write(tmp_path, recipe)]) == 0
    said = "\n".join(warnings_of(caplog))
    assert "'torch_dtype'" in said and "'warmup_ratio'" in said and "became warmup_steps: 0.1" in said
    assert "'max_prompt_length'" in said and "'dataset_mixture' (alignment-handbook): 2 source(s)" in said
    run = json.loads((tmp_path / "out" / "alignment_run.json").read_text())
    assert run["method"] == "dpo" and any("eval_loss" in e for e in run["log_history"])
    _, script, _, config = load_recipe(write(tmp_path, recipe), method="dpo")
    assert config.warmup_steps == 0.1 and config.max_prompt_length == 512 and script.test_split_size == 8
    assert script.dataset_mixture[0] == {"path": ultrafeedback_copy, "weight": 1.0, "config": "default",
                                         "split": "train_prefs", "columns": ["chosen", "rejected"]}  # fmt: skip


def test_older_handbook_recipe_with_lora_runs_with_train_and_method(tmp_path, ultrafeedback_copy, caplog):
    """recipes/zephyr-7b-beta/dpo/config_qlora.yaml's shape (dataset_mixer, dataset_splits,
    evaluation_strategy, preprocessing_num_workers, LoRA; load_in_4bit left out on CPU)."""
    recipe = {
        **COMMON, "torch_dtype": "float32", "use_peft": True, "lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.05,
        "lora_target_modules": ["q_proj", "v_proj"], "dataset_mixer": {ultrafeedback_copy: 1.0},
        "dataset_splits": ["train_prefs", "test_prefs"], "preprocessing_num_workers": 1,
        "evaluation_strategy": "steps", "eval_steps": 2, "learning_rate": 5.0e-6, "max_prompt_length": 512,
        "output_dir": str(tmp_path / "out"), "warmup_ratio": 0.1,
    }  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="alignment"):
        assert main(["train", write(tmp_path, recipe), "--method", "dpo"]) == 0
    said = "\n".join(warnings_of(caplog))
    for field in ("dataset_mixer", "evaluation_strategy", "preprocessing_num_workers", "torch_dtype"):
        assert f"'{field}'" in said, field
    assert "became eval_strategy: 'steps'" in said and "became dtype: 'float32'" in said
    _, script, model_args, config = load_recipe(write(tmp_path, recipe), method="dpo")
    assert script.eval_dataset == [{"path": ultrafeedback_copy, "split": "test_prefs"}]
    assert config.dataset_num_proc == 1 and model_args.use_peft and model_args.lora_r == 4
    run = json.loads((tmp_path / "out" / "alignment_run.json").read_text())
    assert any("eval_loss" in e for e in run["log_history"])


def test_trl_script_recipe_with_rpo_alpha_becomes_rpo(tmp_path, ultrafeedback_copy, caplog):
    """TRL's `trl dpo --config` shape with fields TRL 0.29 removed."""
    recipe = {
        **COMMON, "dataset_name": ultrafeedback_copy, "dataset_train_split": "train_prefs",
        "dataset_test_split": "test_prefs", "rpo_alpha": 1.0, "max_completion_length": 64,
        "generate_during_eval": False, "ref_model_init_kwargs": {"dtype": "float32"}, "label_pad_token_id": -100,
        "output_dir": str(tmp_path / "out"), "learning_rate": 1e-5,
    }  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="alignment"):
        assert main(["dpo", "--config", write(tmp_path, recipe)]) == 0
    said = "\n".join(warnings_of(caplog))
    assert "became method rpo with eta 1.0 and sft_normalization token_mean" in said
    assert "'ref_model_init_kwargs' (TRL 0.29): ignored" in said and "'label_pad_token_id'" in said
    assert "'max_completion_length'" in said and "'dataset_name'" in said
    assert "generate_during_eval" not in said  # false: nothing to say
    method, script, _, config = load_recipe(write(tmp_path, recipe), method="dpo")
    assert method == "rpo" and config.eta == 1.0 and config.sft_normalization == "token_mean"
    assert config.max_completion_length == 64 and script.eval_dataset is None  # eval_strategy no: no eval split
    assert json.loads((tmp_path / "out" / "alignment_run.json").read_text())["method"] == "rpo"


def test_without_a_method_the_error_names_both_ways(tmp_path, capsys):
    path = write(tmp_path, {**COMMON, "dataset_mixture": [str(ROWS)]})
    assert main(["train", path]) == 2
    err = capsys.readouterr().err.strip()
    assert "no method" in err and "--method dpo" in err and "alignment dpo --config RECIPE" in err and "\n" not in err
    assert main(["rpo", "--config", write(tmp_path, {**COMMON, "method": "dpo"})]) == 2
    assert "the recipe's method is 'dpo' but the command says 'rpo'" in capsys.readouterr().err
    assert main(["dpo"]) == 2
    assert "--config RECIPE.yaml" in capsys.readouterr().err
    from alignment.trainers import methods

    for name, registered in methods().items():  # every registered method is a command, and names the recipe's
        path = write(tmp_path, {**COMMON, "dataset_mixture": [str(ROWS)], **required_recipe_fields(registered)})
        assert load_recipe(path, method=name)[0] == name


def test_fields_whose_meaning_cannot_be_kept_are_one_line_errors(tmp_path):
    base = {**COMMON, "method": "dpo", "dataset_mixture": [str(ROWS)]}
    with pytest.raises(RecipeError, match="load_in_4bit needs bitsandbytes and a CUDA device"):
        load_recipe(write(tmp_path, {**base, "load_in_4bit": True}))
    with pytest.raises(RecipeError, match="reference_free: true"):
        load_recipe(write(tmp_path, {**base, "reference_free": True}))
    with pytest.raises(RecipeError, match="does not apply to method 'sft'"):
        load_recipe(write(tmp_path, {**base, "method": "sft", "rpo_alpha": 1.0}))


def test_prompt_and_completion_limits_cut_as_trl_did():
    ids = {"prompt_ids": [1, 2, 3, 4, 5], "chosen_ids": [6, 7, 8], "rejected_ids": [9]}
    assert cut_parts(ids, 2, 2)
    assert ids == {"prompt_ids": [4, 5], "chosen_ids": [6, 7], "rejected_ids": [9]}  # prompt: its last tokens
    assert not cut_parts(ids, None, None) and not cut_parts(ids, 5, 5)
