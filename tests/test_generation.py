"""Batched generation (left padding, EOS, seeds, samples per prompt) and model loading in one place."""

import pytest
import torch

from alignment.cli import main
from alignment.generation import SamplingConfig, generate_responses, generation_fn
from alignment.models import ModelNotFoundError, load_model, load_tokenizer
from tests.conftest import DATA

PROMPTS = ["What is 3 + 4?", "What is 58 + 67?", "Round 3. Play rock, paper or scissors.", "What is 1 + 99?"]


@pytest.fixture(scope="module")
def sft():
    return load_model(str(DATA / "sft_model")), load_tokenizer(str(DATA / "sft_model"))


def test_batched_greedy_equals_one_prompt_at_a_time(sft):
    model, tokenizer = sft
    config = SamplingConfig(max_new_tokens=8, batch_size=4)
    batched = generate_responses(model, tokenizer, PROMPTS, config, progress=False)
    alone = [generate_responses(model, tokenizer, [p], config, progress=False)[0] for p in PROMPTS]
    assert batched == alone  # left padding changes nothing
    assert all(len(r) == 1 and r[0] and tokenizer.eos_token not in r[0] for r in batched)
    assert batched[0][0].strip() == "7"  # the shipped model knows small sums
    assert tokenizer.padding_side == "right"  # restored


def test_sampling_is_seeded_and_draws_several_samples(sft):
    model, tokenizer = sft
    config = SamplingConfig(max_new_tokens=8, do_sample=True, num_samples=3, batch_size=2, seed=5)
    first = generate_responses(model, tokenizer, PROMPTS, config, progress=False)
    assert first == generate_responses(model, tokenizer, PROMPTS, config, progress=False)
    assert all(len(r) == 3 for r in first)
    other = SamplingConfig(max_new_tokens=8, do_sample=True, num_samples=3, batch_size=2, seed=6)
    assert first != generate_responses(model, tokenizer, PROMPTS, other, progress=False)
    # a conversation is a prompt too (rendered with the chat template)
    messages = [[{"role": "user", "content": PROMPTS[0]}]]
    assert generate_responses(model, tokenizer, messages, SamplingConfig(max_new_tokens=8), progress=False) == [
        generate_responses(model, tokenizer, PROMPTS[:1], SamplingConfig(max_new_tokens=8), progress=False)[0]
    ]


def test_stop_at_eos_and_max_new_tokens(sft):
    model, tokenizer = sft
    short = generate_responses(model, tokenizer, PROMPTS[2:3], SamplingConfig(max_new_tokens=2), progress=False)
    ids = tokenizer(short[0][0], add_special_tokens=False)["input_ids"]
    assert 1 <= len(ids) <= 2


def test_generation_fn_advances_the_seed_per_call(sft):
    model, tokenizer = sft
    generate = generation_fn(model, tokenizer, SamplingConfig(max_new_tokens=6, do_sample=True, seed=3))
    a, b = generate(PROMPTS), generate(PROMPTS)
    again = generation_fn(model, tokenizer, SamplingConfig(max_new_tokens=6, do_sample=True, seed=3))
    assert again(PROMPTS) == a and again(PROMPTS) == b and len(a) == len(PROMPTS)


def test_sampling_config_errors():
    with pytest.raises(ValueError, match="temperature"):
        SamplingConfig(do_sample=True, temperature=0)
    with pytest.raises(ValueError, match="top_p"):
        SamplingConfig(top_p=1.5)
    with pytest.raises(ValueError, match="num_samples"):
        SamplingConfig(num_samples=0)


def test_one_clear_error_for_a_missing_model(tmp_path, capsys):
    with pytest.raises(ModelNotFoundError, match="no such model folder"):
        load_model(str(tmp_path / "missing"))
    with pytest.raises(ModelNotFoundError, match="no such tokenizer folder"):
        load_tokenizer("./not/here")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="not a model folder"):
        load_model(str(tmp_path / "empty"))
    # a name that could be on the Hub: offline here, so the same one error, saying both
    with pytest.raises(ModelNotFoundError, match="no such model folder, and the Hugging Face Hub"):
        load_model("nobody/no-such-model")
    assert main(["eval", str(tmp_path / "missing"), "--task", "rps"]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'missing'}: no such model folder"
    for not_a_model in (tmp_path / "empty", DATA / "tokenizer"):
        assert main(["eval", str(not_a_model), "--task", "rps"]) == 2
        assert capsys.readouterr().err.strip().startswith(f"error: {not_a_model}: not a model folder")
    assert main(["token-entanglement", "nobody/no-such-model", "x.jsonl"]) == 2
    assert "nobody/no-such-model: no such tokenizer folder, and the Hugging Face Hub" in capsys.readouterr().err
    # under a folder that exists here (data/): a path, refused at once without asking the Hub
    recipe, out = str(DATA.parent / "recipes/quickstart/dpo.yaml"), str(tmp_path / "out")
    assert main(["train", recipe, "--model_name_or_path", "data/no_such_model", "--output_dir", out]) == 2
    assert capsys.readouterr().err.strip().endswith("error: data/no_such_model: no such model folder")
    module = torch.nn.Linear(2, 2)
    assert load_model(module) is module
