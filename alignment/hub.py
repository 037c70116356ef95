"""Model cards and pushing to the Hugging Face Hub.

``PreferenceTrainer.push_to_hub()`` (transformers' own, which creates the repo and uploads the output
folder) writes the card below through ``create_model_card``: the method with its paper and arXiv id, the
base model, the datasets, the hyperparameters that matter, the final metrics and the command that
reproduces the run. ``HF_ENDPOINT`` points the client at another Hub (the tests run a local server).
"""

from __future__ import annotations

import json
from pathlib import Path

KEY_HYPERPARAMETERS = (
    "beta",
    "loss_type",
    "label_smoothing",
    "eta",
    "sft_normalization",
    "learning_rate",
    "lr_scheduler_type",
    "warmup_steps",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "max_length",
    "precompute_ref_logps",
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
    hyperparameters, metrics, eval (optional), command (optional), model_name."""
    datasets = info.get("datasets") or []
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
        "| name | value |",
        "| --- | --- |",
        *[f"| {k} | {v} |" for k, v in info.get("hyperparameters", {}).items()],
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


def card_info(trainer, model_name: str | None = None) -> dict:
    args = trainer.args
    extra = getattr(trainer, "card_extra", {}) or {}
    return {
        "method": trainer.method,
        "paper": trainer.paper,
        "arxiv": trainer.arxiv,
        "base_model": extra.get("base_model", trainer.model_id),
        "datasets": extra.get("datasets", []),
        "hyperparameters": {k: getattr(args, k) for k in KEY_HYPERPARAMETERS if hasattr(args, k)},
        "metrics": final_metrics(trainer.state.log_history),
        "eval": extra.get("eval"),
        "command": extra.get("command"),
        "model_name": model_name or Path(args.output_dir).name,
    }


def write_model_card(trainer, model_name: str | None = None) -> Path:
    path = Path(trainer.args.output_dir) / "README.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(model_card(card_info(trainer, model_name)))
    return path
