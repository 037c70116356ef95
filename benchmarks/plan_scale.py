"""The 8B and 70B tables of BENCHMARKS.md: one DPO step planned with `alignment plan` (fake tensors, the GPU code
paths), ours against trl 1.16's DPOTrainer on the same model and batch, bf16, gradient checkpointing.

    OMP_NUM_THREADS=1 python benchmarks/plan_scale.py --json benchmarks/plan_scale.json   # about 40 minutes on 2 cores

Setups: LoRA on one GPU (recipes/llama-3-8b/dpo_lora.yaml: r 16 on every linear layer, reference = adapter off,
precompute) and full fine-tuning under ZeRO-3 on 8 GPUs (recipes/zephyr-7b/dpo.yaml: a frozen reference copy,
each rank's share); one pair per device, lengths 1k-32k; then the longest length that fits an H100 80GB and an
H200 (their usable memory: alignment.planning.devices), and on length-skewed batches (4 pairs of L, L/2, L/4, L/8
tokens) ours with padding_free against trl (trl 1.16 disables its padding_free; Llama-3-8B). 70B: LoRA under
ZeRO-3 on 8 x H100 80GB (full fine-tuning's partitioned states alone, 16 bytes x 70.6B / 8 = 131 GiB per rank, do
not fit 80 GB for either trainer). Attention: the recipes' (sdpa); pairs: real ones, prompt 25% of the longer
sequence and the shorter completion 75% of the longer (a padded batch: sdpa's mask, or our mask-free path above
1 GiB of mask). Model shapes: benchmarks/model_configs/*.json (the public config.json fields)."""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GIB = 2**30
MODELS = {"llama-3-8b": "Llama-3-8B", "qwen2.5-7b": "Qwen2.5-7B"}
SETUPS = {"lora_1gpu": ("recipes/llama-3-8b/dpo_lora.yaml", 1), "full_zero3_8gpu": ("recipes/zephyr-7b/dpo.yaml", 8)}
LENGTHS = (1024, 2048, 4096, 8192, 16384, 32768)
CARDS = ("h100-80gb", "h200")
GRAIN = 2048


def usable(card: str) -> int:
    sys.path.insert(0, str(ROOT))
    from alignment.planning.devices import device

    return device(card).usable_bytes


def peak(model: str, setup: str, trainer: str, length: int, batch: int = 1, skew: bool = False,
         padding_free: bool = False) -> float:  # fmt: skip
    """The planned peak per device in GiB (a subprocess-friendly call)."""
    sys.path.insert(0, str(ROOT))
    from alignment.planning.plan import simulate
    from alignment.recipes import load_recipe

    recipe, devices = SETUPS[setup]
    overrides = {"init_from_config": str(ROOT / "benchmarks" / "model_configs" / f"{model}.json"), "use_cpu": True,
                 "per_device_train_batch_size": batch, "max_length": length, "padding_free": padding_free}  # fmt: skip
    method, script, model_args, config = load_recipe(ROOT / recipe, overrides)
    plan = simulate(method, script, model_args, config, batch, length, target="cuda", trainer=trainer,
                    devices=devices, skew=skew)  # fmt: skip
    gc.collect()  # one worker plans many steps: let each one's trainer go
    return plan.peak_bytes / GIB


def longest(known: dict[int, float], card: str, run) -> int | None:
    """The longest multiple of GRAIN whose peak fits ``card``'s usable memory (alignment.planning.search, started
    at the table's longest point that fits): ``known`` and ``run`` give peaks in GiB."""
    from alignment.planning.search import longest as search

    budget = usable(card)
    fitting = [n for n, p in known.items() if p * GIB <= budget]
    return search(lambda n: int((known[n] if n in known else run(n)) * GIB), budget, GRAIN, 1 << 18,
                  start=max(fitting) if fitting else GRAIN)  # fmt: skip


def table_job(model: str, setup: str, trainer: str) -> dict:
    started = time.time()
    points = {n: peak(model, setup, trainer, n) for n in LENGTHS}
    fits = {card: longest(points, card, lambda n: peak(model, setup, trainer, n)) for card in CARDS}
    return {"model": model, "setup": setup, "trainer": trainer, "peak_gib": points, "longest": fits,
            "seconds": round(time.time() - started)}  # fmt: skip


def skew_job(model: str, trainer: str, padding_free: bool) -> dict:
    def run(n):
        return peak(model, "lora_1gpu", trainer, n, batch=4, skew=True, padding_free=padding_free)

    points = {n: run(n) for n in (4096, 8192)}
    return {"model": model, "trainer": trainer, "padding_free": padding_free, "peak_gib": points,
            "longest_h100": longest(points, "h100-80gb", run)}  # fmt: skip


def seventy_job(trainer: str) -> dict:
    def run(n):
        sys.path.insert(0, str(ROOT))
        from alignment.planning.plan import simulate
        from alignment.recipes import load_recipe

        overrides = {"init_from_config": str(ROOT / "benchmarks" / "model_configs" / "llama-3-70b.json"),
                     "use_cpu": True, "per_device_train_batch_size": 1, "max_length": n}  # fmt: skip
        method, script, model_args, config = load_recipe(ROOT / "recipes/llama-3-8b/dpo_lora.yaml", overrides)
        return simulate(method, script, model_args, config, 1, n, target="cuda", trainer=trainer,
                        devices=8).peak_bytes / GIB  # fmt: skip

    points = {n: run(n) for n in (4096, 16384)}
    return {"model": "llama-3-70b", "setup": "lora_zero3_8gpu", "trainer": trainer, "peak_gib": points,
            "longest_h100": longest(points, "h100-80gb", run)}  # fmt: skip


def markdown(results: dict, path: str = "benchmarks/plan_scale.json") -> str:
    """BENCHMARKS.md's tables of ``results``, every number tagged with its place in ``path``."""

    def tag(value, key: str, digits: int = 1) -> str:
        return (
            f"{value:.{digits}f}<!--@ {path}:{key} -->"
            if isinstance(value, float)
            else f"{value}<!--@ {path}:{key} -->"
        )

    lines = []
    for setup, title in (("lora_1gpu", "LoRA, 1 GPU"), ("full_zero3_8gpu", "full fine-tuning, ZeRO-3 on 8 GPUs")):
        lines += [f"\n{title}: peak per GPU (GiB), one pair per device\n",
                  "| model | trainer | " + " | ".join(f"{n // 1024}k" for n in LENGTHS)
                  + " | longest on an H100 80GB | longest on an H200 |",
                  "| --- | --- |" + " ---: |" * (len(LENGTHS) + 2)]  # fmt: skip
        for i, row in enumerate(results["tables"]):
            if row["setup"] == setup:
                cells = " | ".join(tag(row["peak_gib"][str(n)] if str(n) in row["peak_gib"] else row["peak_gib"][n],
                                       f"tables.{i}.peak_gib.{n}") for n in LENGTHS)  # fmt: skip
                fit = " | ".join(tag(row["longest"][m], f"tables.{i}.longest.{m}") if row["longest"][m] else "none"
                                 for m in CARDS)  # fmt: skip
                lines.append(f"| {MODELS[row['model']]} | {row['trainer']} | {cells} | {fit} |")
    lines += [
        "\nLength-skewed batches (LoRA, 1 GPU; 4 pairs of L, L/2, L/4, L/8 tokens): longest L on an H100 80GB\n",
        "| model | trainer | peak at L = 4k / 8k (GiB) | longest L on an H100 80GB |",
        "| --- | --- | --- | ---: |",
    ]
    for i, row in enumerate(results["skew"]):
        who = f"{row['trainer']}" + (" padding_free" if row["padding_free"] else " padded")
        cells = " / ".join(tag(v, f"skew.{i}.peak_gib.{n}") for n, v in row["peak_gib"].items())
        lines.append(
            f"| {MODELS[row['model']]} | {who} | {cells} | {tag(row['longest_h100'], f'skew.{i}.longest_h100')} |"
        )
    lines += [
        "\nLlama-3-70B, LoRA under ZeRO-3 on 8 x H100 80GB, one pair per device\n",
        "| trainer | peak at 4k / 16k (GiB) | longest on an H100 80GB |",
        "| --- | --- | ---: |",
    ]
    for i, row in enumerate(results["seventy"]):
        cells = " / ".join(tag(v, f"seventy.{i}.peak_gib.{n}") for n, v in row["peak_gib"].items())
        longest = row["longest_h100"]
        lines.append(
            f"| {row['trainer']} | {cells} | {tag(longest, f'seventy.{i}.longest_h100') if longest else 'none'} |"
        )
    return "\n".join(lines)


def cached(pool, path: Path, fn, args):
    """A finished job's saved result, or the job submitted (its result saved when it ends)."""
    if path.exists():
        return json.loads(path.read_text())
    future = pool.submit(fn, *args)
    future.add_done_callback(lambda f: f.exception() is None and path.write_text(json.dumps(f.result())))
    return future


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cache", default="outputs/plan_scale_jobs", help="each job's result, kept for a rerun")
    parser.add_argument("--markdown", action="store_true", help="plan nothing: the tagged tables of --json")
    args = parser.parse_args()
    if args.markdown:
        print(markdown(json.loads(Path(args.json).read_text())))
        return 0
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    jobs = {"tables": [(table_job, (m, s, t)) for m in MODELS for s in SETUPS for t in ("alignment", "trl")],
            "skew": [(skew_job, ("llama-3-8b", t, pf)) for t, pf in
                     (("alignment", True), ("alignment", False), ("trl", False))],
            "seventy": [(seventy_job, (t,)) for t in ("alignment", "trl")]}  # fmt: skip
    results = {}
    for group, listed in jobs.items():  # 70B plans take ~14 GB of host memory each: one at a time
        workers = 1 if group == "seventy" else args.workers
        with ProcessPoolExecutor(workers, max_tasks_per_child=1) as pool:
            results[group] = [cached(pool, cache / f"{group}-{'-'.join(map(str, a))}.json", fn, a) for fn, a in listed]
            results[group] = [r if isinstance(r, dict) else r.result() for r in results[group]]
    print(markdown(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
