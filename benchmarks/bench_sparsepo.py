"""One SparsePO training step against one DPO step of ours, on bench_train.py's shape, in the same run.

    OMP_NUM_THREADS=1 python benchmarks/bench_sparsepo.py [--steps 3]

Setup: bench_train.py's (a tiny Llama with vocab 32000, hidden 256, 4 layers; 8 pairs of 512 tokens; float32
on CPU; a separate reference model; AdamW); SparsePO with its defaults (learned common mask, KL term on).
Each trainer runs in a fresh subprocess: one warm-up step, then ``--steps`` timed steps; peak RSS is the
process's high-water mark, with glibc's MALLOC_MMAP_THRESHOLD_=65536 (each tensor its own mapping, unmapped
when freed: without it the peak follows the heap's reuse and fragmentation, +/-100 MB run to run).
The budget SparsePO must stay within: DPO's peak plus the mask network (its weights, gradients and two AdamW
moments) plus O(tokens) states (:func:`states_mb`) plus the difference in the kernel's tiles within the same
working-memory budget (:func:`tiles_mb`); no [B, T, V] tensor. ``--scaling`` repeats it at V x 2 and T / 2.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from bench_train import Setup, _hwm_mb


def worker(which: str, steps: int, extra: dict | None = None, vocab: int = 32000, words: int = 256) -> dict:
    from alignment.trainers import DPOConfig, DPOTrainer, SparsePOConfig, SparsePOTrainer

    setup = Setup(steps, vocab, words)
    config = setup.config
    common = dict(
        output_dir="/tmp/bench_sparsepo_" + which, per_device_train_batch_size=8, max_steps=steps + 1,
        learning_rate=1e-5, max_length=2 * words, use_cpu=True, bf16=False, report_to=[], save_strategy="no",
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
        "scored_tokens": sum(
            len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in trainer.train_dataset.select(range(8))
        ),
        "layers": config.num_hidden_layers,
        "hidden": config.hidden_size,
        "vocab": vocab,
    }


def compare(steps: int, options: list[str], vocab: int = 32000, words: int = 256) -> dict:
    """DPO and SparsePO, each in a fresh subprocess, on one shape."""
    results = {}
    for which in ("dpo", "sparsepo"):
        cmd = [sys.executable, __file__, "--worker", which, "--steps", str(steps), "--vocab", str(vocab),
               "--words", str(words), "--set", *options]  # fmt: skip
        # tensors above 64 KiB get their own mappings, returned to the system when freed: the peak RSS then
        # follows the live tensors instead of glibc's heap reuse and fragmentation (+/-100 MB run to run)
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": os.environ.get("MALLOC_MMAP_THRESHOLD_", "65536")}
        out = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if out.returncode != 0:
            raise SystemExit(out.stderr[-3000:])
        results[which] = json.loads(out.stdout.strip().splitlines()[-1])
        print(json.dumps(results[which]), file=sys.stderr)
    return results


def states_mb(sparse: dict) -> float:
    """O(tokens): the reference's states (embeddings + every layer, kept for the masks; its final normed
    states, for the KL) and the mask network's normalized copy of each layer it reads (saved for its
    backward): (2L + 2) x 2B x T x H floats."""
    tokens = 2 * 8 * sparse["tokens_per_sequence"]
    return (2 * sparse["layers"] + 2) * tokens * sparse["hidden"] * 4 / 2**20


def tiles_mb(sparse: dict) -> float:
    """The kernel's working memory, SparsePO minus DPO: both within the same budget (KernelOptions), DPO in one
    tile of logits, SparsePO's KL mode in four (z, exp z, z_ref, exp z_ref) of a quarter of the rows."""
    from alignment.ops import KernelOptions

    n, vocab = sparse["scored_tokens"], sparse["vocab"]
    dpo_rows, _ = KernelOptions().chunks(n, vocab, 1, full_vocab=True)
    kl_rows, _ = KernelOptions().chunks(n, vocab, 4, full_vocab=True)
    return (4 * kl_rows - dpo_rows) * vocab * 4 / 2**20


def scaling(steps: int, options: list[str]) -> None:
    """SparsePO's extra peak memory over DPO as the vocabulary doubles and as the sequences halve: a [B, T, V]
    tensor would grow with V; O(tokens) terms do not."""
    print("| vocab | tokens/sequence | DPO peak (MB) | SparsePO peak (MB) | extra (MB) | states (MB) | tiles (MB) |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for vocab, words in ((32000, 256), (64000, 256), (32000, 128)):
        r = compare(steps, options, vocab, words)
        dpo, sparse = r["dpo"], r["sparsepo"]
        print(f"| {vocab} | {sparse['tokens_per_sequence']} | {dpo['peak_rss_mb']:.0f} | {sparse['peak_rss_mb']:.0f} | "
              f"{sparse['peak_rss_mb'] - dpo['peak_rss_mb']:+.0f} | {states_mb(sparse):.0f} | "
              f"{tiles_mb(sparse):+.0f} |", flush=True)  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--set", nargs="*", default=[], help="SparsePO fields, key=value (e.g. kl_coef=0)")
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--words", type=int, default=256, help="words per prompt and per completion")
    parser.add_argument("--scaling", action="store_true", help="the extra memory at vocab x2 and sequences /2")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    extra = {k: json.loads(v) if v[:1] in "0123456789-[{tf" else v for k, v in (x.split("=", 1) for x in args.set)}
    if args.worker:
        print(json.dumps(worker(args.worker, args.steps, extra, args.vocab, args.words)))
        return 0
    if args.scaling:
        scaling(args.steps, args.set)
        return 0
    results = compare(args.steps, args.set, args.vocab, args.words)
    dpo, sparse = results["dpo"], results["sparsepo"]
    mask_mb = sparse["mask_params"] * 4 * 4 / 2**20  # weights, gradients, two AdamW moments (float32)
    states, tiles = states_mb(sparse), tiles_mb(sparse)
    budget = dpo["peak_rss_mb"] + mask_mb + states + tiles
    print(f"One step, tiny Llama (V=32000, H=256, 4 layers), 8 pairs x {sparse['tokens_per_sequence']} tokens, CPU, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, {args.steps} timed steps\n")  # fmt: skip
    print("| trainer | steps/s | peak RSS (MB) |\n| --- | ---: | ---: |")
    print(f"| alignment DPOTrainer | {dpo['steps_per_s']:.3f} | {dpo['peak_rss_mb']:.0f} |")
    print(f"| alignment SparsePOTrainer (learned mask) | {sparse['steps_per_s']:.3f} | {sparse['peak_rss_mb']:.0f} |")
    print(f"\nstep time SparsePO / DPO = {dpo['steps_per_s'] / sparse['steps_per_s']:.2f}x (target <= 1.5x); "
          f"peak RSS SparsePO - DPO = {sparse['peak_rss_mb'] - dpo['peak_rss_mb']:+.0f} MB; budget = DPO + mask "
          f"network {mask_mb:.1f} MB ({sparse['mask_params']:,} parameters) + O(tokens) states {states:.0f} MB "
          f"+ kernel tiles {tiles:+.0f} MB = "
          f"{budget:.0f} MB -> {'within' if sparse['peak_rss_mb'] <= budget else 'OVER'}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
