"""The Bradley-Terry reward model fitted to an oracle's comparisons (the standard RLHF baseline of INPO)."""

import json
import random

import pytest

from alignment.cli import main
from alignment.judges import CallableJudge, RewardModelJudge, TaskJudge
from alignment.judges import bradley_terry as bt
from alignment.tasks import get_task
from tests.helpers import FRESH_SEED


def longer_wins(prompt, a, b):
    return 1.0 if len(a) > len(b) else 0.0 if len(a) < len(b) else 0.5


def test_comparisons_follow_the_judge_drop_ties_and_are_seeded():
    samples = [{"prompt": f"q{i}", "responses": ["aa", "b", "ccc", "dd", "", "e"]} for i in range(20)]
    rows = bt.label_comparisons(samples, CallableJudge(longer_wins), seed=FRESH_SEED)
    assert rows == bt.label_comparisons(samples, CallableJudge(longer_wins), seed=FRESH_SEED)
    assert 0 < len(rows) < 20 * 3 + 1  # 6 responses (an empty one too): 3 disjoint pairs per prompt, minus ties
    assert any(r["rejected"][0]["content"] == "" for r in rows)
    for r in rows:
        chosen, rejected = r["chosen"][0]["content"], r["rejected"][0]["content"]
        assert len(chosen) > len(rejected) and r["p"] == 1.0 and r["prompt"][0]["role"] == "user"
    # a judge that is sure of nothing but 0.5 gives no comparison at all
    assert bt.label_comparisons(samples, CallableJudge(lambda p, a, b: 0.5), seed=0) == []
    # a noisy judge: labels are drawn, so about 70% agree with it
    noisy = bt.label_comparisons(samples * 20, CallableJudge(lambda p, a, b: 0.7), seed=FRESH_SEED)
    first_won = sum(r["p"] == 0.7 for r in noisy) / len(noisy)
    assert 0.6 < first_won < 0.8


def valid_vs_invalid(n, seed):
    """rps comparisons a reward model can learn in a few steps: a valid move against a response with none."""
    task, rng = get_task("rps"), random.Random(seed)
    prompts = task.prompts("train", n, seed=seed)
    samples = [{"prompt": p, "responses": [task.reference_response(p, rng, noise=0.0),
                                           task.reference_response(p, rng, noise=1.0)]} for p in prompts]  # fmt: skip
    return bt.label_comparisons(samples, TaskJudge("rps"), seed=seed)


def mean_preference(judge, rows):
    p = judge([r["prompt"][0]["content"] for r in rows], [r["chosen"][0]["content"] for r in rows],
              [r["rejected"][0]["content"] for r in rows])  # fmt: skip
    return sum(p) / len(p)


def test_the_reward_model_learns_the_oracles_order_on_held_out_prompts(data_dir, tmp_path):
    rows = valid_vs_invalid(96, FRESH_SEED % 1000)
    train, held = rows[:64], rows[64:]
    config = bt.BTFitConfig(use_cpu=True, learning_rate=5e-4, epochs=5, batch_size=8, seed=FRESH_SEED)
    trainer = bt.train_reward_model(str(data_dir / "sft_model"), train, tmp_path / "rm", config)
    judge = RewardModelJudge(trainer.model, trainer.processing_class)
    # untrained, the new head's scores are ~0 (P ~ 0.5); fitted, it is confident and right on unseen prompts
    assert bt.pairwise_accuracy(judge, held) >= 0.85 and mean_preference(judge, held) > 0.7
    # the saved folder is a reward model any judge spec can load
    again = RewardModelJudge(str(tmp_path / "rm"))
    assert bt.pairwise_accuracy(again, held) == bt.pairwise_accuracy(judge, held)


def test_fit_is_resumable_and_the_cli_reports_it(data_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "bt"
    argv = ["judges", "fit-bt", str(data_dir / "sft_model"), "--task", "rps", "--out", str(out), "--prompts", "12",
            "--samples", "2", "--epochs", "1", "--batch-size", "4", "--use-cpu"]  # fmt: skip
    assert main(argv) == 0
    fit = json.loads((out / "fit.json").read_text())
    assert fit["comparisons"] == len((out / "comparisons.jsonl").read_text().splitlines()) > 0
    assert fit["train"] + fit["heldout"] == fit["comparisons"] and fit["steps"] >= 1
    assert f"reward_model:{out}" in capsys.readouterr().out

    def refuse(*args, **kwargs):
        raise AssertionError("a finished step ran again")

    monkeypatch.setattr(bt, "sample_prompts", refuse)
    monkeypatch.setattr(bt, "train_reward_model", refuse)
    judge = bt.fit_bradley_terry(str(data_dir / "sft_model"), "rps", TaskJudge("rps"), out)
    assert isinstance(judge, RewardModelJudge)
    # killed after labelling: the comparisons are reused, only the training runs
    (out / "fit.json").unlink()
    with pytest.raises(AssertionError, match="finished step"):
        bt.fit_bradley_terry(str(data_dir / "sft_model"), "rps", TaskJudge("rps"), out)
    monkeypatch.undo()
    calls = []
    monkeypatch.setattr(bt, "sample_prompts", lambda *a, **k: calls.append(1))
    config = bt.BTFitConfig(use_cpu=True, epochs=1, batch_size=4)
    bt.fit_bradley_terry(str(data_dir / "sft_model"), "rps", TaskJudge("rps"), out, config)
    assert calls == [] and (out / "fit.json").exists()


def test_bad_fit_settings_are_refused():
    with pytest.raises(ValueError, match="samples_per_prompt >= 2"):
        bt.BTFitConfig(samples_per_prompt=1)
    with pytest.raises(ValueError, match="heldout_ratio"):
        bt.BTFitConfig(heldout_ratio=1.0)
