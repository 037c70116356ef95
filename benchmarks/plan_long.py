"""The long-context table of BENCHMARKS.md: the longest DPO pair that fits 80 GB GPUs, ours with activation
offloading and the tiled MLP and norms (and on several GPUs each pair split across them: sequence parallelism)
against trl 1.16 (without and with its own activation offloading), LoRA on one GPU and full fine-tuning on 8,
planned with `alignment plan` on fake tensors along the GPU code paths (docs/planning.md).

    OMP_NUM_THREADS=1 python benchmarks/plan_long.py --json benchmarks/plan_long.json   # hours on 2 cores; --fresh

Rows already in the --json file are kept (--fresh replans them).

How "longest" is found: the step's peak is its resident part (weights, LoRA states) plus a part linear in the
tokens, so two plans (32k and 64k tokens per sequence) give the line; its crossing of 80 GB is rounded down to the
grain (4096 tokens) and checked: the plan at that length must fit and the plan one grain longer must not
(otherwise the length moves a grain at a time until both hold). Every reported length is a planned step, not an
extrapolation. trl 1.16 without offloading: benchmarks/plan_scale.json (51,200 and 53,248 tokens)."""

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
GRAIN = 4096
MEMORY = 80
LONG = {"activation_offloading": True, "tiled_mlp": True, "tiled_norms": True}
SPLIT = {**LONG, "precompute_ref_logps": False}  # sequence parallelism: the reference runs on each step's shards
LORA, FULL = "recipes/llama-3-8b/dpo_lora.yaml", "recipes/zephyr-7b/dpo.yaml"
ROWS = [  # (model, trainer, overrides, devices[, recipe]): LoRA on one GPU, then 8 GPUs
    ("llama-3-8b", "alignment", LONG, 1),
    ("qwen2.5-7b", "alignment", LONG, 1),
    ("llama-3-8b", "trl", {"activation_offloading": True}, 1),
    ("qwen2.5-7b", "trl", {"activation_offloading": True}, 1),
    ("llama-3-8b", "alignment", {**SPLIT, "sequence_parallel_size": 8}, 8),  # 32 heads, 8 key/value heads
    ("qwen2.5-7b", "alignment", {**SPLIT, "sequence_parallel_size": 4}, 4),  # 28 heads: 4 ranks at most
    # full fine-tuning on 8 GPUs (a frozen reference copy): ZeRO-3 with offloading and tiling (no split), each
    # pair split over the GPUs under ZeRO-2, and trl 1.16 under ZeRO-3 with its own activation offloading
    ("llama-3-8b", "alignment", LONG, 8, FULL),
    ("llama-3-8b", "alignment", {**SPLIT, "sequence_parallel_size": 8}, 8, FULL),
    ("qwen2.5-7b", "alignment", {**SPLIT, "sequence_parallel_size": 4}, 8, FULL),  # 4-way split x 2 replicas
    ("llama-3-8b", "trl", {"activation_offloading": True}, 8, FULL),
]


def plan(model: str, trainer: str, overrides: dict, devices: int, length: int, recipe: str = LORA) -> dict:
    sys.path.insert(0, str(ROOT))
    from alignment.planning.plan import simulate
    from alignment.recipes import load_recipe

    extra = {"init_from_config": str(ROOT / "benchmarks" / "model_configs" / f"{model}.json"), "use_cpu": True,
             "per_device_train_batch_size": 1, "max_length": length, **overrides}  # fmt: skip
    method, script, model_args, config = load_recipe(ROOT / recipe, extra)
    result = simulate(method, script, model_args, config, 1, length, target="cuda", trainer=trainer,
                      devices=devices)  # fmt: skip
    gc.collect()
    return {"peak_gib": round(result.peak_bytes / GIB, 2), "host_gib": round((result.host_offload_bytes or 0) / GIB, 2),
            "precompute_gib": round((result.precompute_peak_bytes or 0) / GIB, 2)}  # fmt: skip


def row_job(
    model: str, trainer: str, overrides: dict, devices: int, recipe: str = LORA, start: int | None = None
) -> dict:
    started = time.time()
    split = overrides.get("sequence_parallel_size", 1)  # a rank plans T / split positions: lengths scale by it
    grain = GRAIN * split
    points = {n: plan(model, trainer, overrides, devices, n, recipe) for n in (32768 * split, 65536 * split)}
    (a, pa), (b, pb) = ((n, points[n]["peak_gib"]) for n in points)
    guess = start or int(a + (MEMORY - pa) / (pb - pa) * (b - a)) // grain * grain  # start: a previous answer

    def fits(n):
        if n not in points:
            points[n] = plan(model, trainer, overrides, devices, n, recipe)
        return points[n]["peak_gib"] <= MEMORY

    n = guess
    while not fits(n):
        n -= grain
    while fits(n + grain):
        n += grain
    return {"model": model, "trainer": trainer, "overrides": overrides, "devices": devices, "recipe": recipe,
            "points": points,
            "longest_80GB": n,
            "seconds": round(time.time() - started)}  # fmt: skip


def key(row) -> tuple:
    return row[0], row[1], json.dumps(row[2], sort_keys=True), row[3], row[4] if len(row) > 4 else LORA


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", default=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--fresh", action="store_true", help="replan every row (default: keep the --json file's rows)")
    parser.add_argument("--start", default=None, help="a JSON of earlier rows whose lengths start the search")
    parser.add_argument("--summary", action="store_true", help="plan nothing: the comparison of the --json rows")
    args = parser.parse_args()
    done, starts = {}, {}
    for path, into in ((args.start, starts), (None if args.fresh else args.json, done)):
        if path and Path(path).exists():
            for row in json.loads(Path(path).read_text())["rows"]:
                row.setdefault("devices", 1)
                row.setdefault("recipe", LORA)
                into[key((row["model"], row["trainer"], row["overrides"], row["devices"], row["recipe"]))] = row
    todo = [] if args.summary else [(*row, LORA)[:5] for row in ROWS if key(row) not in done]
    begin = [starts[key(row)]["longest_80GB"] if key(row) in starts else None for row in todo]
    with ProcessPoolExecutor(args.workers, max_tasks_per_child=1) as pool:
        for row, result in zip(todo, pool.map(row_job, *zip(*todo), begin) if todo else []):
            done[key(row)] = result
    rows = [done[key(row)] for row in ROWS if key(row) in done]
    for row in rows:
        print(json.dumps(row))
    result = {"rows": rows, "against_trl": against_trl(rows)}
    print(json.dumps(result["against_trl"], indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


def against_trl(rows: list[dict]) -> list[dict]:
    """Each of our rows against trl 1.16's longest pair in the same setting (benchmarks/plan_scale.json: LoRA on
    one GPU; its longest on 8 GPUs, full fine-tuning under ZeRO-3, for the rows on several GPUs) and trl with its
    own activation offloading (the trl rows here, same model and training)."""
    scale = ROOT / "benchmarks" / "plan_scale.json"
    tables = json.loads(scale.read_text())["tables"] if scale.exists() else []
    out = []
    for row in rows:
        if row["trainer"] != "alignment":
            continue
        setup = "lora_1gpu" if row["recipe"] == LORA and row["devices"] == 1 else "full_zero3_8gpu"
        base = next((t["longest"]["80GB"] for t in tables if (t["model"], t["setup"], t["trainer"]) ==
                     (row["model"], setup, "trl")), None)  # fmt: skip
        # trl with its offloading in the same training (one pair per GPU: data parallelism does not lengthen it)
        offload = next((r["longest_80GB"] for r in rows if r["trainer"] == "trl" and r["model"] == row["model"] and
                        r["recipe"] == row["recipe"]), None)  # fmt: skip
        out.append({"model": row["model"], "recipe": row["recipe"], "devices": row["devices"],
                    "split": row["overrides"].get("sequence_parallel_size", 1), "longest": row["longest_80GB"],
                    "trl": base, "times_trl": round(row["longest_80GB"] / base, 1) if base else None,
                    "trl_offload": offload,
                    "times_trl_offload": round(row["longest_80GB"] / offload, 1) if offload else None})  # fmt: skip
    return out


if __name__ == "__main__":
    main()
