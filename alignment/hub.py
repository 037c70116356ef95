"""Model cards and pushing to the Hugging Face Hub.

``AlignmentTrainer.push_to_hub()`` (transformers' own, which creates the repo and uploads the output
folder) writes the card below through ``create_model_card``: the method with its paper and arXiv id, the
base model, the datasets, the method's own hyperparameters (the fields its config adds, with their help
text) and the training settings, the final metrics and the command that
reproduces the run. ``HF_ENDPOINT`` points the client at another Hub (the tests run a local server).
"""

from __future__ import annotations

import json
import re
from dataclasses import fields
from enum import Enum
from pathlib import Path

from alignment.io import atomic_write_text
from alignment.secrets import redact
from alignment.text import first_sentence, md_code, md_fence, md_text

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


def project_url() -> str | None:
    """The project's home page from the installed package's metadata (pyproject's ``[project.urls]``: Homepage,
    Repository, Source, then any), or None when it declares none (the card then names the library without a
    link rather than linking a made-up address)."""
    from importlib import metadata

    try:
        entries = metadata.metadata("alignment").get_all("Project-URL") or []
    except metadata.PackageNotFoundError:
        return None
    urls = dict(e.split(", ", 1) for e in entries if ", " in e)
    for label in ("Homepage", "homepage", "Repository", "repository", "Source", "source"):
        if urls.get(label):
            return urls[label]
    return next(iter(urls.values()), None)


def _yaml_scalar(value) -> str:
    text = str(value)
    return text if re.fullmatch(r"[\w.@/:+-]+", text) else json.dumps(text)


def _eval_rows(evaluation: dict, start: dict | None) -> list[str]:
    """Markdown table rows: each evaluation number, beside the start model's when the run measured it."""
    head = ["| evaluation | metric |" + (" start model |" if start else "") + " this model |"]
    head.append("| --- | --- |" + (" --- |" if start else "") + " --- |")
    rows = []
    for group, metrics in evaluation.items():
        for metric, value in metrics.items() if isinstance(metrics, dict) else [("", metrics)]:
            before = ((start or {}).get(group) or {}).get(metric) if start else None
            cells = [md_text(group), md_text(metric)] + ([_number(before)] if start else []) + [_number(value)]
            rows.append("| " + " | ".join(cells) + " |")
    return head + rows


def _number(value) -> str:
    return "-" if value is None else f"{value:.4g}" if isinstance(value, float) else md_text(value)


def model_card(info: dict) -> str:
    """Markdown with YAML front matter, from a dict: method, paper, arxiv, base_model, datasets,
    hyperparameters (name -> value), hyperparameter_help (name -> text, optional), metrics, eval and
    eval_start (optional: the start model's), command (optional), model_name, url (optional: the project's;
    default ``project_url()``). Secrets are masked (alignment.secrets); text from data and configs is escaped
    (raw HTML shows as text)."""
    info = redact(info)
    datasets = info.get("datasets") or []
    helps = info.get("hyperparameter_help") or {}
    front = ["---", "library_name: transformers", "tags:", "- alignment", f"- {_yaml_scalar(info['method'])}"]
    if info.get("base_model"):
        front.append(f"base_model: {_yaml_scalar(info['base_model'])}")
    if datasets:
        front += ["datasets:"] + [f"- {_yaml_scalar(d)}" for d in datasets]
    front.append("---")
    url = info["url"] if "url" in info else project_url()
    library = f"[alignment]({url})" if url else "alignment"
    arxiv = info.get("arxiv")
    lines = [
        *front,
        "",
        f"# {md_text(info.get('model_name') or 'Model')}",
        "",
        f"Trained with {library} using **{md_text(info['method'].upper())}**: {md_text(info['paper'])}"
        + (f" ([arXiv {arxiv}](https://arxiv.org/abs/{arxiv}))." if arxiv not in (None, "n/a") else "."),
        "",
        f"- Base model: {md_code(info['base_model']) if info.get('base_model') else 'trained from scratch'}",
        f"- Datasets: {', '.join(md_code(d) for d in datasets) or 'in-memory datasets'}",
        "",
        "## Hyperparameters",
        "",
        "| name | value | meaning |",
        "| --- | --- | --- |",
        *[f"| {md_text(k)} | {md_text(v)} | {md_text(helps.get(k, ''))} |"
          for k, v in info.get("hyperparameters", {}).items()],
        "",
        "## Final training metrics",
        "",
        "| metric | value |",
        "| --- | --- |",
        *[f"| {md_text(k)} | {v:.4g} |" for k, v in info.get("metrics", {}).items()],
    ]  # fmt: skip
    if info.get("eval"):
        lines += ["", "## Evaluation", "", *_eval_rows(info["eval"], info.get("eval_start"))]
    lines += ["", "## Reproduce", "", *md_fence(info.get("command") or "# trained from Python", "bash"), ""]
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
        "eval_start": run.eval_start,
        "command": run.command,
        "model_name": model_name or Path(args.output_dir).name,
    }


def write_model_card(trainer, model_name: str | None = None) -> Path:
    path = Path(trainer.args.output_dir) / "README.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, model_card(card_info(trainer, model_name)))
    return path
