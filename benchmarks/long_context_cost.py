"""The time cost of the long-context step on paper (BENCHMARKS.md, "Long context"): for each row of
benchmarks/plan_long.json at its longest length, the bytes activation offloading moves per step against PCIe
bandwidth, and the FLOPs of the step with what activation checkpointing and the tiled MLP recompute.

    python benchmarks/long_context_cost.py   # seconds; reads benchmarks/plan_long.json and benchmarks/model_configs

The model, per step of one pair (2 sequences of T tokens) of a DPO run (the adapters' FLOPs left out):

- forward: 2 * (matmul parameters per layer * layers + LM head) per token, plus causal attention
  2 * T^2 * (heads * head_dim) per layer per sequence (half of the full T x T score and value products);
- backward: the linear layers' input gradients (1x their forward; full fine-tuning adds their weight gradients,
  1x more), attention 2.5x its forward (FlashAttention-2's backward recomputes the scores), the fused head's dh
  formed in its forward (1x; full fine-tuning's dW 1x more);
- activation checkpointing recomputes each layer's forward once in the backward (+1 forward of the layers);
- the tiled MLP recomputes each tile's MLP forward in its backward (+1 forward of the MLPs, on top of the above);
- the reference: precomputed once before training where the recipe says so (LoRA on one GPU), else one no-grad
  forward per step (the adapter-off pass, or the frozen copy of full fine-tuning).

Offload: what the planner counted as moved to the host (``host_gib``) goes out during the forward and comes back
during the backward, once each way, on a side stream that overlaps compute. Link speeds: PCIe 4.0 x16 about 25 GB/s
per direction in practice, PCIe 5.0 x16 (H100 / H200 hosts) about 50 GB/s. Compute rates: 400 TFLOP/s is a
sustained bf16 rate on an H100 (about 40% of its 989 dense peak); the step time scales inversely with it.
Under sequence parallelism each rank does 1/N of the step's token work (attention: 1/N of the heads over the whole
sequence) and moves its own share over its own link.
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GIB = 2**30
LINKS = {"PCIe 4.0": 25e9, "PCIe 5.0": 50e9}
RATE = 400e12


def flops(cfg: dict, tokens: int, full: bool = False, reference: bool = False, sequences: int = 2) -> dict:
    """FLOPs of one pair's step for ``cfg`` (a config.json) at ``tokens`` per sequence, by part."""
    h, inter, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    heads, kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    d = h // heads
    attn_proj = h * heads * d + 2 * h * kv * d + heads * d * h
    mlp = 3 * h * inter
    n = tokens * sequences
    linear_fwd = 2 * n * layers * (attn_proj + mlp)
    mlp_fwd = 2 * n * layers * mlp
    head_fwd = 2 * n * h * cfg["vocab_size"]
    attn_fwd = sequences * layers * 2 * tokens**2 * heads * d
    forward = linear_fwd + attn_fwd + head_fwd
    backward = (2 if full else 1) * (linear_fwd + head_fwd) + 2.5 * attn_fwd
    recompute = linear_fwd + attn_fwd
    parts = {"forward": forward, "backward": backward, "checkpoint_recompute": recompute,
             "tiled_mlp_recompute": mlp_fwd, "reference": forward if reference else 0}  # fmt: skip
    parts["step"] = sum(parts.values())
    return parts


def main() -> int:
    rows = json.loads((ROOT / "benchmarks" / "plan_long.json").read_text())["rows"]
    print("| model | trainer | training | GPUs | pair split over | tokens per sequence | offloaded per rank (GiB, "
          "each way) | transfer at PCIe 4.0 / 5.0 (s) | step PFLOPs (checkpoint / tiled-MLP recompute) | compute "
          "per rank at 400 TFLOP/s (s) |")  # fmt: skip
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        cfg = json.loads((ROOT / "benchmarks" / "model_configs" / f"{row['model']}.json").read_text())
        n = row.get("longest", row.get("longest_80GB"))
        if not n:
            continue
        tiled = row["overrides"].get("tiled_mlp", False)
        split = row["overrides"].get("sequence_parallel_size", 1)
        full = "zephyr" in row.get("recipe", "")
        reference = full or not row["overrides"].get("precompute_ref_logps", True)
        f = flops(cfg, n, full, reference)
        step = f["step"] if tiled else f["step"] - f["tiled_mlp_recompute"]
        host = row["points"][str(n)]["host_gib"] * GIB
        moves = " / ".join(f"{host / bw:.1f}" for bw in LINKS.values())
        extra = f"{f['checkpoint_recompute'] / 1e15:.0f} / {f['tiled_mlp_recompute'] / 1e15 if tiled else 0:.0f}"
        setup = "full" if full else "LoRA"
        cells = [row["model"], row["trainer"], setup, row.get("devices", 1), split, f"{n:,}", f"{host / GIB:.0f}",
                 moves, f"{step / 1e15:.0f} ({extra})", f"{step / split / RATE:.0f}"]  # fmt: skip
        print("| " + " | ".join(str(c) for c in cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
