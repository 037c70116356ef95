"""Online DPO against trl 1.16's ``trl.experimental.online_dpo.OnlineDPOTrainer`` given the same completions and
the same labels (both trainers' samplers replaced by one fixed sampler: random token rows, some without EOS), on
random draws of loss type, beta, missing_eos_penalty and batch size (no accumulation: trl's online trainer does
not divide the micro-batches' gradients by the accumulation steps; ours does, tested below): the loss, every
metric trl logs and every parameter after two steps within 1e-5. And its own behaviour: a pairwise judge, the real
sampler, one-line refusals."""

import copy
import random
from unittest import mock

import pytest
import torch
from datasets import Dataset, load_dataset

from alignment.trainers.builtin.online_dpo import OnlineDPOConfig, OnlineDPOTrainer
from tests.helpers import FRESH_SEED, rel_err, tiny_llama

COMMON = dict(use_cpu=True, bf16=False, report_to=[], max_steps=2, learning_rate=0.05, optim="sgd",
              lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, logging_steps=1, save_strategy="no",
              seed=0, max_length=512)  # fmt: skip


@pytest.fixture(scope="module")
def model(tokenizer):
    base = tiny_llama(len(tokenizer))
    with torch.no_grad():
        base.lm_head.weight.mul_(4.0)
    return base


def prompts_of_one_length(data_dir, tokenizer, n: int) -> list:
    """Conversational prompts whose rendered token lengths are equal (trl left-pads a batch's prompts and its
    forward then shifts their positions; ours starts every sequence at position 0: equal lengths compare them)."""
    rows = load_dataset("json", data_files=str(data_dir / "tasks/arithmetic/pref_train_conversational.jsonl"),
                        split="train").select(range(200))  # fmt: skip
    by_length: dict[int, list] = {}
    for row in rows:
        ids = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=True)
        ids = ids["input_ids"] if hasattr(ids, "keys") else ids
        by_length.setdefault(len(ids), []).append(row["prompt"])
    group = max(by_length.values(), key=len)
    assert len(group) >= n
    return group[:n]


class FixedSampler:
    """Call c gives the same random completions to both trainers: 2B rows of 1-8 ordinary tokens, an EOS after some
    (``equal``: every row of a call has the same length, an EOS taking the last token's place)."""

    def __init__(self, seed: int, vocab: int, eos: int, equal: bool = False):
        self.seed, self.vocab, self.eos, self.equal, self.calls = seed, vocab, eos, equal, 0

    def rows(self, n: int) -> list[list[int]]:
        rng = random.Random(f"{self.seed}-{self.calls}")
        self.calls += 1
        out, length = [], rng.randint(2, 8)
        for _ in range(n):
            size = length if self.equal else rng.randint(1, 8)
            row = [rng.randrange(6, self.vocab) for _ in range(size)]
            with_eos = rng.random() < 0.7
            out.append(([*row[:-1], self.eos] if self.equal else [*row, self.eos]) if with_eos else row)
        return out


def score(prompts, completions, **kwargs):
    """A deterministic reward function (trl's signature): longer answers with more digits score higher."""
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    return [0.1 * len(t) + sum(ch.isdigit() for ch in t) for t in texts]


def trl_run(model, ref, rows, tokenizer, sampler, out, **options):
    from trl.experimental.online_dpo import OnlineDPOConfig as TheirConfig
    from trl.experimental.online_dpo import OnlineDPOTrainer as TheirTrainer

    def generate(self, model, prompts, images=None):
        from trl.data_utils import maybe_apply_chat_template

        texts = [maybe_apply_chat_template({"prompt": p}, tokenizer)["prompt"] for p in prompts]
        enc = tokenizer(text=texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
        completions = sampler.rows(2 * len(prompts))
        width = max(len(c) for c in completions)
        ids = torch.tensor([c + [tokenizer.pad_token_id] * (width - len(c)) for c in completions])
        mask = torch.tensor([[1] * len(c) + [0] * (width - len(c)) for c in completions])
        return enc["input_ids"].repeat(2, 1), enc["attention_mask"].repeat(2, 1), ids, mask, None

    args = TheirConfig(output_dir=str(out), **COMMON, **options)
    losses, step = [], TheirTrainer.training_step

    def recorded(self, *a, **k):  # the loss before the Trainer rounds it to 4 decimals for its log
        loss = step(self, *a, **k)
        losses.append(loss.item())
        return loss

    with mock.patch.object(TheirTrainer, "_generate", generate), mock.patch.object(TheirTrainer, "training_step",
                                                                                   recorded):  # fmt: skip
        trainer = TheirTrainer(model=copy.deepcopy(model), ref_model=copy.deepcopy(ref), reward_funcs=[score],
                               args=args, train_dataset=Dataset.from_list(rows),
                               processing_class=tokenizer)  # fmt: skip
        trainer.train()
    logs = [e for e in trainer.state.log_history if "loss" in e]
    assert len(losses) == len(logs)  # logging_steps 1, no accumulation: one step's loss per log
    for log, loss in zip(logs, losses):
        assert log["loss"] == round(loss, 4)
        log["loss"] = loss
    return logs, dict(trainer.model.named_parameters())


def our_run(model, ref, rows, tokenizer, sampler, out, **options):
    args = OnlineDPOConfig(output_dir=str(out), **COMMON, **options)
    trainer = OnlineDPOTrainer(copy.deepcopy(model), ref_model=copy.deepcopy(ref), reward_funcs=[score], args=args,
                               train_dataset=Dataset.from_list(rows), processing_class=tokenizer)  # fmt: skip
    with mock.patch.object(OnlineDPOTrainer, "sample", lambda self, prompt_ids: sampler.rows(2 * len(prompt_ids))):
        trainer.train()
    return [e for e in trainer.state.log_history if "loss" in e], dict(trainer.model.named_parameters())


PADDED = {"objective/kl", "objective/entropy", "objective/non_score_reward", "objective/rlhf_reward"}


def draw(seed: int) -> dict:
    rng = random.Random(f"online-{seed}")
    return {"loss_type": rng.choice(["sigmoid", "ipo"]), "beta": rng.choice([0.1, 0.5]),
            "missing_eos_penalty": rng.choice([None, 1.0, 3.0]),
            "per_device_train_batch_size": rng.choice([2, 3, 4]), "equal": rng.random() < 0.5}  # fmt: skip


@pytest.mark.parametrize("seed", [FRESH_SEED, pytest.param(0, marks=pytest.mark.slow),
                                  pytest.param(1, marks=pytest.mark.slow)])  # fmt: skip
def test_equal_to_trl_given_the_same_completions_and_labels(seed, model, tokenizer, data_dir, tmp_path):
    options = draw(seed)
    equal = options.pop("equal")
    n = options["per_device_train_batch_size"] * 2
    rows = [{"prompt": p} for p in prompts_of_one_length(data_dir, tokenizer, n)]
    ref = copy.deepcopy(model)
    with torch.no_grad():
        ref.lm_head.weight.mul_(0.5)  # a reference that differs from the policy: rewards are not all zero
    vocab, eos = len(tokenizer), tokenizer.eos_token_id
    theirs = trl_run(model, ref, rows, tokenizer, FixedSampler(seed, vocab, eos, equal), tmp_path / "trl", **options)
    ours = our_run(model, ref, rows, tokenizer, FixedSampler(seed, vocab, eos, equal), tmp_path / "ours", **options)
    where = f"seed {seed} {options} equal lengths {equal}"
    # trl sums objective/kl and objective/entropy (and so non_score_reward, rlhf_reward) over the padded positions
    # of shorter completions too (pad tokens' log-probabilities); ours over completion tokens only: equal when no
    # completion is padded (README, "Online DPO")
    padded = set() if equal else PADDED
    assert len(theirs[0]) == len(ours[0]) == 2, where
    for t_log, o_log in zip(theirs[0], ours[0]):
        keys = [k for k, v in t_log.items() if isinstance(v, float) and k not in {"learning_rate", "epoch", *padded}]
        assert {"loss", "objective/scores", "rewards/margins", "val/contain_eos_token"} <= set(keys)
        scale = max(abs(t_log["logps/chosen"]), abs(t_log["logps/rejected"]), 1.0)
        for key in keys:
            assert key in o_log, f"{where}: trl logs {key}, we do not"
            assert o_log[key] == pytest.approx(t_log[key], rel=1e-5, abs=1e-6 * scale), f"{where}: {key}"
    for name, value in theirs[1].items():
        assert rel_err(ours[1][name].detach(), value.detach()) <= 1e-5, f"{where}: {name}"


class KeyedSampler:
    """Completions fixed by each prompt's tokens (so that a pair is the same in any batch layout)."""

    def __init__(self, vocab: int, eos: int):
        self.vocab, self.eos = vocab, eos

    def __call__(self, trainer, prompt_ids):
        rows = []
        for half in (0, 1):
            for ids in prompt_ids:
                rng = random.Random(f"{ids}-{half}")
                rows.append([rng.randrange(6, self.vocab) for _ in range(rng.randint(1, 6))] + [self.eos])
        return rows


def our_trainer(model, rows, tokenizer, out, judge=None, **options):
    args = OnlineDPOConfig(output_dir=str(out), **{**COMMON, **options})
    kwargs = {"judge": judge} if judge is not None else {"reward_funcs": [score]}
    return OnlineDPOTrainer(copy.deepcopy(model), args=args, train_dataset=Dataset.from_list(rows),
                            processing_class=tokenizer, **kwargs)  # fmt: skip


def test_accumulation_equals_one_big_batch(model, tokenizer, data_dir, tmp_path):
    """Two micro-batches of 2 prompts accumulated equal one batch of 4 (trl's online trainer sums instead)."""
    rows = [{"prompt": p} for p in prompts_of_one_length(data_dir, tokenizer, 4)]
    sampler = KeyedSampler(len(tokenizer), tokenizer.eos_token_id)
    params = []
    for batch, steps in ((4, 1), (2, 2)):
        trainer = our_trainer(model, rows, tokenizer, tmp_path / f"b{batch}", max_steps=1,
                              per_device_train_batch_size=batch, gradient_accumulation_steps=steps)  # fmt: skip
        with mock.patch.object(OnlineDPOTrainer, "sample", lambda self, ids: sampler(self, ids)):
            trainer.train()
        params.append({n: p.detach().clone() for n, p in trainer.model.named_parameters()})
    assert any(not torch.equal(params[0][n], p) for n, p in model.named_parameters())
    for name, value in params[0].items():
        assert rel_err(params[1][name], value) <= 1e-5, name


def test_real_sampling_a_pairwise_judge_and_a_resume(model, tokenizer, data_dir, tmp_path):
    """The real sampler (generate with the KV cache): completions end at their first EOS, a pairwise judge picks
    the chosen side; a run resumed from its step-2 checkpoint ends with the weights of the run that went on."""
    from alignment.judges import CallableJudge

    calls = []

    def longer(prompt, a, b):  # P(a > b): the longer answer wins
        calls.append((a, b))
        return 1.0 if len(a) > len(b) else 0.0 if len(a) < len(b) else 0.5

    rows = [{"prompt": p} for p in prompts_of_one_length(data_dir, tokenizer, 8)]
    options = dict(max_steps=4, per_device_train_batch_size=2, max_new_tokens=6, save_strategy="steps", save_steps=2)
    whole = our_trainer(model, rows, tokenizer, tmp_path / "whole", judge=CallableJudge(longer), **options)
    made = []
    real = OnlineDPOTrainer.sample

    def spy(self, prompt_ids):
        out = real(self, prompt_ids)
        made.append(out)
        return out

    with mock.patch.object(OnlineDPOTrainer, "sample", spy):
        whole.train()
    eos = tokenizer.eos_token_id
    assert len(made) == 4 and all(len(c) <= 6 and (eos not in c or c.index(eos) == len(c) - 1) for m in made for c in m)
    assert len(calls) == 8  # one verdict per pair, 2 pairs a step
    logged = [e for e in whole.state.log_history if "loss" in e]
    assert {"time/generation", "time/judge", "time/train", "rewards/margins"} <= set(logged[0])
    resumed = our_trainer(model, rows, tokenizer, tmp_path / "whole", judge=CallableJudge(longer), **options)
    resumed.train(resume_from_checkpoint=str(tmp_path / "whole" / "checkpoint-2"))
    for (name, a), b in zip(whole.model.named_parameters(), resumed.model.parameters()):
        assert rel_err(b.detach(), a.detach()) <= 1e-6, name


def test_beta_schedule_per_epoch(model, tokenizer, data_dir, tmp_path):
    rows = [{"prompt": p} for p in prompts_of_one_length(data_dir, tokenizer, 2)]
    trainer = our_trainer(model, rows, tokenizer, tmp_path, beta=[0.5, 0.2, 0.1])
    for epoch, beta in ((0.0, 0.5), (0.99, 0.5), (1.0, 0.2), (2.5, 0.1), (7.0, 0.1)):
        trainer.state.epoch = epoch
        assert trainer.beta == beta
    assert OnlineDPOConfig(output_dir=str(tmp_path), use_cpu=True, beta=[0.3]).beta == 0.3  # one value: a float


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"judge": None, "reward_funcs": None}, "online DPO needs one judge"),
        ({"judge": lambda p, a, b: [0.5] * len(p), "missing_eos_penalty": 1.0}, "missing_eos_penalty lowers"),
        ({"precompute_ref_logps": True}, "nothing to precompute"),
        ({"temperature": 0.0}, "temperature must be > 0"),
        ({"beta": [0.1, -1.0]}, "beta must be > 0"),
        ({"loss_type": "hinge"}, "loss_type"),
    ],
)
def test_one_line_refusals(model, tokenizer, tmp_path, kwargs, message):
    rows = [{"prompt": "What is 1 + 1?"}]
    judge = kwargs.pop("judge", "unset")
    funcs = kwargs.pop("reward_funcs", [score])
    with pytest.raises(ValueError, match=message):
        args = OnlineDPOConfig(output_dir=str(tmp_path), use_cpu=True, **kwargs)
        OnlineDPOTrainer(copy.deepcopy(model), args=args, train_dataset=Dataset.from_list(rows),
                         processing_class=tokenizer, judge=None if judge == "unset" else judge,
                         reward_funcs=None if judge not in ("unset", None) else funcs)  # fmt: skip


def test_the_recipe_needs_a_judge(tmp_path):
    from alignment.errors import RecipeError
    from alignment.recipes import load_recipe
    from tests.conftest import ROOT

    recipe = ROOT / "recipes/quickstart/online_dpo.yaml"
    with pytest.raises(RecipeError, match="field 'judge': online DPO labels"):
        load_recipe(recipe, {"judge": None})
    with pytest.raises(RecipeError, match="field 'judge'"):
        load_recipe(recipe, {"judge": "oracle"})
    assert load_recipe(recipe)[3].judge == "task"


def test_lora_samples_from_the_adapter_and_refers_to_the_base(model, tokenizer, data_dir, tmp_path):
    """Under LoRA the reference is the adapter switched off (no copy), the sampler runs the adapted policy."""
    from peft import LoraConfig

    rows = [{"prompt": p} for p in prompts_of_one_length(data_dir, tokenizer, 4)]
    args = OnlineDPOConfig(output_dir=str(tmp_path), **{**COMMON, "max_steps": 1, "max_new_tokens": 4,
                                                        "learning_rate": 0.5})  # fmt: skip
    trainer = OnlineDPOTrainer(copy.deepcopy(model), args=args, train_dataset=Dataset.from_list(rows),
                               processing_class=tokenizer, reward_funcs=[score],
                               peft_config=LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))  # fmt: skip
    assert trainer.ref_model is None and trainer.active_summary()["reference"].startswith("adapter")
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_B" in n}
    trainer.train()
    after = dict(trainer.model.named_parameters())
    assert any(not torch.equal(after[n].detach(), v) for n, v in before.items())
