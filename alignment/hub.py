"""Model cards and pushing to the Hugging Face Hub.

``AlignmentTrainer.push_to_hub()`` (transformers' own, which creates the repo and uploads the output
folder) writes the card below through ``create_model_card``: the method with its paper and arXiv id, the
base model, the datasets, the method's own hyperparameters (the fields its config adds, with their help
text) and the training settings, the final metrics and the command that
reproduces the run. ``HF_ENDPOINT`` points the client at another Hub (the tests run a local server).
"""

from __future__ import annotations

import json
from dataclasses import fields
from enum import Enum
from pathlib import Path

from alignment.io import atomic_write_text
from alignment.secrets import redact
from alignment.text import first_sentence

#: the training settings every card shows (TrainingArguments / AlignmentConfig fields); each method's own
#: fields (those its config adds to AlignmentConfig) come first, derived from the config class itself
TRAINING_HYPERPARAMETERS = (
    "learning_rate",
    "lr_scheduler_type",
    "warmup_steps",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "max_length",
    "seed",
)
METRIC_KEYS = (
    "loss",
    "rewards/accuracies",
    "rewards/margins",
    "rewards/chosen",
    "rewards/rejected",
    "logps/chosen",
    "nll_per_token",
)


def final_metrics(log_history: list[dict]) -> dict[str, float]:
    """The last logged value of each training metric."""
    out: dict[str, float] = {}
    for entry in log_history:
        for key in METRIC_KEYS:
            if key in entry:
                out[key] = entry[key]
    return out


def model_card(info: dict) -> str:
    """Markdown with YAML front matter, from a dict: method, paper, arxiv, base_model, datasets,
    hyperparameters (name -> value), hyperparameter_help (name -> text, optional), metrics, eval (optional),
    command (optional), model_name. Secrets are masked (alignment.secrets)."""
    info = redact(info)
    datasets = info.get("datasets") or []
    helps = {k: v.replace("|", "/") for k, v in (info.get("hyperparameter_help") or {}).items()}
    front = ["---", "library_name: transformers", "tags:", "- alignment", f"- {info['method']}"]
    if info.get("base_model"):
        front.append(f"base_model: {info['base_model']}")
    if datasets:
        front += ["datasets:"] + [f"- {d}" for d in datasets]
    front.append("---")
    lines = [
        *front,
        "",
        f"# {info.get('model_name') or 'Model'}",
        "",
        f"Trained with [alignment](https://github.com/) using **{info['method'].upper()}**: {info['paper']}"
        + (
            f" ([arXiv {info['arxiv']}](https://arxiv.org/abs/{info['arxiv']}))."
            if info.get("arxiv") not in (None, "n/a")
            else "."
        ),
        "",
        f"- Base model: `{info.get('base_model') or 'trained from scratch'}`",
        f"- Datasets: {', '.join(f'`{d}`' for d in datasets) or 'in-memory datasets'}",
        "",
        "## Hyperparameters",
        "",
        "| name | value | meaning |",
        "| --- | --- | --- |",
        *[f"| {k} | {v} | {helps.get(k, '')} |" for k, v in info.get("hyperparameters", {}).items()],
        "",
        "## Final training metrics",
        "",
        "| metric | value |",
        "| --- | --- |",
        *[f"| {k} | {v:.4g} |" for k, v in info.get("metrics", {}).items()],
    ]
    if info.get("eval"):
        lines += ["", "## Evaluation", "", "```json", json.dumps(info["eval"], indent=1), "```"]
    lines += ["", "## Reproduce", "", "```bash", info.get("command") or "# trained from Python", "```", ""]
    return "\n".join(lines)


def method_fields(config) -> list:
    """The dataclass fields a method's config adds to AlignmentConfig (its own hyperparameters, with their
    help text), in declaration order, less those the config lists in ``card_exclude`` (paths and such)."""
    from alignment.configs import AlignmentConfig

    skip = {f.name for f in fields(AlignmentConfig)} | set(getattr(config, "card_exclude", ()))
    return [f for f in fields(config) if f.name not in skip]


def card_hyperparameters(config) -> tuple[dict, dict]:
    """(name -> value, name -> the first sentence of its help) for the card: the method's own fields, then
    TRAINING_HYPERPARAMETERS."""
    own = method_fields(config)
    values = {f.name: _plain(getattr(config, f.name)) for f in own}
    values.update({k: _plain(getattr(config, k)) for k in TRAINING_HYPERPARAMETERS if hasattr(config, k)})
    return values, {f.name: first_sentence(f.metadata.get("help", "")) for f in own}


def _plain(value):
    return value.value if isinstance(value, Enum) else value


def card_info(trainer, model_name: str | None = None) -> dict:
    """The card's fields from the trainer's declared state: ``method`` (the registry entry), ``args``,
    ``model_id``, ``run_info`` and the log history."""
    args, method, run = trainer.args, trainer.method, trainer.run_info
    values, helps = card_hyperparameters(args)
    return {
        "method": method.name,
        "paper": method.paper,
        "arxiv": method.arxiv,
        "base_model": run.base_model or trainer.model_id,
        "datasets": list(run.datasets),
        "hyperparameters": values,
        "hyperparameter_help": helps,
        "metrics": final_metrics(trainer.state.log_history),
        "eval": run.eval,
        "command": run.command,
        "model_name": model_name or Path(args.output_dir).name,
    }


def write_model_card(trainer, model_name: str | None = None) -> Path:
    path = Path(trainer.args.output_dir) / "README.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, model_card(card_info(trainer, model_name)))
    return path
