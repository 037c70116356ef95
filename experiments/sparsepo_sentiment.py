"""SparsePO on the sentiment task: do the learned masks find the sentiment words, and where does SparsePO sit
on the reward-KL frontier beside DPO and TDPO (constant masks)?

For each method and beta it trains data/sft_model on the sentiment preference pairs (recipes/quickstart/
sparsepo.yaml's settings; DPO and TDPO change only the method or the mask), then on held-out prompts:

- samples one continuation per prompt (temperature 1) and reports the task's sentiment score and the
  Monte-Carlo sequence KL to the SFT model, mean of log pi(y|x) - log pi_sft(y|x) over the samples;
- for SparsePO's learned masks, on held-out preference pairs: the mean reward mask on sentiment-word tokens
  (the task's positive and negative lists) and on neutral-word tokens, their ratio, and the sparsity.

    OMP_NUM_THREADS=1 python experiments/sparsepo_sentiment.py --out runs/sparsepo [--betas 0.2 0.8 3.2]

Writes OUT/results.json, OUT/frontier.png and prints a Markdown table. Runs that already have a model in
OUT are not retrained (delete them to start over).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "quickstart" / "sparsepo.yaml"
SPARSE_ONLY = (
    "mask_type", "mask_sharing", "mask_inputs", "mask_embeddings", "mask_on_reward", "mask_on_kl", "lambda_reward",
    "lambda_kl", "kl_coef", "mask_dropout", "mask_weight_decay", "mask_learning_rate", "mask_warmup_ratio", "mask_init",
    "mask_sparsity_target", "mask_sparsity_rate",
)  # fmt: skip
METHODS = {
    "SparsePO": {"method": "sparsepo", "mask_type": "learned"},
    "TDPO (constant masks)": {"method": "sparsepo", "mask_type": "constant"},
    "DPO": {"method": "dpo"},
}
SHORT = {"sparsepo": "SparsePO", "tdpo": "TDPO (constant masks)", "dpo": "DPO"}


def recipe_for(method: dict, beta: float, out: Path, extra: dict) -> Path:
    recipe = yaml.safe_load(RECIPE.read_text())
    recipe.update(method, beta=beta, output_dir=str(out), eval_task=None, report=False, **extra)
    if method["method"] == "dpo":
        for key in SPARSE_ONLY:
            recipe.pop(key, None)
    path = out.parent / f"{out.name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(recipe))
    return path


def train(recipe: Path, out: Path) -> None:
    if (out / "model.safetensors").exists():
        return
    cmd = [sys.executable, "-m", "alignment.cli", "train", str(recipe)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"training failed: {' '.join(cmd)}\n{done.stderr[-3000:]}")


def sequence_logps(model, tokenizer, prompts, responses) -> torch.Tensor:
    """log pi(response | prompt) per pair, as training tokenizes them (chat template, EOS included)."""
    from alignment.data import PreferenceCollator, tokenize_row
    from alignment.heads import causal_token_logps

    rows = []
    for p, r in zip(prompts, responses):
        row = {"prompt": [{"role": "user", "content": p}], "chosen": [{"role": "assistant", "content": r}]}
        row["rejected"] = row["chosen"]
        rows.append(tokenize_row(row, tokenizer))
    out = []
    for start in range(0, len(rows), 64):
        batch = PreferenceCollator(tokenizer.pad_token_id)(rows[start : start + 64])
        with torch.no_grad():
            logps = causal_token_logps(model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
        out.append(logps.logps.sum(-1)[: len(rows[start : start + 64])])
    return torch.cat(out)


def reward_and_kl(run: Path, sft, tokenizer, n: int, seed: int) -> dict:
    from alignment.generation import SamplingConfig, generate_responses
    from alignment.models import load_model
    from alignment.tasks import get_task

    task = get_task("sentiment")
    policy = load_model(str(run)).eval()
    prompts = task.prompts("eval", n, seed)
    config = SamplingConfig(max_new_tokens=task.max_new_tokens, do_sample=True, seed=seed)
    responses = [r[0] for r in generate_responses(policy, tokenizer, prompts, config, progress=False)]
    keep = [i for i, r in enumerate(responses) if r.strip()]
    prompts, responses = [prompts[i] for i in keep], [responses[i] for i in keep]
    ratio = sequence_logps(policy, tokenizer, prompts, responses) - sequence_logps(sft, tokenizer, prompts, responses)
    metrics = task.metrics(prompts, responses)
    return {"score": metrics["mean_score"], "kl": float(ratio.mean()), "valid_rate": metrics["valid_rate"]}


def mask_ratio(run: Path, sft, tokenizer, pairs: int) -> dict:
    """Mean learned reward mask on sentiment-word and on neutral-word tokens of held-out pairs."""
    from alignment.data import PreferenceCollator, load_preference_dataset, tokenize_preference_dataset
    from alignment.diagnostics.masks import pair_masks, run_mask_settings
    from alignment.learners.token_mask import TokenMaskNetwork
    from alignment.tasks.sentiment import NEGATIVE, NEUTRAL, POSITIVE

    data = ROOT / "data" / "tasks" / "sentiment" / "pref_eval_conversational.jsonl"
    dataset, _ = load_preference_dataset(data)
    tokens, _ = tokenize_preference_dataset(dataset.select(range(pairs)), tokenizer, 96, name="eval")
    network = TokenMaskNetwork.load(run)
    settings = run_mask_settings(run)
    values = {"sentiment": [], "neutral": [], "all": []}
    sentiment, neutral = set(POSITIVE) | set(NEGATIVE), set(NEUTRAL)
    for row in tokens:
        batch = PreferenceCollator(tokenizer.pad_token_id)([row])
        masks = pair_masks(
            sft,
            batch,
            "learned",
            network,
            tokenizer=tokenizer,
            inputs=settings["mask_inputs"],
            embeddings=settings["mask_embeddings"],
        )
        for side in ("chosen", "rejected"):
            for token in masks[side]:
                word = token["token"].strip().lower()
                values["all"].append(token["mask_reward"])
                if word in sentiment:
                    values["sentiment"].append(token["mask_reward"])
                elif word in neutral:
                    values["neutral"].append(token["mask_reward"])
    mean = {k: sum(v) / max(len(v), 1) for k, v in values.items()}
    return {
        "mask_sentiment": mean["sentiment"],
        "mask_neutral": mean["neutral"],
        "ratio": mean["sentiment"] / max(mean["neutral"], 1e-12),
        "sparsity": sum(v == 0 for v in values["all"]) / max(len(values["all"]), 1),
        "tokens": {k: len(v) for k, v in values.items()},
    }


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=110)
    for name in METHODS:
        if not any(r["method"] == name for r in results):
            continue
        rows = sorted((r for r in results if r["method"] == name), key=lambda r: r["kl"])
        ax.plot([r["kl"] for r in rows], [r["score"] for r in rows], "o-", label=name)
        for r in rows:
            ax.annotate(
                f"b={r['beta']:g}", (r["kl"], r["score"]), fontsize=7, textcoords="offset points", xytext=(3, 3)
            )
    sft = next(r for r in results if r["method"] == "SFT")
    ax.plot([sft["kl"]], [sft["score"]], "k*", markersize=10, label="SFT model")
    ax.set_xlabel("sequence KL to the SFT model (nats, sampled continuations)")
    ax.set_ylabel("sentiment score (#positive - #negative words)")
    ax.set_title("Reward-KL frontier on the sentiment task (tiny Llama, CPU)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/sparsepo-sentiment")
    parser.add_argument("--betas", type=float, nargs="+", default=[0.2, 0.8, 3.2])
    parser.add_argument("--prompts", type=int, default=300, help="held-out prompts for score and KL")
    parser.add_argument("--mask-pairs", type=int, default=200, help="held-out pairs for the mask ratio")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", nargs="*", default=[], help="extra recipe fields, key=value (YAML values)")
    parser.add_argument("--methods", nargs="+", default=list(SHORT), choices=list(SHORT))
    args = parser.parse_args()
    from alignment.models import load_model, load_tokenizer

    out = Path(args.out)
    extra = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    sft_path = str(ROOT / "data" / "sft_model")
    sft, tokenizer = load_model(sft_path).eval(), load_tokenizer(sft_path)
    results = [{"method": "SFT", "beta": 0.0, **reward_and_kl(Path(sft_path), sft, tokenizer, args.prompts, args.seed)}]
    for name in (SHORT[m] for m in args.methods):
        method = METHODS[name]
        for beta in args.betas:
            run = out / f"{method['method']}-{method.get('mask_type', 'none')}-beta{beta:g}"
            train(recipe_for(method, beta, run, extra), run)
            row = {"method": name, "beta": beta, **reward_and_kl(run, sft, tokenizer, args.prompts, args.seed)}
            if method.get("mask_type") == "learned":
                row.update(mask_ratio(run, sft, tokenizer, args.mask_pairs))
            results.append(row)
            print(json.dumps(row), flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    plot(results, out / "frontier.png")
    print("\n| method | beta | sentiment score | KL to SFT | mask on sentiment words | on neutral | ratio | sparsity |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        masks = (
            f"{r['mask_sentiment']:.3f} | {r['mask_neutral']:.3f} | {r['ratio']:.2f}x | {r['sparsity']:.1%}"
            if "ratio" in r
            else "- | - | - | -"
        )
        print(f"| {r['method']} | {r['beta']:g} | {r['score']:.3f} | {r['kl']:.3f} | {masks} |")


if __name__ == "__main__":
    main()
