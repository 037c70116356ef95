"""What ``alignment train`` and ``alignment eval`` do: short linear functions over the library."""

from __future__ import annotations

import logging
from pathlib import Path

from alignment.checkpoints import resume_target, save_final_model
from alignment.evaluation import eval_command, evaluate, plain_value, write_record  # noqa: F401 (eval_command, evaluate: run's API)
from alignment.locks import output_dir_lock

logger = logging.getLogger("alignment")


def load_datasets(completions: tuple[str, ...], script, seed: int):
    """The training and evaluation datasets of a recipe; rows validated for the method's ``completions``."""
    from alignment.data import load_preference_data

    if not script.dataset_mixture:
        raise ValueError("the recipe has no dataset_mixture")
    common = {"seed": seed, "drop_invalid": script.drop_invalid_rows, "completions": completions}
    train = load_preference_data(script.dataset_mixture, script.dataset_split, script.test_split_size, **common)
    evaluation = None
    if script.test_split_size:
        train, evaluation = train["train"], train["test"]
    if script.eval_dataset:
        evaluation = load_preference_data(script.eval_dataset, script.eval_split, None, **common)
    return train, evaluation


def train(recipe: str, overrides: dict | None = None, command: str | None = None, method: str | None = None) -> dict:
    """Train from a recipe (``method``: when the recipe names none, as ``alignment dpo --config``); save the
    model, tokenizer and alignment_run.json in output_dir."""
    from transformers import set_seed

    from alignment.recipes import load_recipe
    from alignment.trainers import get_method

    method_name, script, model_args, config = load_recipe(recipe, overrides, method)
    from alignment.preflight import check_launch

    check_launch(config)  # DeepSpeed where asked for, a device for Triton, a writable output_dir
    method = get_method(method_name)
    set_seed(config.seed)
    with output_dir_lock(config.output_dir, command):  # one writer per output_dir, before any work
        if getattr(script, "self_play", None) is not None:
            return self_play(method_name, script, model_args, config, {"recipe": str(recipe), "command": command})
        return _train(recipe, method, script, model_args, config, command)


def _train(recipe, method, script, model_args, config, command) -> dict:
    from alignment.models import load_model, load_tokenizer
    from alignment.trainers import RunInfo

    resume = resume_target(config.resume_from_checkpoint, config.output_dir)
    _refuse_finished_run(Path(config.output_dir), script.overwrite_output_dir, resume)
    start_eval = None
    if method.build is not None:  # a method that makes its own model or data (regret-loss)
        trainer = method.build(script, model_args, config, RunInfo(command=command))
        tokenizer, base_model, datasets = trainer.processing_class, trainer.model_id, []
    else:
        from_scratch = bool(getattr(script, "init_from_config", None))
        load_kwargs = {"dtype": model_args.dtype, "trust_remote_code": config.trust_remote_code,
                       **(config.model_init_kwargs or {})}  # fmt: skip
        train_ds, eval_ds = load_datasets(method.trainer.completions, script, config.seed)  # data errors first
        model = load_model(script.model_name_or_path, init_from_config=script.init_from_config,
                           head=method.trainer.model_head, **load_kwargs)  # fmt: skip
        tokenizer = load_tokenizer(script.tokenizer_name_or_path or script.model_name_or_path, config.trust_remote_code)
        start_eval = None if from_scratch else _evaluate_start(model, tokenizer, script, config, resume)
        base_model = None if from_scratch else script.model_name_or_path
        datasets = [d if isinstance(d, str) else str(d.get("path")) for d in script.dataset_mixture]
        trainer = method.trainer(
            model,
            args=config,
            train_dataset=train_ds,
            eval_dataset=eval_ds,
            processing_class=tokenizer,
            peft_config=model_args.peft_config(),
            run_info=RunInfo(command=command, datasets=datasets, base_model=base_model),
            **_judge(config, script),
        )
    result = trainer.train(resume_from_checkpoint=resume)
    if trainer.sigterm.stopped_at is not None:  # stopped by SIGTERM or Ctrl-C: a checkpoint, not a finished run
        step = trainer.sigterm.stopped_at
        logger.warning("stopped by %s at step %d: %s/checkpoint-%d saved; continue with --resume_from_checkpoint "
                       "true", trainer.sigterm.signal_name, step, config.output_dir, step)  # fmt: skip
        return {"method": method.name, "stopped_at": step}
    save_final_model(trainer, config.output_dir)
    summary = {
        "method": method.name,
        "recipe": str(recipe),
        "command": command,
        "base_model": base_model,
        "datasets": datasets,
        "active": trainer.active_summary(),
        "hyperparameters": {k: v for k, v in config.to_dict().items() if plain_value(v)},
        "train_metrics": result.metrics,
        **({"setting_changes": trainer.setting_changes} if trainer.setting_changes else {}),
        "log_history": trainer.state.log_history,
    }
    if start_eval:
        summary["eval_start"] = trainer.run_info.eval_start = start_eval
    if script.eval_task and trainer.accelerator.is_main_process:
        summary["eval"] = evaluate(trainer.model, tokenizer, script.eval_task, script.eval_prompts)
        trainer.run_info.eval = summary["eval"]
    if trainer.accelerator.is_main_process and method.after_training is not None:
        summary["eval"] = method.after_training(trainer, config.output_dir)
    if trainer.accelerator.is_main_process:
        write_record(Path(config.output_dir) / "alignment_run.json", summary)
        trainer.create_model_card()
        if script.report:
            from alignment.diagnostics.report import write_report

            page, _ = write_report([config.output_dir])
            logger.warning("report: %s", page)
    if config.push_to_hub:
        trainer.push_to_hub()
    return summary


def _judge(config, script) -> dict:
    """``judge=`` for a method whose config names one (online DPO): the recipe's judge, loaded."""
    if getattr(config, "judge", None) is None:
        return {}
    from alignment.loops.settings import make_judge

    return {"judge": make_judge(config.judge, script.eval_task, device=None)}


def _evaluate_start(model, tokenizer, script, config, resume) -> dict | None:
    """The start model's task metrics (the report puts them beside the aligned model's): on the main process, not
    when resuming nor under DeepSpeed (ZeRO-3 partitions the weights at load). The torch RNG is restored after,
    so training draws what it would have drawn without it."""
    import torch

    if not (script.eval_task and script.eval_start) or resume is not None or config.process_index != 0:
        return None
    if config.deepspeed:
        logger.info("eval_start skipped under DeepSpeed: the start model is evaluated with `alignment eval`")
        return None
    if getattr(model, "hf_device_map", None) is None:
        model.to(config.device)
    with torch.random.fork_rng(devices=[]):
        return evaluate(model, tokenizer, script.eval_task, script.eval_prompts)


def _refuse_finished_run(output_dir: Path, overwrite: bool, resume) -> None:
    """A finished run (its alignment_run.json) is never replaced silently."""
    if (output_dir / "alignment_run.json").exists() and not overwrite and resume is None:
        from alignment.errors import RecipeError

        raise RecipeError(f"{output_dir} holds a finished run (alignment_run.json): pass --overwrite_output_dir true "
                          "to replace it, or --resume_from_checkpoint PATH|true to continue it")  # fmt: skip


def self_play(method_name: str, script, model_args, config, info: dict | None = None) -> dict:
    """A recipe with ``loop: self_play``: the self-play loop (alignment.loops.selfplay) from the recipe's
    model; each iteration's model under output_dir/iteration-<t>/model, the metrics in iterations.jsonl."""
    from alignment.loops.selfplay import SelfPlay

    loop = SelfPlay(method_name, script.self_play, script.model_name_or_path, config, dtype=model_args.dtype,
                    peft_config=model_args.peft_config(), info=info)  # fmt: skip
    rows = loop.run()
    if script.report:
        from alignment.diagnostics.report import write_report

        page, _ = write_report([config.output_dir])
        logger.warning("report: %s", page)
    return {"method": method_name, "loop": "self_play", "iterations": rows}
