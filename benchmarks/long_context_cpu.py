"""A long-context step measured on this CPU against its plan: one LoRA DPO pair on a Llama-shaped model (real
random weights, no fake tensors) with activation checkpointing, activation offloading (trl's manager, the CPU as
its device) and the tiled MLP and norms, on a pair whose chosen and rejected completions differ in length (the
padded batch builds sdpa's mask). Planned: ``alignment plan``'s CPU plan of the same step (``simulate``);
measured: the trained model's parameters and optimizer state plus the peak of the torch profiler's memory events
over the step (``measure``), the reference precompute pass included.

    OMP_NUM_THREADS=1 python benchmarks/long_context_cpu.py --json benchmarks/long_context_cpu.json
    OMP_NUM_THREADS=1 python benchmarks/long_context_cpu.py --prompt 512 --chosen 1536 --rejected 1024   # seconds

The default pair: prompt 2048, chosen 6144, rejected 4096 tokens (sequences of 8192 and 6144 tokens), hidden size
256, 2 layers, 4 heads (2 key/value heads): about two minutes on one core.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL = {"model_type": "llama", "hidden_size": 256, "intermediate_size": 704, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1024, "max_position_embeddings": 65536,
         "tie_word_embeddings": False, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}  # fmt: skip
LONG = {"activation_checkpointing": True, "activation_offloading": True, "tiled_mlp": True, "tiled_norms": True}


def recipe(folder: Path, hidden: int, layers: int):
    import yaml

    from alignment.recipes import load_recipe

    (folder / "model.json").write_text(json.dumps({**MODEL, "hidden_size": hidden, "num_hidden_layers": layers,
                                                   "intermediate_size": int(2.75 * hidden)}))  # fmt: skip
    spec = {"method": "dpo", "init_from_config": str(folder / "model.json"), "beta": 0.1, "learning_rate": 1e-5,
            "dtype": "float32", "bf16": False, "use_cpu": True, "use_peft": True, "lora_r": 8, "lora_alpha": 16,
            "precompute_ref_logps": True, "per_device_train_batch_size": 1, "diagnostics": False,
            "output_dir": str(folder / "out"), **LONG}  # fmt: skip
    (folder / "recipe.yaml").write_text(yaml.safe_dump(spec))
    return load_recipe(folder / "recipe.yaml")


def compare(prompt: int, chosen: int, rejected: int, hidden: int = 256, layers: int = 2) -> dict:
    sys.path.insert(0, str(ROOT))
    from alignment.planning.fake import PairShape
    from alignment.planning.plan import measure, simulate

    length = prompt + max(chosen, rejected)
    shape = PairShape.from_tokens(prompt, chosen, rejected, "the benchmark's pair")
    with tempfile.TemporaryDirectory() as folder:
        method, script, model_args, config = recipe(Path(folder), hidden, layers)
        config.max_length = length
        began = time.perf_counter()
        planned = simulate(method, script, model_args, config, 1, length, target="cpu", shape=shape)
        plan_s = time.perf_counter() - began
        began = time.perf_counter()
        real = measure(method, script, model_args, config, 1, length, shape=shape)
        step_s = time.perf_counter() - began
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, "hidden": hidden, "layers": layers,
            "planned_mib": round(planned.peak_bytes / 2**20, 1), "measured_mib": round(real["peak_bytes"] / 2**20, 1),
            "error": round(planned.peak_bytes / real["peak_bytes"] - 1, 4), "peak_phase": planned.peak_phase,
            "breakdown_mib": {k: round(v / 2**20, 1) for k, v in planned.breakdown.items()},
            "plan_seconds": round(plan_s, 1), "measure_seconds": round(step_s, 1)}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompt", type=int, default=2048)
    parser.add_argument("--chosen", type=int, default=6144)
    parser.add_argument("--rejected", type=int, default=4096)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    row = compare(args.prompt, args.chosen, args.rejected, args.hidden, args.layers)
    print(json.dumps(row, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(row, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
