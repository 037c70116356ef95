"""Rerun the quickstarts, write what they print into docs/results/quickstarts.json, and refresh every number the
README and docs/ quote from it.

Each entry below is one ``alignment train recipes/quickstart/RECIPE [--field value ...]`` run (seed 0 unless
it says otherwise), into OUT/NAME. Its record: the command, the wall seconds of the whole command and the
seconds of training (the Trainer's train_runtime) on this machine, the start model's and the trained model's
task evaluation (``eval_start`` / ``eval``), the first and last logged training metrics, a self-play run's
iterations, and a regret run's evaluation (regret over the best Hedge per family, the matching-pennies TV).

A number in a Markdown file that ends in a tag, ``0.806<!--@ dpo.eval.greedy.accuracy -->``, is rewritten from
the record with the decimals it has (``1.42x``, ``38%`` and ``-0.191`` keep their form); a tag may name another
results file: ``<!--@ benchmarks/plan_calibration.json:rows.0.error -->``. tests/test_quoted_numbers.py checks
every tag against its file, so an edited number or a stale file fails the fast suite.

    OMP_NUM_THREADS=1 python experiments/quickstarts.py [--only dpo,rpo] [--out outputs/results] [--docs-only]

All of them take about 40 minutes on 2 CPU cores (regret_text 9, iterative DPO 6); ``--docs-only`` rewrites the
Markdown from the committed file without training.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

from quoted import DEFAULT_RESULTS, refresh_docs  # noqa: E402

#: name -> (recipe under recipes/quickstart, extra command-line overrides); one thread unless THREADS says more
THREADS = {"regret_2threads": "2"}
RUNS = {
    "dpo": ("dpo.yaml", []),
    "rpo": ("rpo.yaml", []),
    "dpo_beta2": ("dpo.yaml", ["--beta", "2"]),
    "rpo_beta2": ("rpo.yaml", ["--beta", "2"]),
    "cpo": ("cpo.yaml", []),
    "simpo": ("simpo.yaml", []),
    "simpo_nll": ("simpo.yaml", ["--cpo_alpha", "1"]),
    "simpo_lr1e-5": ("simpo.yaml", ["--learning_rate", "1e-5"]),
    "orpo": ("orpo.yaml", []),
    "kto": ("kto.yaml", []),
    "kto_beta0.1": ("kto.yaml", ["--beta", "0.1"]),
    "sparsepo": ("sparsepo.yaml", []),
    "inpo": ("inpo.yaml", []),
    "inpo_arithmetic": ("inpo_arithmetic.yaml", []),
    "inpo_arithmetic_seed1": ("inpo_arithmetic.yaml", ["--seed", "1"]),
    "reward": ("reward.yaml", []),
    "reward_seed1": ("reward.yaml", ["--seed", "1"]),
    "regret": ("regret.yaml", []),
    "regret_seed1": ("regret.yaml", ["--seed", "1"]),
    "regret_2threads": ("regret.yaml", []),  # the same recipe on two threads (THREADS)
    "regret_text": ("regret_text.yaml", []),
    "iterative_dpo": ("iterative_dpo.yaml", []),
    "inpo_seed1": ("inpo.yaml", ["--seed", "1"]),
    "iterative_dpo_seed1": ("iterative_dpo.yaml", ["--seed", "1"]),
    "iterative_dpo_task": ("iterative_dpo.yaml", ["--judge", "task"]),
    "regret_text_seed1": ("regret_text.yaml", ["--seed", "1"]),
}


def _logged(log_history: list[dict], which: int) -> dict:
    entries = [e for e in log_history if "loss" in e and "train_runtime" not in e]
    return {k: v for k, v in entries[which].items() if isinstance(v, (int, float))} if entries else {}


def _regret(folder: Path, evaluation: dict) -> dict:
    """Regret over the best Hedge's per family, and alignment regret-eval's whole regret_eval.json (every
    baseline's regret and exponent per family, the games' curves)."""
    out = {"ratio_to_best_hedge": {}, "model": {}}
    for family, row in evaluation.items():
        out["model"][family] = row["model"]
        if row.get("hedge_best", 0) > 0:
            out["ratio_to_best_hedge"][family] = row["model"] / row["hedge_best"]
    full = folder / "regret_eval.json"
    if full.exists():
        result = json.loads(full.read_text())
        out["families"] = {f["family"]: f["methods"] for f in result.get("families", [])}
        trained = [f for f in result.get("families", []) if f["family"] != "adaptive"]
        methods = trained[0]["methods"] if trained else {}
        out["mean_of_families"] = {m: sum(f["methods"][m]["regret"] for f in trained) / len(trained) for m in methods}
        out["games"] = {g["game"]: g["players"] for g in result.get("games", [])}
    return out


def _probes(folder: Path) -> dict:
    """The first and the last probe's summary (diagnostics.jsonl: displacement and entanglement)."""
    path = folder / "diagnostics.jsonl"
    if not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r.get("kind", "probe") == "probe"]
    return {"first": rows[0]["summary"], "last": rows[-1]["summary"]} if rows else {}


def _stages(rows: list[dict]) -> dict:
    """Per self-play stage, the fewest and the most seconds over the iterations."""
    stages = {}
    for row in rows[1:]:
        for stage, value in row.get("seconds", {}).items():
            stages.setdefault(stage, []).append(value)
    return {k: {"min": min(v), "max": max(v)} for k, v in stages.items()}


#: runs whose record also holds the held-out pairs' log-probabilities and the carry split (the DPO/RPO table)
ARITHMETIC_DETAIL = ("dpo", "rpo", "dpo_beta2", "rpo_beta2")
HELDOUT_PAIRS = "data/tasks/arithmetic/pref_eval_conversational.jsonl"


def heldout_logps(model_dir: str | Path, data: str = HELDOUT_PAIRS) -> dict:
    """Mean summed log-probability of the chosen and the rejected response of every held-out pair, through the
    fused op (the trainers' tokenization: the recipe's max_length 64)."""
    import torch

    from alignment.data import PreferenceCollator, load_preference_dataset, tokenize_preference_dataset
    from alignment.diagnostics.probes import pair_logps
    from alignment.models import load_model, load_tokenizer

    tokenizer, model = load_tokenizer(str(model_dir)), load_model(str(model_dir)).eval()
    dataset, _ = load_preference_dataset(str(ROOT / data))
    tokens, _ = tokenize_preference_dataset(dataset, tokenizer, 64, name=data)
    collate = PreferenceCollator(tokenizer.pad_token_id)
    sums = torch.zeros(2, dtype=torch.float64)
    with torch.no_grad():
        for row in tokens:
            logps, mask = pair_logps(model, collate([row]))
            sums += (logps * mask).sum(dim=-1).double()
    chosen, rejected = (sums / len(tokens)).tolist()
    return {"chosen": chosen, "rejected": rejected, "margin": chosen - rejected, "pairs": len(tokens)}


def carry_split(model_dir: str | Path, n: int = 300) -> dict:
    """Greedy exact-match accuracy on the first ``n`` held-out arithmetic prompts, split by whether the sum
    carries."""
    from alignment.generation import SamplingConfig, generate_responses
    from alignment.models import load_model, load_tokenizer
    from alignment.tasks import get_task
    from alignment.tasks.arithmetic import has_carry, parse_prompt

    task = get_task("arithmetic")
    prompts = task.prompts("eval", n, 0)
    tokenizer, model = load_tokenizer(str(model_dir)), load_model(str(model_dir)).eval()
    config = SamplingConfig(max_new_tokens=task.max_new_tokens, do_sample=False)
    responses = [r[0] for r in generate_responses(model, tokenizer, prompts, config, progress=False)]
    out = {}
    for label, want in (("carry", True), ("no_carry", False)):
        picked = [(p, r) for p, r in zip(prompts, responses) if has_carry(*parse_prompt(_text(p))) == want]
        out[label] = {**task.metrics([p for p, _ in picked], [r for _, r in picked]), "prompts": len(picked)}
    return out


def _text(prompt) -> str:
    return prompt if isinstance(prompt, str) else prompt[-1]["content"]


def record(name: str, folder: Path, command: list[str], seconds: float) -> dict:
    summary = json.loads((folder / "alignment_run.json").read_text())
    log = summary.get("log_history", [])
    entry = {
        "command": " ".join(command),
        "seconds": seconds,
        "train_seconds": (summary.get("train_metrics") or {}).get("train_runtime"),
        "eval_start": summary.get("eval_start"),
        "eval": summary.get("eval"),
        "first_logged": _logged(log, 0),
        "last_logged": _logged(log, -1),
        "probes": _probes(folder),
        "date": dt.date.today().isoformat(),
    }
    if (folder / "iterations.jsonl").exists():
        rows = [json.loads(line) for line in (folder / "iterations.jsonl").read_text().splitlines() if line.strip()]
        entry["iterations"] = rows
        entry["stage_seconds"] = _stages(rows)
    if RUNS[name][0].startswith("regret"):
        entry["regret"] = _regret(folder, summary.get("eval") or {})
    if name in ARITHMETIC_DETAIL:
        entry["heldout_logps"] = heldout_logps(folder)
        entry["carry_split"] = carry_split(folder)
    return entry


def start_model_record() -> dict:
    """data/sft_model itself: held-out log-probabilities, carry split, and the token-entanglement example (the
    conversational data it was trained on; also written as docs/results/token_entanglement.png and .json)."""
    import subprocess

    argv = [sys.executable, "-m", "alignment.cli", "token-entanglement", "data/sft_model", HELDOUT_PAIRS, "--row",
            "2", "-o", "docs/results/token_entanglement.png"]  # fmt: skip
    subprocess.run(argv, cwd=ROOT, check=True, capture_output=True)
    tokens = json.loads((ROOT / "docs/results/token_entanglement.json").read_text())
    return {"command": "(data/sft_model, no training)", "heldout_logps": heldout_logps(ROOT / "data/sft_model"),
            "carry_split": carry_split(ROOT / "data/sft_model"), "token_entanglement": tokens,
            "date": dt.date.today().isoformat()}  # fmt: skip


def run_one(name: str, out: Path) -> dict:
    recipe, extra = RUNS[name]
    folder = out / name
    command = ["alignment", "train", f"recipes/quickstart/{recipe}", *extra]
    argv = [sys.executable, "-m", "alignment.cli", *command[1:], "--output_dir", str(folder),
            "--overwrite_output_dir", "true", "--report", "false"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": THREADS.get(name, os.environ.get("OMP_NUM_THREADS", "1"))}
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed:\n{done.stderr[-3000:]}")
    return record(name, folder, command, seconds)


def _write(path: Path, results: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="comma-separated names (default: all): " + ", ".join(RUNS))
    parser.add_argument("--out", default="outputs/results", help="where the runs go")
    parser.add_argument("--results", default=str(DEFAULT_RESULTS), help="the results file")
    parser.add_argument("--docs-only", action="store_true", help="only rewrite the docs from the results file")
    parser.add_argument(
        "--records-only",
        action="store_true",
        help="rebuild the records from the runs already in --out (their seconds kept), no training",
    )
    args = parser.parse_args()
    results_path = ROOT / args.results
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    if not args.docs_only:
        names = [n for n in args.only.split(",") if n] or list(RUNS)
        unknown = sorted(set(names) - set(RUNS) - {"sft_model"})
        if unknown:
            sys.exit(f"unknown run(s) {unknown}; known: {', '.join(RUNS)}")
        for name in (n for n in names if n != "sft_model"):
            if args.records_only:
                if name not in results or not (ROOT / args.out / name / "alignment_run.json").exists():
                    continue  # not run yet
                old = results[name]
                results[name] = {**record(name, ROOT / args.out / name, old["command"].split(), old["seconds"]),
                                 "date": old["date"]}  # fmt: skip
                continue
            print(f"{name}: {' '.join(RUNS[name][1]) or 'recipe as shipped'} ...", flush=True)
            results[name] = run_one(name, ROOT / args.out)
            print(f"{name}: {results[name]['seconds']:.0f} s", flush=True)
            _write(results_path, results)  # after every run
        if args.records_only or not args.only or "sft_model" in names:
            results["sft_model"] = start_model_record()
        _write(results_path, results)
    missing: list[str] = []
    for path, count in refresh_docs(ROOT, missing).items():
        print(f"{path}: {count} quoted number(s) rewritten")
    for line in missing:
        print(f"not in the results (run it): {line}")


if __name__ == "__main__":
    main()
