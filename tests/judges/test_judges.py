"""Judges (task oracle, reward model, pair-preference LM, callable) and the rankings built on them."""

import math
import random

import pytest
import torch

from alignment.judges import (
    CallableJudge,
    CountingJudge,
    PairPreferenceJudge,
    RewardModelJudge,
    TaskJudge,
    best_and_worst,
    knockout,
    rank_candidates,
)
from tests.helpers import FRESH_SEED, tiny_llama


def by_value(prompt, a, b):  # a total order on integer strings
    return 1.0 if int(a) > int(b) else 0.0 if int(a) < int(b) else 0.5


class PerPromptCounter:
    """Counts comparisons per prompt and the judge calls."""

    def __init__(self):
        self.calls, self.per_prompt = 0, {}

    def __call__(self, prompts, a, b):
        self.calls += 1
        for p in prompts:
            self.per_prompt[p] = self.per_prompt.get(p, 0) + 1
        return [by_value(p, x, y) for p, x, y in zip(prompts, a, b)]


def test_knockout_finds_the_best_and_the_worst_of_a_total_order_in_at_most_2k_comparisons():
    rng = random.Random(FRESH_SEED)
    sizes = [2, 3, 4, 5, 7, 8, 16]
    prompts = [f"prompt {i}" for i in range(len(sizes))]
    candidates = [[str(v) for v in rng.sample(range(1000), k)] for k in sizes]
    judge = PerPromptCounter()
    pairs = knockout(prompts, candidates, judge, seed=FRESH_SEED)
    for prompt, cands, k, pair in zip(prompts, candidates, sizes, pairs):
        values = [int(c) for c in cands]
        assert pair == (values.index(max(values)), values.index(min(values))), (k, cands)
        assert judge.per_prompt[prompt] <= 2 * k
    assert judge.calls <= 1 + 2 * math.ceil(math.log2(16)) + 1  # rounds batched over all prompts
    # K = 8: 4 (split) + 3 + 3 (brackets) + 1 (final; not judged again when the two already met in the split)
    assert judge.per_prompt["prompt 5"] in (10, 11)


def test_knockout_gives_none_for_ties_and_single_candidates():
    judge = CallableJudge(lambda p, a, b: 0.5)
    assert knockout(["x", "y"], [["a", "b", "c", "d"], ["only"]], judge) == [None, None]
    with pytest.raises(ValueError, match="2 prompts but 1 candidate lists"):
        knockout(["x", "y"], [["a", "b"]], judge)


def test_knockout_sampled_verdicts_follow_the_probabilities():
    judge = CallableJudge(lambda p, a, b: 0.9 if a < b else 0.1)  # "a" beats "b" 90% of the time
    wins = sum(knockout([str(i)], [["a", "b"]], judge, seed=i, sample=True)[0] == (0, 1) for i in range(400))
    assert 300 < wins < 400  # about 0.9 * 0.9 = 81% (the split, then the final): not always, not never


def test_rank_candidates_uses_best_and_worst_of_k_for_a_pointwise_judge():
    class Scores:
        calls = 0

        def scores(self, prompts, responses):
            self.calls += 1
            return [float(len(r)) for r in responses]

        def __call__(self, prompts, a, b):
            raise AssertionError("a pointwise judge is ranked by its scores")

    judge = Scores()
    out = rank_candidates(["p", "q", "r"], [["aa", "a", "aaaa"], ["b", "b"], ["c"]], judge)
    assert out == [(2, 1), None, None] and judge.calls == 1
    assert best_and_worst(["p"], [["xyz", "x"]], judge) == [(0, 1)]


def test_task_judge_is_the_oracle():
    judge = TaskJudge("rps")
    prompt = "Play rock, paper or scissors."
    got = judge([prompt] * 3, ["paper", "rock", "rock"], ["rock", "paper", "rock"])
    assert got == [judge.task.preference(prompt, a, b) for a, b in (("paper", "rock"), ("rock", "paper"),
                                                                      ("rock", "rock"))]  # fmt: skip
    assert got[0] > 0.5 > got[1] and got[2] == 0.5


def test_callable_judge_checks_what_it_gets():
    batched = CallableJudge(lambda ps, a, b: [0.25] * len(ps), batched=True)
    assert batched(["p", "q"], ["a", "b"], ["c", "d"]) == [0.25, 0.25]
    with pytest.raises(ValueError, match=r"returned 1\.5 for item 0"):
        CallableJudge(lambda p, a, b: 1.5)(["p"], ["a"], ["b"])
    with pytest.raises(ValueError, match="2 prompts, 1 responses a"):
        batched(["p", "q"], ["a"], ["b", "c"])
    counted = CountingJudge(batched)
    counted(["p"], ["a"], ["b"])
    counted(["p", "q"], ["a", "b"], ["c", "d"])
    assert (counted.calls, counted.comparisons) == (2, 3)


@pytest.fixture(scope="module")
def reward_model(tokenizer):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(FRESH_SEED)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, pad_token_id=0, num_labels=1)  # fmt: skip
    return LlamaForSequenceClassification(config).eval()


def test_reward_model_judge_is_the_sigmoid_of_the_reward_difference(reward_model, tokenizer):
    prompts = ["What is 2 + 2?", "What is 3 + 5?", "Play rock, paper or scissors."]
    a, b = [" 4", " 8 for sure, it is eight", " paper"], [" 5", " 9", " paper"]
    judge = RewardModelJudge(reward_model, tokenizer, batch_size=2)

    def reward(prompt, response):  # one unpadded sequence at a time
        ids = tokenizer(judge.text(prompt, response), return_tensors="pt", add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            return reward_model(input_ids=ids).logits[0, 0].item()

    expected = [1 / (1 + math.exp(reward(p, y) - reward(p, x))) for p, x, y in zip(prompts, a, b)]
    got = judge(prompts, a, b)
    assert got == pytest.approx(expected, abs=1e-5)
    assert got[2] == pytest.approx(0.5, abs=1e-6)  # the same response
    assert [1 - v for v in judge(prompts, b, a)] == pytest.approx(got, abs=1e-6)
    assert RewardModelJudge(reward_model, tokenizer, batch_size=1)(prompts, a, b) == pytest.approx(got, abs=1e-5)
    assert judge.scores(prompts[:1], a[:1]) == pytest.approx([reward(prompts[0], a[0])], abs=1e-5)


def test_pair_preference_judge_reads_the_first_choice_and_averages_both_orders(tokenizer):
    model = tiny_llama(len(tokenizer), seed=FRESH_SEED % 1000).eval()
    judge = PairPreferenceJudge(model, tokenizer, batch_size=2)
    prompts = ["What is 2 + 2?", "Play rock, paper or scissors.", "Thoughts on The Final Mirror:"]
    a, b = [" 4", " rock", " superb film"], [" 5 or so", " paper", " superb film"]

    def first(prompt, x, y):  # q(x, y), one unpadded sequence
        ids = tokenizer(judge.text(prompt, x, y), return_tensors="pt", add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, -1, judge.choice_ids]
        return logits.softmax(-1)[0].item()

    expected = [(first(p, x, y) + 1 - first(p, y, x)) / 2 for p, x, y in zip(prompts, a, b)]
    got = judge(prompts, a, b)
    assert got == pytest.approx(expected, abs=1e-5)
    assert got[2] == pytest.approx(0.5, abs=1e-6)
    assert [g + r for g, r in zip(got, judge(prompts, b, a))] == pytest.approx([1.0] * 3, abs=1e-6)
    with pytest.raises(ValueError, match="must be one"):
        PairPreferenceJudge(model, tokenizer, choices=("Response one", "Response two"))
