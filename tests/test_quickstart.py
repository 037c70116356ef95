"""The quickstart path end to end at small scale: train from a recipe, evaluate, on-policy pairs."""

import json

from alignment.cli import main
from tests.conftest import DATA, ROOT


def test_train_recipe_writes_model_card_and_run_summary(tmp_path, capsys):
    out = tmp_path / "dpo"
    code = main(
        [
            "train",
            str(ROOT / "recipes/quickstart/dpo.yaml"),
            "--max_steps",
            "2",
            "--output_dir",
            str(out),
            "--eval_prompts",
            "20",
            "--ref_cache_dir",
            str(tmp_path / "ref-cache"),  # the three runs share one precompute of the reference
        ]
    )
    assert code == 0
    summary = json.loads((out / "alignment_run.json").read_text())
    assert summary["method"] == "dpo" and summary["eval"]["greedy"]["n"] == 20
    assert summary["active"]["reference"] == "precomputed (copy)"
    assert summary["eval_start"]["greedy"]["n"] == 20  # the start model, evaluated before training
    card = (out / "README.md").read_text()
    assert "base_model: data/sft_model" in card and "alignment train" in card and "| start model |" in card
    assert (out / "model.safetensors").exists()
    again = tmp_path / "no-start-eval"
    args = ["train", str(ROOT / "recipes/quickstart/dpo.yaml"), "--max_steps", "2", "--logging_steps", "1",
            "--ref_cache_dir", str(tmp_path / "ref-cache")]  # fmt: skip
    assert main([*args, "--output_dir", str(again), "--eval_task", "null"]) == 0
    assert main([*args, "--output_dir", str(tmp_path / "start"), "--eval_prompts", "20"]) == 0
    without = json.loads((again / "alignment_run.json").read_text())
    with_start = json.loads((tmp_path / "start" / "alignment_run.json").read_text())
    assert "eval_start" not in without and "eval_start" in with_start
    losses = [[e["loss"] for e in r["log_history"] if "loss" in e] for r in (without, with_start)]
    assert (
        losses[0] == losses[1] and len(losses[0]) == 2
    )  # evaluating the start model draws nothing from training's RNG


def test_eval_and_onpolicy_pairs(tmp_path, capsys):
    assert (
        main(
            [
                "eval",
                str(DATA / "sft_model"),
                "--task",
                "rps",
                "--n",
                "30",
                "--mode",
                "greedy",
                "--output",
                str(tmp_path / "e.json"),
            ]
        )
        == 0
    )
    result = json.loads((tmp_path / "e.json").read_text())
    assert set(result["greedy"]) >= {"p_rock", "tv_to_uniform", "exploitability"}
    assert (
        main(
            [
                "data",
                "pairs",
                str(DATA / "sft_model"),
                "--task",
                "arithmetic",
                "--n",
                "40",
                "--samples",
                "3",
                "--out",
                str(tmp_path / "p.jsonl"),
            ]
        )
        == 0
    )
    from alignment.data import load_preference_dataset
    from alignment.tasks import get_task

    pairs, report = load_preference_dataset(tmp_path / "p.jsonl")
    task = get_task("arithmetic")
    assert len(pairs) > 5 and report.format == "conversational"
    for row in pairs:
        prompt = row["prompt"][0]["content"]
        assert task.preference(prompt, row["chosen"][0]["content"], row["rejected"][0]["content"]) > 0.5
    assert main(["eval", str(tmp_path / "missing"), "--task", "rps"]) == 2
