"""The long-context table of BENCHMARKS.md: the longest DPO pair that fits a real card (H100 80GB, H200: the usable
memory of alignment.planning.devices, the CUDA context and an allocator reserve taken off), ours with activation
offloading and the tiled MLP and norms (and on several GPUs each pair split across them: sequence parallelism)
against trl 1.16 (without and with its own activation offloading), LoRA on one GPU and full fine-tuning on 8,
planned with `alignment plan` on fake tensors along the GPU code paths (docs/planning.md), with
flash_attention_2 (what recipes/llama-3-8b/dpo_lora_long.yaml loads) and real pairs: prompt 25% of the longer
sequence, the shorter completion 75% of the longer (a padded pair, which flash attention unpads).

    OMP_NUM_THREADS=1 python benchmarks/plan_long.py --json benchmarks/plan_long.json   # hours on 2 cores; --fresh
    OMP_NUM_THREADS=1 python benchmarks/plan_long.py --json benchmarks/plan_long.json --card h200

Rows already in the --json file are kept (--fresh replans them).

How "longest" is found: alignment.planning.search.longest from 32k tokens per sequence (the peak is the resident
part plus a part linear in the tokens under flash attention, so two plans give the line, its crossing is planned
and then one grain (4096 tokens) more): every reported length is a planned step, not an extrapolation."""

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
FLASH = {"model_init_kwargs": {"attn_implementation": "flash_attention_2"}}
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
    # trl 1.16 without offloading, with the same attention (flash_attention_2) and pairs: the "x trl" baseline
    ("llama-3-8b", "trl", {}, 1),
    ("qwen2.5-7b", "trl", {}, 1),
    ("llama-3-8b", "trl", {}, 8, FULL),
    ("qwen2.5-7b", "trl", {}, 8, FULL),
]


def plan(model: str, trainer: str, overrides: dict, devices: int, length: int, recipe: str = LORA) -> dict:
    sys.path.insert(0, str(ROOT))
    from alignment.planning.plan import simulate
    from alignment.recipes import load_recipe

    extra = {"init_from_config": str(ROOT / "benchmarks" / "model_configs" / f"{model}.json"), "use_cpu": True,
             "per_device_train_batch_size": 1, "max_length": length, **FLASH, **overrides}  # fmt: skip
    method, script, model_args, config = load_recipe(ROOT / recipe, extra)
    result = simulate(method, script, model_args, config, 1, length, target="cuda", trainer=trainer,
                      devices=devices)  # fmt: skip
    gc.collect()
    return {"peak_gib": round(result.peak_bytes / GIB, 2), "host_gib": round((result.host_offload_bytes or 0) / GIB, 2),
            "pinned_gib": round((result.host_pinned_bytes or 0) / GIB, 2),
            "precompute_gib": round((result.precompute_peak_bytes or 0) / GIB, 2), "peak_bytes": result.peak_bytes,
            "peak_phase": result.peak_phase}  # fmt: skip


def row_job(model: str, trainer: str, overrides: dict, devices: int, recipe: str = LORA, card: str = "h100-80gb",
            known: dict | None = None) -> dict:  # fmt: skip
    sys.path.insert(0, str(ROOT))
    from alignment.planning.devices import device
    from alignment.planning.search import longest

    started = time.time()
    usable = device(card).usable_bytes
    split = overrides.get("sequence_parallel_size", 1)  # a rank plans T / split positions: lengths scale by it
    points = {int(n): p for n, p in (known or {}).items()}  # the same step planned for another card

    def peak_at(n: int) -> int:
        if n not in points:
            points[n] = plan(model, trainer, overrides, devices, n, recipe)
        return points[n]["peak_bytes"]

    seeded = {n: p["peak_bytes"] for n, p in points.items()}
    n = longest(peak_at, usable, GRAIN * split, 1 << 24, start=None if seeded else 32768 * split, known=seeded)
    return {"model": model, "trainer": trainer, "overrides": overrides, "devices": devices, "recipe": recipe,
            "card": card, "usable_gib": round(usable / GIB, 2), "points": points, "longest": n,
            "pinned_gib": points[n]["pinned_gib"] if n else None, "seconds": round(time.time() - started)}  # fmt: skip


def key(row, card: str) -> tuple:
    return row[0], row[1], json.dumps(row[2], sort_keys=True), row[3], row[4] if len(row) > 4 else LORA, card


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", default=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--card", default="h100-80gb", help="the card (alignment.planning.devices)")
    parser.add_argument("--rows", default=None, help="plan only these rows of ROWS (comma-separated indices)")
    parser.add_argument("--fresh", action="store_true", help="replan every row (default: keep the --json file's rows)")
    parser.add_argument("--summary", action="store_true", help="plan nothing: the comparison of the --json rows")
    parser.add_argument("--markdown", action="store_true", help="plan nothing: print BENCHMARKS.md's table")
    args = parser.parse_args()
    done = {}
    if args.json and Path(args.json).exists() and not args.fresh:
        for row in json.loads(Path(args.json).read_text())["rows"]:
            if "card" in row:  # rows of the corrected planner (earlier ones planned 80 GB flat)
                done[
                    key((row["model"], row["trainer"], row["overrides"], row["devices"], row["recipe"]), row["card"])
                ] = row
    if args.markdown:
        print(markdown(json.loads(Path(args.json).read_text()), args.json))
        return
    known = {k[:5]: r["points"] for k, r in done.items()}  # a row's peaks do not depend on the card: seeds
    wanted = [ROWS[int(i)] for i in args.rows.split(",")] if args.rows else ROWS
    todo = [] if args.summary else [(*row, LORA)[:5] for row in wanted if key(row, args.card) not in done]
    with ProcessPoolExecutor(args.workers, max_tasks_per_child=1) as pool:
        jobs = [pool.submit(row_job, *row, card=args.card, known=known.get(key(row, "any")[:5])) for row in todo]
        for row, job in zip(todo, jobs):
            done[key(row, args.card)] = result = job.result()
            print(json.dumps({k: v for k, v in result.items() if k != "points"}), flush=True)
            _write(args.json, done)
    _write(args.json, done)


def _write(path, done: dict) -> None:
    rows = [done[k] for card in ("h100-80gb", "h200") for row in ROWS if (k := key(row, card)) in done]
    rows += [r for k, r in done.items() if r not in rows]
    result = {"rows": rows, "against_trl": against_trl(rows)}
    if path:
        Path(path).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["against_trl"], indent=1))


def against_trl(rows: list[dict]) -> list[dict]:
    """Each of our rows against trl 1.16's longest pair with the same model, card and attention: trl without
    offloading and trl with its own activation offloading (the trl rows here). One GPU: trl in the same training
    (LoRA or full). Several GPUs: trl's longest on several GPUs, the larger of its full fine-tuning under ZeRO-3 on
    8 (which partitions the weights) and its LoRA step (data parallelism does not lengthen a pair)."""

    def trl(row, offloading: bool):
        same = [r for r in rows if r["trainer"] == "trl" and r["model"] == row["model"] and r["card"] == row["card"]
                and bool(r["overrides"].get("activation_offloading")) == offloading and r["longest"]]  # fmt: skip
        if row["devices"] == 1:
            same = [r for r in same if r["recipe"] == row["recipe"] and r["devices"] == 1]
        return max((r["longest"] for r in same), default=None)

    out = []
    for row in rows:
        if row["trainer"] != "alignment":
            continue
        base, offload = trl(row, False), trl(row, True)
        out.append({"model": row["model"], "recipe": row["recipe"], "devices": row["devices"], "card": row["card"],
                    "split": row["overrides"].get("sequence_parallel_size", 1), "longest": row["longest"],
                    "trl": base, "times_trl": round(row["longest"] / base, 1) if base and row["longest"] else None,
                    "trl_offload": offload,
                    "times_trl_offload": round(row["longest"] / offload, 1) if offload and row["longest"] else None,
                    })  # fmt: skip
    return out


NAMES = {"llama-3-8b": "Llama-3-8B", "qwen2.5-7b": "Qwen2.5-7B"}


def markdown(result: dict, path: str) -> str:
    """BENCHMARKS.md's long-context table of ``result`` (each number tagged with its place in ``path``)."""
    path = Path(path).resolve().relative_to(ROOT).as_posix()
    head = (
        "| card | model | training | GPUs | trainer | pair split over | longest pair (tokens per sequence) | peak "
        "per GPU at it (GiB) | pinned host memory per GPU (GiB) | x trl 1.16 | x trl with its offloading |"
    )
    lines = [head, "| --- | --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for i, row in enumerate(result["rows"]):
        model, card = NAMES[row["model"]], row["card"]
        full = row["recipe"] != LORA
        training = "full" if full else "LoRA"
        split = row["overrides"].get("sequence_parallel_size", 1)
        zero = " (ZeRO-2)" if split > 1 else " (ZeRO-3)" if full else ""
        offloaded = row["overrides"].get("activation_offloading")
        who = ("alignment" if row["trainer"] == "alignment" else "trl + offloading" if offloaded else "trl 1.16") + zero
        n = row["longest"]
        cells = [f"{n}<!--@ {path}:rows.{i}.longest -->" if n else "none"]
        if n:
            point = row["points"].get(str(n)) or row["points"][n]
            cells.append(f"{point['peak_gib']}<!--@ {path}:rows.{i}.points.{n}.peak_gib -->")
            cells.append(f"{row['pinned_gib']}<!--@ {path}:rows.{i}.pinned_gib -->")
        else:
            cells += ["", ""]
        k = next((j for j, c in enumerate(result["against_trl"]) if (c["model"], c["recipe"], c["devices"], c["card"],
                  c["split"]) == (row["model"], row["recipe"], row["devices"], card, split)), None)  # fmt: skip
        for field in ("times_trl", "times_trl_offload"):
            value = result["against_trl"][k][field] if k is not None and row["trainer"] == "alignment" else None
            cells.append(f"{value}x<!--@ {path}:against_trl.{k}.{field} -->" if value else "")
        lines.append(f"| {card} | {model} | {training} | {row['devices']} | {who} | {split} | " + " | ".join(cells)
                     + " |")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
