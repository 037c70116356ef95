"""Property tests against trl 1.16's own trainers: random limits and rows, not points. Each draw picks a format
(standard or conversational), a ``max_length`` that cuts some rows (their completions, and for the methods whose
loss sums log-probabilities sometimes whole prompts), rows of the shipped tasks repeated to random lengths, and in
standard form prompts that end inside a word whose rest starts the chosen completion (a token merge across the
boundary). One SGD step of ours and of trl's trainer on the same tiny model and rows: the first logged loss and
every metric trl logs (but the ``logits/*`` means and token statistics ours never forms) within 1e-5, and every
parameter after the step within 1e-5."""

import copy
import random

import pytest
import torch
from datasets import Dataset

from tests.helpers import FRESH_SEED, rel_err, tiny_llama
from tests.trainers.test_trl_equivalence import COMMON

NOT_FORMED = {"logits/chosen", "logits/rejected", "entropy", "mean_token_accuracy", "num_tokens"}
SUMMED = {"cpo_sigmoid", "cpo_hinge", "kto", "dpo_keep_start", "dpo_keep_end"}  # no 0/0 on an empty completion
CASES = ["cpo_sigmoid", "cpo_hinge", "cpo_ipo", "cpo_simpo_nll", "cpo_alphapo", "simpo", "orpo", "kto",
         "dpo_keep_start", "dpo_keep_end"]  # fmt: skip


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    base = tiny_llama(len(tokenizer))
    with torch.no_grad():
        base.lm_head.weight.mul_(4.0)
    return base


def _repeat(value, k):
    if isinstance(value, str):
        return value * k
    return [{**m, "content": m["content"] * k} for m in value]


def merges_once(tokenizer, prompt: str, completions: list[str]) -> bool:
    """trl's CPO/ORPO accept the row: tokenized with each completion, the prompt's tokens change in their last
    token at most (a merge across the boundary), else trl raises."""
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    fulls = [tokenizer(prompt + c, add_special_tokens=False)["input_ids"] for c in completions]
    return all(len(f) >= len(p) and f[: len(p) - 1] == p[:-1] for f in fulls)


def draw_rows(rng: random.Random, pool, fmt: str, tokenizer, n: int = 8) -> list[dict]:
    rows = []
    for _ in range(n):
        r = rng.choice(pool[fmt])
        prompt = _repeat(r["prompt"], rng.choice([1, 1, 2, 3]))
        chosen, rejected = (_repeat(r[k], rng.choice([1, 2, 3, 5])) for k in ("chosen", "rejected"))
        if fmt == "standard" and rng.random() < 0.5 and len(prompt) > 6:  # the prompt ends inside a word
            cut = rng.randint(1, 3)
            merged = prompt[:-cut], prompt[-cut:] + chosen
            if merges_once(tokenizer, merged[0], [merged[1], rejected]):
                prompt, chosen = merged
        rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return rows


def prompt_tokens(tokenizer, prompt) -> int:
    if isinstance(prompt, str):
        return len(tokenizer(text=prompt)["input_ids"])
    return len(tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True)
               ["input_ids"])  # fmt: skip


def draw(seed: int, case: str, pool, tokenizer) -> tuple[list[dict], int, str]:
    rng = random.Random(f"{case}-{seed}")
    fmt = rng.choice(["standard", "conversational"])
    rows = draw_rows(rng, pool, fmt, tokenizer)
    prompts = [prompt_tokens(tokenizer, r["prompt"]) for r in rows]
    # summed losses: about half the prompts leave room for their completions (the other rows' are cut, some
    # to nothing); averaged losses: every prompt fits (trl's 0 / 0 on an empty completion is NaN)
    low = sorted(prompts)[len(prompts) // 2] + 4 if case in SUMMED else max(prompts) + 4
    return rows, rng.randint(low, low + 40), fmt


def options(case: str, rng: random.Random) -> dict:
    beta = rng.choice([0.1, 0.2, 0.5])
    if case.startswith("cpo_") or case == "simpo":
        loss = {"cpo_simpo_nll": "simpo", "simpo": "simpo"}.get(case, case[4:])
        out = {"loss_type": loss, "beta": beta, "cpo_alpha": 0.0 if case == "simpo" else rng.choice([0.5, 1.0])}
        if loss in ("simpo", "alphapo"):
            out["simpo_gamma"] = rng.choice([0.3, 0.5, 1.0])
        if loss == "sigmoid":
            out["label_smoothing"] = rng.choice([0.0, 0.1])
        if loss == "alphapo":
            out["alpha"] = rng.choice([0.25, 0.5])
        return out
    if case == "dpo_keep_end":
        return {"beta": beta, "truncation_mode": "keep_end"}
    return {"beta": beta}


def trainers(case: str):
    if case.startswith("cpo_") or case == "simpo":
        from trl.experimental.cpo import CPOConfig as TheirConfig
        from trl.experimental.cpo import CPOTrainer as TheirTrainer

        from alignment.trainers import CPOConfig as OurConfig
        from alignment.trainers import CPOTrainer as OurTrainer
    elif case == "orpo":
        from trl.experimental.orpo import ORPOConfig as TheirConfig
        from trl.experimental.orpo import ORPOTrainer as TheirTrainer

        from alignment.trainers import ORPOConfig as OurConfig
        from alignment.trainers import ORPOTrainer as OurTrainer
    elif case == "kto":
        from trl import KTOConfig as TheirConfig
        from trl import KTOTrainer as TheirTrainer

        from alignment.trainers import KTOConfig as OurConfig
        from alignment.trainers import KTOTrainer as OurTrainer
    else:
        from trl import DPOConfig as TheirConfig
        from trl import DPOTrainer as TheirTrainer

        from alignment.trainers import DPOConfig as OurConfig
        from alignment.trainers import DPOTrainer as OurTrainer
    return (TheirTrainer, TheirConfig), (OurTrainer, OurConfig)


def unpaired(rows: list[dict]) -> list[dict]:
    return [{"prompt": r["prompt"], "completion": r["chosen"] if i % 3 else r["rejected"], "label": bool(i % 3)}
            for i, r in enumerate(rows + rows)]  # fmt: skip


def one_step(trainer_cls, config_cls, model, rows, tokenizer, out, reference: bool, **extra):
    policy = copy.deepcopy(model)
    kwargs = {}
    if reference:  # a reference that differs from the policy, so rewards are not all zero
        ref = copy.deepcopy(model)
        with torch.no_grad():
            ref.lm_head.weight.mul_(0.5)
        kwargs["ref_model"] = ref
    args = config_cls(output_dir=str(out), **COMMON, **extra)
    trainer = trainer_cls(model=policy, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                          **kwargs)  # fmt: skip
    trainer.train()
    return trainer.state.log_history[0], dict(policy.named_parameters())


@pytest.mark.parametrize("seed", [FRESH_SEED, pytest.param(0, marks=pytest.mark.slow)])
@pytest.mark.parametrize("case", CASES)
def test_equal_to_trl_on_random_limits_and_rows(case, seed, model, pool, tokenizer, tmp_path):
    """A fresh draw per case and run in the default suite, a fixed one (seed 0) in the slow suite."""
    rows, max_length, fmt = draw(seed, case, pool, tokenizer)
    extra = {"max_length": max_length, **options(case, random.Random(f"{case}-{seed}-options"))}
    if case == "kto":
        rows = unpaired(rows)
    if case.startswith("dpo"):
        extra.update(loss_type="sigmoid")
    (their_trainer, their_config), (our_trainer, our_config) = trainers(case)
    ours_extra = dict(extra, tokenization="trl") if case.startswith("dpo") else extra
    reference = case == "kto" or case.startswith("dpo")
    theirs = one_step(their_trainer, their_config, model, rows, tokenizer, tmp_path / "trl", reference, **extra)
    ours = one_step(our_trainer, our_config, model, rows, tokenizer, tmp_path / "ours", reference, **ours_extra)
    where = f"{case} seed {seed} ({fmt}, max_length {max_length}, {extra})"
    keys = [
        k for k, v in theirs[0].items() if isinstance(v, float) and k not in NOT_FORMED | {"learning_rate", "epoch"}
    ]
    assert "loss" in keys and len(keys) >= 5, keys
    # rewards and margins are beta times differences of summed log-probabilities (each within float32 rounding,
    # about 1e-7 of its size, of trl's): their absolute error scales with beta * |log p|, not with their own size
    scale = max(abs(v) for k, v in theirs[0].items() if k.startswith("logps/"))
    tol = 1e-6 + 1e-5 * extra["beta"] * scale
    for key in keys:
        assert key in ours[0], f"{where}: trl logs {key}, we do not"
        assert ours[0][key] == pytest.approx(theirs[0][key], rel=1e-5, abs=tol), f"{where}: {key}"
    for name, value in theirs[1].items():
        assert rel_err(ours[1][name].detach(), value.detach()) <= 1e-5, f"{where}: {name}"
