"""SparsePO over seeds: the shipped quickstart recipe (a sparsity target held by a multiplier on the L1 weights)
against the authors' fixed L1 weights (``mask_sparsity_target: null``), five seeds at the recipe's beta 0.8 and
the three betas of experiments/sparsepo_sentiment.py at seeds 0 and 1; DPO at the three betas (seed 0) for the
reward-KL frontier.

Each run is ``experiments/sparsepo_sentiment.py --methods sparsepo --betas B --set seed=S [...]`` (sentiment score
and KL to the SFT model on 300 held-out prompts, mask ratio and sparsity on 200 held-out pairs), then
experiments/sparsepo_heads.py on it (word-token sparsity on the first 20 held-out pairs, which heads of the mask
network are open, the uniform ones). Writes docs/results/sparsepo_seeds.json, which the README and docs/sparsepo.md
quote, and docs/images/sparsepo_frontier.png.

    OMP_NUM_THREADS=1 python experiments/sparsepo_seeds.py [--out runs/sparsepo-seeds] [--seeds 0 1 2 3 4]

About 3.5 CPU minutes per run; runs already in OUT are not retrained.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

from sparsepo_heads import analyse  # noqa: E402

CONFIGS = {
    "target": ("sparsepo", []),
    "authors": ("sparsepo", ["mask_sparsity_target=null"]),
    "dpo": ("dpo", []),
    "fast": ("sparsepo", ["mask_sparsity_rate=0.5"]),
}  # fast: a ten times faster multiplier, seed 2 only
RESULTS = ROOT / "docs" / "results" / "sparsepo_seeds.json"
BETAS = (0.2, 0.8, 3.2)
SFT_SCORE = 0.0  # the SFT model's score, read from the runs (every run's results.json has it)


def run(config: str, seed: int, betas, out: Path) -> list[dict]:
    """One experiments/sparsepo_sentiment.py call: its rows (score, KL; SparsePO: masks and the heads)."""
    method, extra = CONFIGS[config]
    folder = out / config / f"seed{seed}"
    argv = [sys.executable, str(ROOT / "experiments" / "sparsepo_sentiment.py"), "--methods", method, "--betas",
            *map(str, betas), "--out", str(folder), "--set", f"seed={seed}", *extra]  # fmt: skip
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed:\n{done.stderr[-3000:]}")
    every = json.loads((folder / "results.json").read_text())
    global SFT_SCORE
    SFT_SCORE = next(r["score"] for r in every if r["method"] == "SFT")
    rows = [r for r in every if r["method"] != "SFT"]
    for row in rows:
        row["seed"] = seed
        if method == "sparsepo":
            run_dir = folder / f"sparsepo-learned-beta{row['beta']:g}"
            row["heads"] = analyse(run_dir, 20)
            row["trace"] = trace(run_dir)
    return rows


TRACED = ("sparsepo/mask_mean_reward", "sparsepo/mask_sparsity_reward", "sparsepo/l1_scale", "rewards/margins")


def trace(run_dir: Path) -> dict:
    """step -> the mask mean, mask sparsity, L1 multiplier and margin logged at that step."""
    log = json.loads((run_dir / "alignment_run.json").read_text())["log_history"]
    return {str(e["step"]): {k.split("/")[-1]: e[k] for k in TRACED if k in e} for e in log if "loss" in e}


def spread(rows: list[dict], key, nested: str | None = None) -> dict:
    values = [(r[nested][key] if nested else r[key]) for r in rows]
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values),
            "sd": statistics.stdev(values) if len(values) > 1 else 0.0}  # fmt: skip


LABELS = {"target": "SparsePO (sparsity target)", "authors": "SparsePO (authors' fixed lambdas)", "dpo": "DPO"}
PLOTTED = tuple(LABELS)


def frontier(result: dict, path: Path) -> None:
    """Sentiment score against KL to the SFT model, seed 0, the three betas of each method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=110)
    for config, entry in ((c, e) for c, e in result.items() if c in PLOTTED):
        rows = sorted((r for r in entry["runs"].values() if r["seed"] == 0), key=lambda r: r["kl"])
        ax.plot([0.0] + [r["kl"] for r in rows], [SFT_SCORE] + [r["score"] for r in rows], "o-", label=LABELS[config])
        for r in rows:
            ax.annotate(f"b={r['beta']:g}", (r["kl"], r["score"]), fontsize=7, textcoords="offset points",
                        xytext=(3, 3))  # fmt: skip
    ax.set_xlabel("sequence KL to the SFT model (nats, sampled continuations)")
    ax.set_ylabel("sentiment score (#positive - #negative words)")
    ax.set_title("Reward-KL frontier on the sentiment task (tiny Llama, CPU, seed 0)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/sparsepo-seeds")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--beta-seed", type=int, default=1, help="the other seed with all three betas (and 0)")
    args = parser.parse_args()
    out = ROOT / args.out
    result = {}
    for config, (method, _) in CONFIGS.items():
        rows = []
        for seed in [0] if method == "dpo" else args.seeds:
            betas = BETAS if seed in (0, args.beta_seed) and config != "fast" else (0.8,)
            rows += run(config, seed, betas, out)
        seeds = [r for r in rows if r["beta"] == 0.8]
        entry = {"runs": {f"seed{r['seed']}-beta{r['beta']:g}": r for r in rows}}
        if method == "sparsepo" and len(seeds) > 1:
            entry["summary"] = {k: spread(seeds, k) for k in ("ratio", "sparsity", "score", "kl")}
            entry["summary"].update({k: spread(seeds, k, "heads") for k in ("zero_share_words", "zero_share_all")})
            print(f"{config}: " + ", ".join(f"seed {r['seed']}: {r['ratio']:.1f}x, {r['heads']['zero_share_words']:.0%}"
                                            for r in seeds))  # fmt: skip
        result[config] = entry
    frontier(result, ROOT / "docs" / "images" / "sparsepo_frontier.png")
    RESULTS.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
