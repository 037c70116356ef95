"""One SparsePO training step against one DPO step of ours, on bench_train.py's shape, in the same run.

    OMP_NUM_THREADS=1 python benchmarks/bench_sparsepo.py [--steps 3]

Setup: bench_train.py's (a tiny Llama with vocab 32000, hidden 256, 4 layers; 8 pairs of 512 tokens; float32
on CPU; a separate reference model; AdamW); SparsePO with its defaults (learned common mask, KL term on).
Each trainer runs in a fresh subprocess: one warm-up step, then ``--steps`` timed steps; peak RSS is the
process's high-water mark. The budget SparsePO must stay within: DPO's peak plus the mask network (its
weights, gradients and two AdamW moments) plus O(tokens): the reference's hidden states of the embeddings
and every layer, kept for the masks, and the mask network's normalized copy of each layer it reads, saved for
its backward ((2L + 1) x 2B x T x H floats; no [B, T, V] tensor).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from bench_train import Setup, _hwm_mb


def worker(which: str, steps: int, extra: dict | None = None) -> dict:
    from alignment.trainers import DPOConfig, DPOTrainer, SparsePOConfig, SparsePOTrainer

    setup = Setup(steps)
    config = setup.config
    common = dict(
        output_dir="/tmp/bench_sparsepo_" + which, per_device_train_batch_size=8, max_steps=steps + 1,
        learning_rate=1e-5, max_length=512, use_cpu=True, bf16=False, report_to=[], save_strategy="no",
        logging_steps=1000, seed=0, dataloader_num_workers=0,
    )  # fmt: skip
    if which == "sparsepo":
        cls, args = SparsePOTrainer, SparsePOConfig(**common, **(extra or {}))
    else:
        cls, args = DPOTrainer, DPOConfig(**common)
    trainer = cls(
        setup.model,
        ref_model=setup.ref,
        args=args,
        train_dataset=setup.data,
        processing_class=setup.tokenizer,
        callbacks=[setup.clock],
    )
    net = getattr(trainer, "mask_network", None)
    mask_params = sum(p.numel() for p in net.parameters()) if net is not None else 0
    tokens = [len(r["prompt_ids"]) + len(r["chosen_ids"]) for r in trainer.train_dataset.select(range(8))]
    trainer.train()
    return {
        "trainer": which,
        "steps_per_s": setup.steps_per_s(steps),
        "peak_rss_mb": _hwm_mb(),
        "mask_params": mask_params,
        "tokens_per_sequence": max(tokens),
        "layers": config.num_hidden_layers,
        "hidden": config.hidden_size,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--set", nargs="*", default=[], help="SparsePO fields, key=value (e.g. kl_coef=0)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    extra = {k: json.loads(v) if v[:1] in "0123456789-[{tf" else v for k, v in (x.split("=", 1) for x in args.set)}
    if args.worker:
        print(json.dumps(worker(args.worker, args.steps, extra)))
        return 0
    results = {}
    for which in ("dpo", "sparsepo"):
        cmd = [sys.executable, __file__, "--worker", which, "--steps", str(args.steps), "--set", *args.set]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            print(out.stderr[-3000:], file=sys.stderr)
            return 1
        results[which] = json.loads(out.stdout.strip().splitlines()[-1])
        print(json.dumps(results[which]), file=sys.stderr)
    dpo, sparse = results["dpo"], results["sparsepo"]
    mask_mb = sparse["mask_params"] * 4 * 4 / 2**20  # weights, gradients, two AdamW moments (float32)
    tokens = 2 * 8 * sparse["tokens_per_sequence"]
    # O(tokens): the reference's states (embeddings + every layer, kept for the masks) and the mask network's
    # normalized copy of each layer it reads (saved for its backward)
    states_mb = (2 * sparse["layers"] + 1) * tokens * sparse["hidden"] * 4 / 2**20
    budget = dpo["peak_rss_mb"] + mask_mb + states_mb
    print(f"One step, tiny Llama (V=32000, H=256, 4 layers), 8 pairs x {sparse['tokens_per_sequence']} tokens, CPU, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, {args.steps} timed steps\n")  # fmt: skip
    print("| trainer | steps/s | peak RSS (MB) |\n| --- | ---: | ---: |")
    print(f"| alignment DPOTrainer | {dpo['steps_per_s']:.3f} | {dpo['peak_rss_mb']:.0f} |")
    print(f"| alignment SparsePOTrainer (learned mask) | {sparse['steps_per_s']:.3f} | {sparse['peak_rss_mb']:.0f} |")
    print(f"\nstep time SparsePO / DPO = {dpo['steps_per_s'] / sparse['steps_per_s']:.2f}x (target <= 1.5x); "
          f"peak RSS SparsePO - DPO = {sparse['peak_rss_mb'] - dpo['peak_rss_mb']:+.0f} MB; budget = DPO + mask "
          f"network {mask_mb:.1f} MB ({sparse['mask_params']:,} parameters) + O(tokens) states {states_mb:.0f} MB = "
          f"{budget:.0f} MB -> {'within' if sparse['peak_rss_mb'] <= budget else 'OVER'}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
