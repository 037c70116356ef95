"""The long-context table of BENCHMARKS.md: the longest DPO pair that fits one 80 GB GPU with LoRA, ours with
activation offloading and the tiled MLP and norms against trl 1.16 (without and with its own activation
offloading), planned with `alignment plan` on fake tensors along the GPU code paths (docs/planning.md).

    OMP_NUM_THREADS=1 python benchmarks/plan_long.py --json benchmarks/plan_long.json   # about an hour on 2 cores

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
ROWS = [  # (model, trainer, overrides)
    ("llama-3-8b", "alignment", LONG),
    ("qwen2.5-7b", "alignment", LONG),
    ("llama-3-8b", "trl", {"activation_offloading": True}),
    ("qwen2.5-7b", "trl", {"activation_offloading": True}),
]


def plan(model: str, trainer: str, overrides: dict, length: int) -> dict:
    sys.path.insert(0, str(ROOT))
    from alignment.planning.plan import simulate
    from alignment.recipes import load_recipe

    extra = {"init_from_config": str(ROOT / "benchmarks" / "model_configs" / f"{model}.json"), "use_cpu": True,
             "per_device_train_batch_size": 1, "max_length": length, **overrides}  # fmt: skip
    method, script, model_args, config = load_recipe(ROOT / "recipes/llama-3-8b/dpo_lora.yaml", extra)
    result = simulate(method, script, model_args, config, 1, length, target="cuda", trainer=trainer)
    gc.collect()
    return {"peak_gib": round(result.peak_bytes / GIB, 2), "host_gib": round((result.host_offload_bytes or 0) / GIB, 2),
            "precompute_gib": round((result.precompute_peak_bytes or 0) / GIB, 2)}  # fmt: skip


def row_job(model: str, trainer: str, overrides: dict) -> dict:
    started = time.time()
    points = {n: plan(model, trainer, overrides, n) for n in (32768, 65536)}
    (a, pa), (b, pb) = ((n, points[n]["peak_gib"]) for n in (32768, 65536))
    guess = int(a + (MEMORY - pa) / (pb - pa) * (b - a)) // GRAIN * GRAIN

    def fits(n):
        points.setdefault(n, plan(model, trainer, overrides, n))
        return points[n]["peak_gib"] <= MEMORY

    n = guess
    while not fits(n):
        n -= GRAIN
    while fits(n + GRAIN):
        n += GRAIN
    return {"model": model, "trainer": trainer, "overrides": overrides, "points": points, "longest_80GB": n,
            "seconds": round(time.time() - started)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", default=None)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with ProcessPoolExecutor(args.workers) as pool:
        rows = list(pool.map(row_job, *zip(*ROWS)))
    for row in rows:
        print(json.dumps(row))
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
