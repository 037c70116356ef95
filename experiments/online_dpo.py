"""Online DPO against offline DPO from the same SFT model (data/sft_model), with the same prompts, the same number of
judge calls and the same steps (README, "Online DPO"); writes docs/results/online_dpo.json.

Arithmetic: offline DPO on the 3000 shipped pairs (labelled once by the task's oracle: 3000 judge calls) against
online DPO on the same 3000 prompts (two samples per prompt, labelled by the same oracle at every step: 3000 judge
calls), one epoch each (94 steps of 32), beta 8. The learning rate of each method is picked on seed 0 from the same
grid (3e-5, 1e-4, 3e-4) by held-out greedy accuracy; seeds 1 and 2 rerun the pick. Sentiment: the judge of online
DPO is a reward model learned from the 3000 shipped pairs (recipes/quickstart/reward.yaml, per seed); offline DPO
trains on those pairs; scored by the sentiment oracle: its mean score of each policy's answers on 500 held-out
prompts, and its win rate of online over offline answers on the same prompts (greedy and sampled at T = 1).
Time per step of online DPO, split into generation, judging and training (the run's time/* means).

    OMP_NUM_THREADS=1 python experiments/online_dpo.py [--out outputs/online_dpo]   # about 25 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GRID = ("3e-5", "1e-4", "3e-4")
SEEDS = (0, 1, 2)
SENTIMENT_PAIRS = "[data/tasks/sentiment/pref_train_conversational.jsonl]"


def train(out: Path, recipe: str, *extra: str) -> dict:
    argv = [sys.executable, "-m", "alignment.cli", "train", f"recipes/quickstart/{recipe}", *extra, "--output_dir",
            str(out), "--overwrite_output_dir", "true", "--report", "false", "--eval_start", "false"]  # fmt: skip
    done = subprocess.run(argv, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed:\n{done.stderr[-3000:]}")
    return json.loads((out / "alignment_run.json").read_text())


def arithmetic(summary: dict) -> float:
    return summary["eval"]["greedy"]["accuracy"]


def step_seconds(summary: dict) -> dict:
    logs = [e for e in summary["log_history"] if "time/generation" in e]
    return {k: statistics.mean(e[f"time/{k}"] for e in logs) for k in ("generation", "judge", "train")}


def win_rate(online: Path, offline: Path, n: int = 500) -> dict:
    """The sentiment oracle's P(online's answer > offline's) on n held-out prompts, greedy and sampled."""
    from alignment.generation import SamplingConfig, generate_responses
    from alignment.models import load_model, load_tokenizer
    from alignment.tasks import get_task

    task = get_task("sentiment")
    prompts = task.prompts("eval", n, 0)
    out = {}
    tokens = task.max_new_tokens
    modes = {"greedy": SamplingConfig(max_new_tokens=tokens),
             "sampled": SamplingConfig(max_new_tokens=tokens, do_sample=True, seed=1)}  # fmt: skip
    for mode, sampling in modes.items():
        answers = []
        for folder in (online, offline):
            model, tok = load_model(str(folder)).eval(), load_tokenizer(str(folder))
            answers.append([r[0] for r in generate_responses(model, tok, prompts, sampling, progress=False)])
        wins = [task.preference(p, a, b) for p, a, b in zip(prompts, *answers)]
        out[mode] = sum(wins) / len(wins)
    return out


def spread(values: list[float]) -> dict:
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/online_dpo")
    parser.add_argument("--json", default=str(ROOT / "docs/results/online_dpo.json"))
    args = parser.parse_args()
    out = Path(args.out).resolve()
    offline_args, online_args = ("dpo.yaml", "--num_train_epochs", "1"), ("online_dpo.yaml",)
    grid = {"offline": {}, "online": {}}
    for lr in GRID:
        grid["offline"][lr] = arithmetic(train(out / f"offline_lr{lr}", *offline_args, "--learning_rate", lr))
        grid["online"][lr] = arithmetic(train(out / f"online_lr{lr}", *online_args, "--learning_rate", lr))
        print(f"seed 0, lr {lr}: offline {grid['offline'][lr]:.3f}, online {grid['online'][lr]:.3f}", flush=True)
    best = {m: max(GRID, key=lambda lr, m=m: grid[m][lr]) for m in grid}
    result = {"grid_seed0": grid, "learning_rate": best, "arithmetic": {}, "sentiment": {}, "seconds_per_step": {}}
    accuracy = {"offline": [grid["offline"][best["offline"]]], "online": [grid["online"][best["online"]]]}
    timing = [step_seconds(json.loads((out / f"online_lr{best['online']}" / "alignment_run.json").read_text()))]
    for seed in SEEDS[1:]:
        s = ["--seed", str(seed)]
        accuracy["offline"].append(arithmetic(train(out / f"offline_s{seed}", *offline_args, "--learning_rate",
                                                    best["offline"], *s)))  # fmt: skip
        online = train(out / f"online_s{seed}", *online_args, "--learning_rate", best["online"], *s)
        accuracy["online"].append(arithmetic(online))
        timing.append(step_seconds(online))
        print(f"seed {seed}: offline {accuracy['offline'][-1]:.3f}, online {accuracy['online'][-1]:.3f}", flush=True)
    result["arithmetic"] = {m: spread(v) for m, v in accuracy.items()}
    result["arithmetic"]["online_minus_offline"] = spread([a - b for a, b in zip(accuracy["online"],
                                                                                 accuracy["offline"])])  # fmt: skip
    sentiment = {"offline": [], "online": [], "reward_model_accuracy": [], "win_greedy": [], "win_sampled": []}
    for seed in SEEDS:
        s = ["--seed", str(seed)]
        rm = train(out / f"reward_s{seed}", "reward.yaml", *s)
        sentiment["reward_model_accuracy"].append(rm["eval"]["heldout"]["pair_accuracy"])
        data = ["--dataset_mixture", SENTIMENT_PAIRS, "--eval_dataset", "null", "--eval_task", "sentiment"]
        off = train(out / f"sent_offline_s{seed}", *offline_args, "--learning_rate", best["offline"], *data,
                    "--max_length", "128", *s)  # fmt: skip
        on = train(out / f"sent_online_s{seed}", "online_dpo_sentiment.yaml", "--learning_rate", best["online"],
                   "--judge", f"reward_model:{out / f'reward_s{seed}'}", *s)  # fmt: skip
        sentiment["offline"].append(off["eval"]["sampled"]["mean_score"])
        sentiment["online"].append(on["eval"]["sampled"]["mean_score"])
        wins = win_rate(out / f"sent_online_s{seed}", out / f"sent_offline_s{seed}")
        sentiment["win_greedy"].append(wins["greedy"])
        sentiment["win_sampled"].append(wins["sampled"])
        result.setdefault("sentiment_seconds_per_step", []).append(step_seconds(on))
        print(f"sentiment seed {seed}: offline {sentiment['offline'][-1]:.3f}, online {sentiment['online'][-1]:.3f}, "
              f"win {wins}", flush=True)  # fmt: skip
    result["sentiment"] = {k: spread(v) for k, v in sentiment.items()}
    result["seconds_per_step"] = {k: statistics.mean(t[k] for t in timing) for k in timing[0]}
    result["sentiment_seconds_per_step"] = {k: statistics.mean(t[k] for t in result["sentiment_seconds_per_step"])
                                            for k in timing[0]}  # fmt: skip
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("learning_rate", "arithmetic", "seconds_per_step")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
