"""The planner on shapes it was never tuned on: random model shapes (Llama or Qwen2 layout, hidden size, layers,
heads and key/value heads, vocabulary, tied or untied head), batches, lengths, LoRA or full fine-tuning, padded or
padding-free batches. Each case writes its recipe, model config and rows to files as a user would, asks
``alignment plan`` for the peak (no length given: the planner reads the rows and plans their heaviest batch; here
the rows are one batch, so that batch is the one that runs), then trains two steps with
``alignment train`` under torch's profiler: the most the run allocates during training (the profiler's memory
events in time order, after the model is built) plus the trained model's and anchors' parameters must be within
10% of the plan. The default suite draws small cases (seeds 0, 1 and a fresh one); ``-m slow`` larger ones."""

import json
import random
from unittest import mock

import pytest
import torch
import transformers
import yaml

from tests.conftest import ROOT
from tests.helpers import FRESH_SEED

TOKENIZER = ROOT / "data" / "tokenizer"
WORDS = [w.strip() for w in "the a film was good bad clever dull light long short scene score camera actor plot end "
         "start music pace story".split()]  # fmt: skip


def draw_case(seed: int, large: bool) -> dict:
    rng = random.Random(seed)
    heads = rng.choice([1, 2, 4, 8])
    kv = rng.choice([h for h in (1, 2, 4, 8) if heads % h == 0])
    head_dim = rng.choice([8, 16, 32] if large else [8, 16])
    model = {"model_type": rng.choice(["llama", "qwen2"]), "hidden_size": heads * head_dim,
             "intermediate_size": rng.choice([2, 3, 4]) * heads * head_dim, "num_hidden_layers": rng.randint(1, 4),
             "num_attention_heads": heads, "num_key_value_heads": kv,
             "vocab_size": rng.choice([903, 1024, 2048, 5000]), "tie_word_embeddings": rng.random() < 0.5,
             "max_position_embeddings": 1024, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}  # fmt: skip
    tokens = 16384 if large else 3072  # batch x length, kept small for the default suite
    length = rng.randint(16, 512 if large else 192)
    batch = max(1, min(32, rng.randint(1, tokens // length)))
    return {"model": model, "batch": batch, "length": length, "padding_free": rng.random() < 0.4,
            "peft": rng.random() < 0.5, "method": rng.choice(["dpo", "dpo", "sft", "cpo"]),
            "max_length": rng.choice([None, length + rng.randint(0, 64), max(12, length - rng.randint(1, 8))]),
            "seed": seed}  # fmt: skip


def rows(case: dict, rng: random.Random) -> list[dict]:
    """One batch of rows (the two steps are two epochs of it, so the heaviest batch the planner plans is the
    batch that runs): one row of the case's length in words, the others shorter, prompts a third of a row."""
    tokens = rng.sample(range(len(WORDS)), len(WORDS))
    text = [" " + WORDS[t] for t in tokens]
    out = []
    for i in range(case["batch"]):
        total = case["length"] if i == 0 else rng.randint(8, case["length"])
        prompt = max(2, total // 3)
        out.append({"prompt": "".join(rng.choices(text, k=prompt)), "chosen": "".join(rng.choices(text, k=total)),
                    "rejected": "".join(rng.choices(text, k=max(1, total - prompt - rng.randint(0, 5))))})  # fmt: skip
    if case["method"] == "sft":
        out = [{"prompt": r["prompt"], "completion": r["chosen"]} for r in out]
    return out


def write_case(case: dict, folder) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.json").write_text(json.dumps(case["model"]))
    with open(folder / "rows.jsonl", "w") as f:
        for row in rows(case, random.Random(case["seed"])):
            f.write(json.dumps(row) + "\n")
    recipe = {"method": case["method"], "init_from_config": str(folder / "model.json"),
              "tokenizer_name_or_path": str(TOKENIZER), "dataset_mixture": [str(folder / "rows.jsonl")],
              "per_device_train_batch_size": case["batch"], "max_length": case["max_length"], "max_steps": 2,
              "learning_rate": 1e-4, "use_cpu": True, "bf16": False, "dtype": "float32",
              "padding_free": case["padding_free"], "output_dir": str(folder / "out"), "eval_task": None,
              "logging_steps": 1, "seed": case["seed"], "diagnostics": False}  # fmt: skip
    if case["peft"]:
        recipe.update(use_peft=True, lora_r=4, lora_alpha=8)
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


def measured_peak(recipe: str) -> int:
    """Two training steps through ``alignment train``: the profiler's running peak during ``Trainer.train`` plus
    the parameters of the trained model and its anchors (made before it)."""
    from alignment.cli import main
    from alignment.planning.plan import _profiled_peak

    original, seen = transformers.Trainer.train, {}

    def train(self, *args, **kwargs):
        models = {id(self.model): self.model}
        for anchor in getattr(self, "anchors", {}).values():
            if anchor.model is not None:
                models[id(anchor.model)] = anchor.model
        seen["params"] = sum(p.numel() * p.element_size() for m in models.values() for p in m.parameters())

        def run():
            seen["result"] = original(self, *args, **kwargs)

        seen["peak"] = _profiled_peak(run)  # gc first, then the memory events' running peak
        return seen["result"]

    with mock.patch.object(transformers.Trainer, "train", train):
        assert main(["train", recipe]) == 0
    return seen["params"] + seen["peak"]


def check(seed: int, large: bool, tmp_path) -> None:
    from alignment.planning.plan import plan_recipe

    case = draw_case(seed, large)
    recipe = write_case(case, tmp_path / "case")
    torch.manual_seed(0)
    planned = plan_recipe(recipe).peak_bytes
    measured = measured_peak(recipe)
    assert abs(planned / measured - 1) <= 0.10, (case, planned, measured)


@pytest.mark.parametrize("seed", [0, 1, FRESH_SEED])
def test_the_plan_is_within_10_percent_of_a_real_run(seed, tmp_path):
    check(seed, False, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [100, 101, 102, 103, 104, FRESH_SEED + 1])
def test_larger_random_cases_too(seed, tmp_path):
    check(seed, True, tmp_path)
