"""The reward trainer against trl 1.16's RewardTrainer on random draws (format, rows of random lengths, a margin
column or none, reward centering, a max_length that drops some rows, full weights or LoRA, batch size and
accumulation), and its own behaviour: padding-free equals padded, long rows dropped, a saved model is a judge."""

import copy
import random

import pytest
import torch
from datasets import Dataset

from alignment.trainers.builtin.reward import RewardConfig, RewardTrainer
from tests.helpers import FRESH_SEED, rel_err, tiny_reward_model
from tests.trainers.test_trl_truncation import draw_rows

COMMON = dict(use_cpu=True, bf16=False, report_to=[], max_steps=2, learning_rate=0.05, optim="sgd",
              lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, logging_steps=1, save_strategy="no",
              seed=0, gradient_checkpointing=False)  # fmt: skip


@pytest.fixture(scope="module")
def model(tokenizer):
    return tiny_reward_model(len(tokenizer))


def draw(seed: int, pool, tokenizer) -> tuple[list[dict], dict, bool, str]:
    rng = random.Random(f"reward-{seed}")
    fmt = rng.choice(["standard", "conversational"])
    batch, accumulation = rng.choice([2, 4]), rng.choice([1, 2])
    rows = draw_rows(rng, pool, fmt, tokenizer, n=batch * accumulation * 2 + 6)
    if rng.random() < 0.5:
        for row in rows:
            row["margin"] = rng.choice([0.0, 0.5, 1.0, 2.5])
    options = {"per_device_train_batch_size": batch, "gradient_accumulation_steps": accumulation,
               "max_length": rng.choice([None, 60, 90]),
               "center_rewards_coefficient": rng.choice([None, 0.01, 0.5])}  # fmt: skip
    return rows, options, rng.random() < 0.4, fmt


def lora():
    from peft import LoraConfig

    return LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", modules_to_save=["score"], task_type="SEQ_CLS")


def run(trainer_cls, config_cls, model, rows, tokenizer, out, peft: bool, **options):
    policy = copy.deepcopy(model)
    args = config_cls(output_dir=str(out), **COMMON, **options)
    trainer = trainer_cls(model=policy, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                          peft_config=lora() if peft else None)  # fmt: skip
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    return logs, {n: p.detach() for n, p in trainer.model.named_parameters()}, trainer


@pytest.mark.parametrize("seed", [FRESH_SEED, pytest.param(0, marks=pytest.mark.slow),
                                  pytest.param(1, marks=pytest.mark.slow)])  # fmt: skip
def test_equal_to_trl_on_random_draws(seed, model, pool, tokenizer, tmp_path):
    from trl import RewardConfig as TheirConfig
    from trl import RewardTrainer as TheirTrainer

    rows, options, peft, fmt = draw(seed, pool, tokenizer)
    theirs = run(TheirTrainer, TheirConfig, model, rows, tokenizer, tmp_path / "trl", peft, **options)
    ours = run(RewardTrainer, RewardConfig, model, rows, tokenizer, tmp_path / "ours", peft, **options)
    where = f"seed {seed} ({fmt}, peft {peft}, margin {'margin' in rows[0]}, {options})"
    assert len(theirs[0]) == len(ours[0]) == 2, where
    for t_log, o_log in zip(theirs[0], ours[0]):
        keys = [k for k, v in t_log.items() if isinstance(v, float) and k not in ("learning_rate", "epoch")]
        assert {"loss", "accuracy", "margin", "min_reward", "mean_reward", "max_reward", "num_tokens"} <= set(keys)
        for key in keys:
            assert key in o_log, f"{where}: trl logs {key}, we do not"
            assert o_log[key] == pytest.approx(t_log[key], rel=1e-5, abs=1e-6), f"{where}: {key}"
    assert theirs[0][0]["loss"] != pytest.approx(theirs[0][1]["loss"], abs=1e-7), "a step that changed nothing"
    assert set(ours[1]) == set(theirs[1]), where
    for name, value in theirs[1].items():
        assert rel_err(ours[1][name], value) <= 1e-5, f"{where}: {name}"
    head = [
        v
        for n, v in ours[1].items()
        if n.endswith("score.weight") or n.endswith("score.modules_to_save.default.weight")
    ]
    assert head and not torch.equal(head[-1], model.score.weight), f"{where}: the head did not move"


def test_padding_free_equals_padded(model, pool, tokenizer, tmp_path):
    rows = draw_rows(random.Random("reward-packing"), pool, "standard", tokenizer, n=8)
    padded = run(RewardTrainer, RewardConfig, model, rows, tokenizer, tmp_path / "a", False,
                 per_device_train_batch_size=4)  # fmt: skip
    packed = run(RewardTrainer, RewardConfig, model, rows, tokenizer, tmp_path / "b", False,
                 per_device_train_batch_size=4, padding_free=True)  # fmt: skip
    for a, b in zip(padded[0], packed[0]):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert b["mean_reward"] == pytest.approx(a["mean_reward"], rel=1e-4, abs=1e-6)
    for name, value in padded[1].items():
        assert rel_err(packed[1][name], value) <= 1e-5, name


def test_long_rows_dropped_not_cut(model, tokenizer, tmp_path):
    rows = [{"prompt": "Q:", "chosen": " yes" * n, "rejected": " no"} for n in (1, 2, 40, 3, 4)]
    trainer = run(RewardTrainer, RewardConfig, model, rows, tokenizer, tmp_path, False, max_length=20,
                  per_device_train_batch_size=2)[2]  # fmt: skip
    assert len(trainer.train_dataset) == 4  # the 40-token answer is dropped whole
    with pytest.raises(Exception, match="every row has a sequence longer than max_length"):
        run(RewardTrainer, RewardConfig, model, rows[2:3], tokenizer, tmp_path / "none", False, max_length=20)


def test_a_model_with_several_labels_is_refused(tokenizer, tmp_path):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, num_labels=2)  # fmt: skip
    with pytest.raises(ValueError, match="num_labels=1"):
        RewardTrainer(LlamaForSequenceClassification(config), RewardConfig(output_dir=str(tmp_path), use_cpu=True),
                      train_dataset=Dataset.from_list([{"prompt": "a", "chosen": "b", "rejected": "c"}]),
                      processing_class=tokenizer)  # fmt: skip


@pytest.mark.parametrize("peft", [False, True])
def test_trained_model_is_a_judge(data_dir, tmp_path, peft):
    """From the shipped SFT model's folder (a causal LM): a new head, trained, saved, loaded back as a judge whose
    P(chosen > rejected) agrees with the trainer's own rewards (conversational rows: the judge renders the chat
    template)."""
    from datasets import load_dataset

    from alignment.judges import RewardModelJudge

    rows = load_dataset("json", data_files=str(data_dir / "tasks/sentiment/pref_train_conversational.jsonl"),
                        split="train").select(range(16))  # fmt: skip
    args = RewardConfig(output_dir=str(tmp_path / "rm"), use_cpu=True, report_to=[], max_steps=3,
                        per_device_train_batch_size=4, save_strategy="no", max_length=64)  # fmt: skip
    trainer = RewardTrainer(str(data_dir / "sft_model"), args, train_dataset=rows, peft_config=lora() if peft else None)
    trainer.train()
    trainer.save_model()
    judge = RewardModelJudge(str(tmp_path / "rm"))
    row = rows[0]
    p = judge([row["prompt"][0]["content"]], [row["chosen"][0]["content"]], [row["rejected"][0]["content"]])[0]
    batch = trainer.data_collator([trainer.train_dataset[0]])
    with torch.no_grad():
        trainer.model.eval()
        r = trainer.compute_loss(trainer.model, batch, return_outputs=True)[1]
    assert p == pytest.approx(torch.sigmoid(r[0] - r[1]).item(), abs=1e-5)


def test_a_causal_lm_object_is_refused_in_one_line(tokenizer, tmp_path):
    from tests.helpers import tiny_llama

    with pytest.raises(ValueError, match="no scalar `score` head: reward models require `num_labels=1`"):
        RewardTrainer(tiny_llama(len(tokenizer)), RewardConfig(output_dir=str(tmp_path), use_cpu=True),
                      train_dataset=Dataset.from_list([{"prompt": "a", "chosen": "b", "rejected": "c"}]),
                      processing_class=tokenizer)  # fmt: skip


def test_quickstart_recipe_from_the_command_line(tmp_path):
    """`alignment train recipes/quickstart/reward.yaml` (2 steps): a sequence classifier saved with its pad id, the
    held-out pair accuracy in the summary, the card and the report written; eval_task is refused in one line."""
    import json
    from pathlib import Path

    from alignment.cli import main

    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "rm"
    recipe = str(root / "recipes/quickstart/reward.yaml")
    assert main(["train", recipe, "--max_steps", "2", "--logging_steps", "1", "--output_dir", str(out)]) == 0
    summary = json.loads((out / "alignment_run.json").read_text())
    assert summary["method"] == "reward" and summary["eval"]["heldout"]["pairs"] == 500
    assert 0.0 <= summary["eval"]["heldout"]["pair_accuracy"] <= 1.0
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"] and config["pad_token_id"] == 0
    assert (out / "report.html").exists() and "reward" in (out / "README.md").read_text()
    assert main(["train", recipe, "--eval_task", "sentiment", "--output_dir", str(tmp_path / "x")]) != 0


def test_metrics_of_the_last_accumulation_step_count_every_pair(model, pool, tokenizer, tmp_path):
    """The draw that found it (seed 1856106152): 2 x 2 micro-batches of 4 pairs over 15 rows. The Trainer fetches a
    step's micro-batches before computing them, so the loader reports its end during the step's first one; a
    gather_for_metrics then cut that micro-batch to the epoch's remainder (3 of 4 pairs) and the logged accuracy
    was not trl's."""
    from trl import RewardConfig as TheirConfig
    from trl import RewardTrainer as TheirTrainer

    rows, options, peft, _ = draw(1856106152, pool, tokenizer)
    theirs = run(TheirTrainer, TheirConfig, model, rows, tokenizer, tmp_path / "trl", peft, **options)
    ours = run(RewardTrainer, RewardConfig, model, rows, tokenizer, tmp_path / "ours", peft, **options)
    assert options["gradient_accumulation_steps"] == 2
    for key in ("accuracy", "margin"):
        assert ours[0][1][key] == pytest.approx(theirs[0][1][key], rel=1e-5, abs=1e-6), key
