"""What ``alignment train`` and ``alignment eval`` do: short linear functions over the library."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from alignment.io import atomic_write_text

logger = logging.getLogger("alignment")
MAX_NEW_TOKENS = {"arithmetic": 6, "rps": 12, "sentiment": 32}


def build_model(script, model_args):
    from transformers import AutoConfig, AutoModelForCausalLM

    if getattr(script, "init_from_config", None):
        config = AutoConfig.for_model(**json.loads(Path(script.init_from_config).read_text()))
        return AutoModelForCausalLM.from_config(config)
    dtype = "auto" if model_args.dtype == "auto" else getattr(torch, model_args.dtype)
    return AutoModelForCausalLM.from_pretrained(
        script.model_name_or_path, dtype=dtype, trust_remote_code=model_args.trust_remote_code
    )


def load_datasets(method: str, script, seed: int):
    from alignment.data import load_preference_data

    validate = method != "sft"  # SFT rows are validated by the SFT trainer
    if not script.dataset_mixture:
        raise ValueError("the recipe has no dataset_mixture")
    train = load_preference_data(
        script.dataset_mixture, script.dataset_split, script.test_split_size, seed, script.drop_invalid_rows, validate
    )
    evaluation = None
    if script.test_split_size:
        train, evaluation = train["train"], train["test"]
    if script.eval_dataset:
        evaluation = load_preference_data(
            script.eval_dataset, script.eval_split, None, seed, script.drop_invalid_rows, validate
        )
    return train, evaluation


def train(recipe: str, overrides: dict | None = None, command: str | None = None) -> dict:
    """Train from a recipe; save the model, tokenizer and alignment_run.json in output_dir."""
    from transformers import AutoTokenizer, set_seed

    from alignment.recipes import load_recipe
    from alignment.trainers import TRAINERS

    method, script, model_args, config = load_recipe(recipe, overrides)
    set_seed(config.seed)
    tokenizer = AutoTokenizer.from_pretrained(script.tokenizer_name_or_path or script.model_name_or_path)
    model = build_model(script, model_args)
    train_ds, eval_ds = load_datasets(method, script, config.seed)
    trainer = TRAINERS[method](
        model,
        args=config,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        peft_config=model_args.peft_config(),
    )
    trainer.card_extra = {
        "command": command,
        "datasets": list(script.dataset_mixture),
        "base_model": None if getattr(script, "init_from_config", None) else script.model_name_or_path,
    }
    result = trainer.train()
    trainer.save_model(config.output_dir)
    summary = {
        "method": method,
        "recipe": str(recipe),
        "command": command,
        "base_model": script.model_name_or_path if not getattr(script, "init_from_config", None) else None,
        "datasets": list(script.dataset_mixture),
        "active": trainer.active_summary(),
        "hyperparameters": {k: v for k, v in config.to_dict().items() if _plain(v)},
        "train_metrics": result.metrics,
        "log_history": trainer.state.log_history,
    }
    if script.eval_task and trainer.accelerator.is_main_process:
        model.eval()
        summary["eval"] = evaluate(trainer.model, tokenizer, script.eval_task, script.eval_prompts)
        trainer.card_extra["eval"] = summary["eval"]
    if trainer.accelerator.is_main_process:
        _write_json(Path(config.output_dir) / "alignment_run.json", summary)
        trainer.create_model_card()
        if script.report:
            from alignment.diagnostics.report import write_report

            page, _ = write_report([config.output_dir])
            logger.warning("report: %s", page)
    if config.push_to_hub:
        trainer.push_to_hub()
    return summary


def _plain(value) -> bool:
    return isinstance(value, (str, int, float, bool, type(None))) or (
        isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value)
    )


def _write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, default=str))


def generation_fn(model, tokenizer, task: str, do_sample: bool = False, temperature: float = 1.0, seed: int = 0):
    """prompts -> responses with the model's chat template (left padding, batched)."""
    chat = tokenizer.chat_template is not None
    tokenizer.padding_side = "left"
    device = next(model.parameters()).device
    generator_seed = [seed]

    def generate(prompts: list[str]) -> list[str]:
        if chat:
            texts = [
                tokenizer.apply_chat_template(
                    [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
                )
                for p in prompts
            ]
        else:
            texts = list(prompts)
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=not chat).to(device)
        torch.manual_seed(generator_seed[0])
        generator_seed[0] += 1
        with torch.no_grad():
            out = model.generate(
                **enc,
                max_new_tokens=MAX_NEW_TOKENS.get(task, 32),
                do_sample=do_sample,
                temperature=temperature if do_sample else None,
                top_p=None,
                top_k=None,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        return tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)

    return generate


def evaluate(model, tokenizer, task_name: str, n: int = 500, modes=("greedy", "sampled"), seed: int = 0) -> dict:
    """Task metrics on ``n`` held-out prompts, with greedy decoding and with sampling (temperature 1)."""
    from alignment.tasks import get_task

    task = get_task(task_name)
    model.eval()
    results = {}
    for mode in modes:
        generate = generation_fn(model, tokenizer, task_name, do_sample=mode == "sampled", seed=seed)
        results[mode] = task.evaluate(generate, n=n, seed=seed)
    return results


def eval_command(model_path: str, task: str, n: int, modes, output: str | None) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not Path(model_path).exists() and model_path.count("/") != 1:
        raise FileNotFoundError(f"{model_path}: no such model folder")
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    results = {"model": model_path, "task": task, "n": n, **evaluate(model, tokenizer, task, n, modes)}
    if output:
        _write_json(Path(output), results)
    return results
