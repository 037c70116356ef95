"""Every recipe and accelerate config parses; bad recipes fail with one line naming the file and field."""

from pathlib import Path

import pytest
import yaml

from alignment.cli import main
from alignment.recipes import RecipeError, load_recipe, parse_overrides
from alignment.trainers import get_method
from tests.conftest import ROOT

RECIPES = sorted((ROOT / "recipes").rglob("*.yaml"))
CONFIGS = sorted((ROOT / "accelerate_configs").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=[str(p.relative_to(ROOT)) for p in RECIPES])
def test_every_recipe_parses(path):
    # GPU recipes ask for bf16, which TrainingArguments refuses without a GPU unless use_cpu is set
    method, script, _, config = load_recipe(path, {"use_cpu": True})
    assert type(config) is get_method(method).config
    # a self-play recipe samples its own data, the regret-loss draws loss sequences
    assert script.dataset_mixture or script.self_play or method == "regret"
    if "quickstart" in str(path):
        assert config.use_cpu and not config.bf16
        for source in script.dataset_mixture or []:
            assert (ROOT / source.rsplit(":", 1)[0]).exists(), source


def test_self_play_fields_need_the_loop(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("method: inpo\niterations: 2\n")
    with pytest.raises(RecipeError, match="field 'iterations' belongs to the self-play loop"):
        load_recipe(path)
    path.write_text("method: inpo\nloop: forever\n")
    with pytest.raises(RecipeError, match="field 'loop' must be self_play"):
        load_recipe(path)
    path.write_text("method: inpo\nloop: self_play\nsamples_per_prompt: 1\n")
    with pytest.raises(RecipeError, match="samples_per_prompt must be >= 2"):
        load_recipe(path)
    path.write_text("method: dpo\nloop: self_play\niterations: '4'\nuse_cpu: true\n")
    _, script, _, _ = load_recipe(path)
    assert script.self_play.iterations == 4 and script.self_play.judge == "task"


def test_rpo_recipe_has_the_paper_settings():
    _, _, _, config = load_recipe(ROOT / "recipes" / "zephyr-7b" / "rpo.yaml", {"use_cpu": True})
    assert (config.eta, config.beta, config.learning_rate, config.sft_normalization) == (0.005, 0.01, 5e-7, "sum")
    assert config.lr_scheduler_type == "cosine" and config.warmup_steps == 0.1
    assert config.per_device_train_batch_size * config.gradient_accumulation_steps * 8 == 128


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_accelerate_configs_parse(path):
    data = yaml.safe_load(path.read_text())
    assert data["distributed_type"] in ("MULTI_GPU", "DEEPSPEED", "FSDP")
    assert data["num_processes"] >= 2
    if data["distributed_type"] == "DEEPSPEED":
        assert data["deepspeed_config"]["zero_stage"] in (2, 3)
    expected = {"cpu_ddp.yaml", "multi_gpu.yaml", "deepspeed_zero2.yaml", "deepspeed_zero3.yaml", "fsdp.yaml"}
    assert expected <= {p.name for p in CONFIGS}


def test_overrides_and_errors(tmp_path):
    assert parse_overrides(["--beta", "0.2", "--max_steps=3", "--use_peft"]) == {
        "beta": 0.2,
        "max_steps": 3,
        "use_peft": True,
    }
    base = ROOT / "recipes" / "quickstart" / "dpo.yaml"
    _, _, _, config = load_recipe(base, {"beta": 0.3})
    assert config.beta == 0.3
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: dpo\nbetta: 0.1\ndataset_mixture: [x.jsonl]\n")
    with pytest.raises(RecipeError, match=r"bad.yaml: unknown field 'betta' for method dpo \(did you mean 'beta'\?\)"):
        load_recipe(bad)
    bad.write_text("method: dpo\nloss_type: kto\ndataset_mixture: [x.jsonl]\n")
    with pytest.raises(RecipeError, match=r"loss_type must be one of"):
        load_recipe(bad)
    bad.write_text("method: ppo\n")
    with pytest.raises(RecipeError, match="field 'method'"):
        load_recipe(bad)
    with pytest.raises(RecipeError, match="no such recipe"):
        load_recipe(tmp_path / "missing.yaml")


def test_cli_bad_recipe_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: rpo\nsft_normalization: mean\ndataset_mixture: [x.jsonl]\n")
    assert main(["train", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {bad}: sft_normalization must be one of") and "\n" not in err
    assert main(["train", str(Path(tmp_path) / "nope.yaml")]) == 2


def test_inpo_gpu_recipe_has_the_paper_settings():
    method, script, _, config = load_recipe(ROOT / "recipes" / "llama-3-8b" / "inpo.yaml", {"use_cpu": True})
    loop = script.self_play
    assert method == "inpo" and (config.eta, config.learning_rate) == (0.005, 5e-7)
    assert config.tau == pytest.approx(config.eta / 3) and config.bf16
    assert config.lr_scheduler_type == "cosine" and config.warmup_steps == 0.03
    assert config.per_device_train_batch_size * config.gradient_accumulation_steps * 8 == 128
    assert (loop.iterations, loop.samples_per_prompt, loop.generation_backend) == (3, 8, "vllm")
    assert loop.judge.startswith("reward_model:") and loop.prompt_task is None and loop.prompt_dataset


def test_regret_gpu_recipe_is_text_mode_with_lora_on_a_hub_model(tmp_path):
    from alignment.learners.regret_text import LossText, LossTextEncoder

    path = ROOT / "recipes" / "llama-3-8b" / "regret_text_lora.yaml"
    method, script, model_args, config = load_recipe(path, {"use_cpu": True})
    assert method == "regret" and config.mode == "text" and model_args.use_peft and config.bf16
    assert script.model_name_or_path.startswith("meta-llama/") and model_args.dtype == "bfloat16"
    assert model_args.peft_config().r == 16 and config.gradient_checkpointing
    assert get_method("regret").build is not None and config.actions == 5 and config.loss_precision == 2
    # the same text mode with the shipped tokenizer: 2 decimals are 0..99
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ROOT / "data" / "tokenizer")
    text = LossText.default(tok, config.actions, config.loss_precision)
    assert LossTextEncoder(tok, text).scale == 100 and "99 worst" in text.header


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (["--beta"], "field 'beta' must be a number, got True"),
        (["--use_peft", "abc"], "field 'use_peft' must be true or false, got 'abc'"),
        (["--max_steps", "2.5"], "field 'max_steps' must be an integer, got 2.5"),
        (["--dataset_mixture", "data/x.jsonl"], "field 'dataset_mixture' must be a list, e.g. [a, b]"),
    ],
)
def test_overrides_are_parsed_with_their_fields_type(override, message, capsys):
    assert main(["train", str(ROOT / "recipes" / "quickstart" / "dpo.yaml"), *override]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_a_number_for_a_text_field_is_its_text():
    _, _, _, config = load_recipe(ROOT / "recipes" / "quickstart" / "dpo.yaml", {"hub_model_id": 2024})
    assert config.hub_model_id == "2024"
