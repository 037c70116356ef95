"""The memory planner's calibration on this CPU: ``alignment plan``'s ``peak_bytes`` against the measured peak
(the trained and anchor models' parameters plus the most torch allocates during the step, from the torch
profiler's memory events) for three model shapes x two lengths x {DPO, SparsePO, INPO one iteration, trl
1.16's DPOTrainer as the planner simulates it for the comparison tables, then the reward model and online DPO
(its generation phase and its step)}, batch 8.

    OMP_NUM_THREADS=1 python benchmarks/bench_plan.py [--json benchmarks/plan_calibration.json]

Shapes: the shipped SFT model (data/sft_model: Llama, hidden 192, 4 layers, vocab 903, tied embeddings), a wider
and shallower Llama (hidden 320, 2 layers, grouped-query attention 5/1, untied head) and a Qwen2-shaped config
(hidden 96, 3 layers, grouped-query attention 4/2, vocab 2048, untied head), the last two through
``init_from_config``. Each (shape, method) runs in its own process.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {
    "dpo": "dpo.yaml",
    "sparsepo": "sparsepo.yaml",
    "inpo": "inpo.yaml",
    "trl_dpo": "dpo.yaml",
    "reward": "reward.yaml",
    "online_dpo": "online_dpo.yaml",
}
QWEN = {"model_type": "qwen2", "vocab_size": 2048, "hidden_size": 96, "intermediate_size": 256,
        "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 1024,
        "tie_word_embeddings": False, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}  # fmt: skip
WIDE = {"model_type": "llama", "vocab_size": 903, "hidden_size": 320, "intermediate_size": 864,
        "num_hidden_layers": 2, "num_attention_heads": 5, "num_key_value_heads": 1, "max_position_embeddings": 1024,
        "tie_word_embeddings": False, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}  # fmt: skip
LENGTHS = (64, 256)
FIRST = ("dpo", "sparsepo", "inpo", "trl_dpo")  # the rows of the first calibration, in its order
LATER = ("reward", "online_dpo")  # added since: their rows follow


def shapes(folder: Path) -> dict[str, str | None]:
    paths = {}
    for name, config in (("llama_wide", WIDE), ("qwen2_tiny", QWEN)):
        paths[name] = folder / f"{name}.json"
        paths[name].write_text(json.dumps(config))
    return {"sft_model": None, **{k: str(v) for k, v in paths.items()}}


def calibrate(method: str, init_from_config: str | None, lengths=LENGTHS, batch: int = 8) -> list[dict]:
    from alignment.planning.plan import measure, simulate
    from alignment.recipes import load_recipe

    overrides = {"use_cpu": True, **({"init_from_config": init_from_config} if init_from_config else {})}
    name, script, model_args, config = load_recipe(ROOT / "recipes" / "quickstart" / RECIPES[method], overrides)
    trainer = "trl" if method == "trl_dpo" else "alignment"  # trl's DPOTrainer planned against its own step
    rows = []
    for length in lengths:
        plan = simulate(name, script, model_args, config, batch, length, trainer=trainer)
        real = measure(name, script, model_args, config, batch, length, trainer=trainer)
        rows.append({"method": method, "length": length, "batch": batch, "planned": plan.peak_bytes,
                     "measured": real["peak_bytes"], "error": plan.peak_bytes / real["peak_bytes"] - 1,
                     "breakdown": plan.breakdown, "phase_peaks": plan.phase_peaks,
                     "generation": [plan.generation_peak_bytes, real.get("generation_peak_bytes")]})  # fmt: skip
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", default=None)
    parser.add_argument("--worker", nargs=2, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        method, config = args.worker
        print(json.dumps(calibrate(method, None if config == "-" else config)))
        return 0
    results = []
    with tempfile.TemporaryDirectory() as folder:
        jobs = [(shape, config, m) for m in (FIRST, LATER) for shape, config in shapes(Path(folder)).items()]
        for shape, config, methods in jobs:  # the later methods' rows after the first ones (their indexes kept)
            for method in methods:
                done = subprocess.run([sys.executable, __file__, "--worker", method, config or "-"], cwd=ROOT,
                                      capture_output=True, text=True)  # fmt: skip
                if done.returncode != 0:
                    print(done.stderr[-2000:], file=sys.stderr)
                    return 1
                results += [{"shape": shape, **row} for row in json.loads(done.stdout.strip().splitlines()[-1])]
    print("| shape | method | length | planned MiB | measured MiB | error |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for r in results:
        print(f"| {r['shape']} | {r['method']} | {r['length']} | {r['planned'] / 2**20:.1f} | "
              f"{r['measured'] / 2**20:.1f} | {r['error']:+.1%} |")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
