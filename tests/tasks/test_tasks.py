import itertools
import math
import random

import pytest

from alignment.tasks import TASKS, ArithmeticTask, RPSTask, SentimentTask, bt_preference, get_task, split_of
from alignment.tasks.rps import MOVES, parse_move


@pytest.mark.parametrize("name", sorted(TASKS))
def test_splits_are_disjoint_and_cover_the_pool(name):
    task = get_task(name)
    train, eval_ = set(task.prompt_pool("train")), set(task.prompt_pool("eval"))
    assert train and eval_
    assert not train & eval_
    assert train | eval_ == set(task.all_prompts())
    assert all(split_of(p) == "eval" for p in eval_)
    assert len(eval_) >= 500  # the held-out evaluation uses 500 prompts


@pytest.mark.parametrize("name", sorted(TASKS))
def test_generators_are_deterministic_per_seed(name):
    a, b = get_task(name), get_task(name)
    assert a.prompts("train", 50, seed=3) == b.prompts("train", 50, seed=3)
    assert a.prompts("train", 50, seed=3) != a.prompts("train", 50, seed=4)
    assert a.build_pairs("train", 30, seed=7) == b.build_pairs("train", 30, seed=7)
    assert a.build_pairs("train", 30, seed=7) != a.build_pairs("train", 30, seed=8)
    assert a.sft_rows("eval", 20, seed=1) == b.sft_rows("eval", 20, seed=1)
    r1 = [a.reference_response(p, random.Random(5)) for p in a.prompts("eval", 10)]
    r2 = [b.reference_response(p, random.Random(5)) for p in b.prompts("eval", 10)]
    assert r1 == r2


@pytest.mark.parametrize("name", sorted(TASKS))
def test_pairs_follow_the_oracle_and_flip_rate(name):
    task = get_task(name)
    pairs = task.build_pairs("train", 300, seed=0)
    assert len(pairs) >= 290
    assert all(task.preference(r["prompt"], r["chosen"], r["rejected"]) > 0.5 for r in pairs)
    flipped = task.build_pairs("train", 300, seed=0, flip_rate=1.0)
    assert all(task.preference(r["prompt"], r["chosen"], r["rejected"]) < 0.5 for r in flipped)
    some = task.build_pairs("train", 1000, seed=0, flip_rate=0.2)
    rate = sum(task.preference(r["prompt"], r["chosen"], r["rejected"]) < 0.5 for r in some) / len(some)
    assert 0.15 < rate < 0.25
    with pytest.raises(ValueError, match="flip_rate"):
        task.build_pairs("train", 3, flip_rate=1.5)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_preference_is_a_probability_and_antisymmetric(name):
    task = get_task(name)
    rng = random.Random(0)
    for prompt in task.prompts("eval", 40):
        a, b = task.reference_response(prompt, rng, 0.5), task.reference_response(prompt, rng, 0.5)
        p = task.preference(prompt, a, b)
        assert 0.0 <= p <= 1.0
        assert task.preference(prompt, a, a) == 0.5
        assert task.preference(prompt, b, a) == pytest.approx(1.0 - p)


def test_arithmetic_scores_are_exact():
    task = ArithmeticTask()
    assert task.truth("What is 37 + 58?") == 95
    assert task.score("What is 37 + 58?", "95") == 0
    assert task.score("What is 37 + 58?", " 93") == -2
    assert task.score("What is 37 + 58?", "The answer is 105.") == -10
    assert task.score("What is 37 + 58?", "ninety-five") == -math.inf
    assert task.preference("What is 37 + 58?", "95", "96") == 1.0
    assert task.preference("What is 37 + 58?", "abc", "0") == 0.0
    assert task.preference("What is 1 + 1?", "x", "y") == 0.5
    for a, b in itertools.product(range(0, 100, 9), repeat=2):
        assert task.score(f"What is {a} + {b}?", str(a + b)) == 0


def test_arithmetic_reference_noise_rate():
    task = ArithmeticTask()
    rows = task.sft_rows("train", 2000, seed=0, noise=0.3)
    wrong = sum(task.score(r["prompt"], r["completion"]) != 0 for r in rows) / len(rows)
    assert 0.26 < wrong < 0.34
    clean = task.sft_rows("train", 200, seed=0, noise=0.0)
    assert all(task.score(r["prompt"], r["completion"]) == 0 for r in clean)


def test_arithmetic_evaluator_counts_exact_matches():
    task = ArithmeticTask()
    oracle = task.evaluate(lambda ps: [str(task.truth(p)) for p in ps], n=500)
    assert oracle["accuracy"] == 1.0 and oracle["n"] == 500
    off_by_one = task.evaluate(lambda ps: [str(task.truth(p) + 1) for p in ps], n=100)
    assert off_by_one["accuracy"] == 0.0 and off_by_one["mean_abs_error"] == 1.0
    half = task.evaluate(lambda ps: [str(task.truth(p)) if i % 2 else "?" for i, p in enumerate(ps)], n=100)
    assert half["accuracy"] == 0.5 and half["parse_rate"] == 0.5


def test_sentiment_score_counts_words():
    task = SentimentTask()
    assert task.score("x", "a great and wonderful film but dull") == 1.0
    assert task.score("x", "boring boring plot") == -2.0
    assert task.score("x", "the plot") == 0.0
    assert task.preference("x", "great film", "dull film") == 1.0
    assert SentimentTask(temperature=1.0).preference("x", "great film", "dull film") == pytest.approx(
        1 / (1 + math.exp(-2))
    )
    rng = random.Random(0)
    for prompt in task.prompts("train", 50):
        response = task.reference_response(prompt, rng)
        assert task.is_valid(response)
        assert 8 <= len(response.split()) <= 20


def test_sentiment_evaluator_and_kl():
    task = SentimentTask()
    out = task.evaluate(lambda ps: ["great " * 10] * len(ps), n=20, log_ratio=lambda ps, rs: [0.5] * len(ps))
    assert out["mean_score"] == 10.0 and out["kl"] == 0.5 and out["valid_rate"] == 1.0
    noisy = task.evaluate(lambda ps: ["dull"] * len(ps), n=20)
    assert noisy["mean_score"] == -1.0 and noisy["valid_rate"] == 0.0


def test_rps_is_cyclic_with_half_on_the_diagonal():
    task = RPSTask()
    p = "Round 1. Play rock, paper or scissors."
    assert task.preference(p, "paper", "rock") == 1.0
    assert task.preference(p, "scissors", "paper") == 1.0
    assert task.preference(p, "rock", "scissors") == 1.0
    assert task.preference(p, "rock", "paper") == 0.0
    for a, b in itertools.product(MOVES, repeat=2):
        assert task.preference(p, a, b) + task.preference(p, b, a) == 1.0
        if a == b:
            assert task.preference(p, f"I play {a}.", a.capitalize() + "!") == 0.5
    # intransitive: every move is beaten by some other move, so no scalar score can explain P
    assert all(any(task.preference(p, b, a) == 1.0 for b in MOVES) for a in MOVES)
    with pytest.raises(NotImplementedError):
        task.score(p, "rock")
    assert task.preference(p, "rock", "I pass.") == 1.0
    assert parse_move("rock or paper?") is None


def test_rps_metrics_nash_and_pure_policies():
    task = RPSTask()
    cycle = itertools.cycle(MOVES)
    uniform = task.evaluate(lambda ps: [next(cycle) for _ in ps], n=300)
    assert uniform["tv_to_uniform"] == pytest.approx(0.0)
    assert uniform["exploitability"] == pytest.approx(0.0)
    rock = task.evaluate(lambda ps: ["I play rock."] * len(ps), n=60)
    assert rock["p_rock"] == 1.0 and rock["exploitability"] == pytest.approx(0.5)
    assert rock["tv_to_uniform"] == pytest.approx(2 / 3)
    invalid = task.evaluate(lambda ps: ["I pass."] * len(ps), n=10)
    assert invalid["invalid_rate"] == 1.0 and invalid["exploitability"] == pytest.approx(0.5)


def test_rps_reference_policy_is_biased():
    task = RPSTask()
    rows = task.sft_rows("train", 3000, seed=0, noise=0.0)
    counts = {m: sum(parse_move(r["completion"]) == m for r in rows) / len(rows) for m in MOVES}
    assert counts["rock"] == pytest.approx(0.5, abs=0.04)
    assert counts["scissors"] == pytest.approx(0.2, abs=0.04)


def test_unknown_task_and_bad_split():
    with pytest.raises(ValueError, match="unknown task"):
        get_task("chess")
    with pytest.raises(ValueError, match="split"):
        ArithmeticTask().prompt_pool("test")
    with pytest.raises(ValueError, match="move_probs"):
        RPSTask(move_probs=(0.5, 0.5, 0.5))


def test_bt_preference_limits():
    assert bt_preference(1.0, 1.0) == 0.5
    assert bt_preference(-math.inf, 0.0, temperature=1.0) == 0.0
    assert bt_preference(3.0, 1.0, temperature=2.0) == pytest.approx(1 / (1 + math.exp(-1)))


def test_evaluate_rejects_wrong_length():
    with pytest.raises(ValueError, match="responses"):
        ArithmeticTask().evaluate(lambda ps: ["1"], n=10)
