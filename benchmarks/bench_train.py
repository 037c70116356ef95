"""One DPO training step, ours against trl 1.16's DPOTrainer, in the same run.

    OMP_NUM_THREADS=1 python benchmarks/bench_train.py [--steps 3]

Setup (issue 4): a tiny Llama (vocab 32000, hidden 256, 4 layers), batch 8 pairs, sequences of 512
tokens (256 prompt + 256 completion tokens), float32 on CPU, a separate reference model, gradient
checkpointing off for both, sigmoid DPO with beta 0.1, AdamW. Each trainer runs in a fresh subprocess:
one warm-up step, then ``--steps`` timed steps (steps/s = timed steps / their wall time); peak RSS is the
process's high-water mark over the whole run (model, reference, optimizer state and the steps).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = "the film story plot actors scenes music camera and with a was felt very quite it of some".split()


def _hwm_mb() -> float:
    return int(re.search(r"VmHWM:\s+(\d+)", open("/proc/self/status").read()).group(1)) / 1024


def _rows(n: int, seed: int = 0, words: int = 256):
    import random

    rng = random.Random(seed)

    def text(k):
        return " ".join(rng.choice(WORDS) for _ in range(k))

    return [{"prompt": text(words), "chosen": " " + text(words), "rejected": " " + text(words)} for _ in range(n)]


class Setup:
    """The benchmark's tokenizer, tiny Llama, an identical reference, ``8 * (steps + 1)`` rows, and a callback
    that records the wall time at the start of each step and at the end (``times``). ``vocab`` and ``words``
    (per prompt and per completion) vary the shape (the memory-scaling runs of bench_sparsepo.py); ``positions``
    is the model's max_position_embeddings (bench_scaling.py's longer sequences); ``hidden`` and ``layers`` its
    width (heads of 64, MLP 2.6875 x hidden) and depth."""

    def __init__(self, steps: int, vocab=32000, words=256, positions=1024, hidden=256, layers=4):
        import torch
        from datasets import Dataset
        from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, TrainerCallback

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        self.tokenizer = AutoTokenizer.from_pretrained(os.path.join(ROOT, "data", "tokenizer"))
        torch.manual_seed(0)
        self.config = LlamaConfig(
            vocab_size=vocab, hidden_size=hidden, intermediate_size=hidden * 43 // 16, num_hidden_layers=layers,
            num_attention_heads=hidden // 64, num_key_value_heads=hidden // 64, max_position_embeddings=positions,
            pad_token_id=0, bos_token_id=1, eos_token_id=2,
        )  # fmt: skip
        self.model = LlamaForCausalLM(self.config)
        self.ref = LlamaForCausalLM(self.config)
        self.ref.load_state_dict(self.model.state_dict())
        self.data = Dataset.from_list(_rows(8 * (steps + 1), words=words))
        self.times: list[float] = []
        times = self.times

        class Clock(TrainerCallback):
            def on_step_begin(self, *args, **kwargs):
                times.append(time.perf_counter())

            def on_train_end(self, *args, **kwargs):
                times.append(time.perf_counter())

        self.clock = Clock()

    def steps_per_s(self, steps: int) -> float:
        return steps / (self.times[-1] - self.times[1])  # from the start of step 2 to the end


def worker(which: str, steps: int) -> dict:
    setup = Setup(steps)
    model, ref, data, tokenizer, clock = setup.model, setup.ref, setup.data, setup.tokenizer, setup.clock
    common = dict(
        output_dir="/tmp/bench_train_" + which, per_device_train_batch_size=8, max_steps=steps + 1, beta=0.1,
        learning_rate=1e-5, max_length=512, use_cpu=True, bf16=False, report_to=[], save_strategy="no",
        logging_steps=1000, gradient_checkpointing=False, seed=0, dataloader_num_workers=0,
    )  # fmt: skip
    if which == "trl":
        from trl import DPOConfig, DPOTrainer

        trainer = DPOTrainer(
            model=model,
            ref_model=ref,
            args=DPOConfig(**common),
            train_dataset=data,
            processing_class=tokenizer,
            callbacks=[clock],
        )
    else:
        from alignment.trainers import DPOConfig, DPOTrainer

        common.pop("gradient_checkpointing")
        trainer = DPOTrainer(
            model,
            ref_model=ref,
            args=DPOConfig(**common),
            train_dataset=data,
            processing_class=tokenizer,
            callbacks=[clock],
        )
    tokens = [len(r["prompt_ids"]) + len(r["chosen_ids"]) for r in trainer.train_dataset.select(range(8))]
    trainer.train()
    return {
        "trainer": which,
        "steps_per_s": setup.steps_per_s(steps),
        "peak_rss_mb": _hwm_mb(),
        "tokens_per_sequence": max(tokens),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.steps)))
        return 0
    results = {}
    for which in ("trl", "ours"):
        out = subprocess.run(
            [sys.executable, __file__, "--worker", which, "--steps", str(args.steps)], capture_output=True, text=True
        )
        if out.returncode != 0:
            print(out.stderr[-3000:], file=sys.stderr)
            return 1
        results[which] = json.loads(out.stdout.strip().splitlines()[-1])
        print(json.dumps(results[which]), file=sys.stderr)
    trl, ours = results["trl"], results["ours"]
    print(f"DPO step, tiny Llama (V=32000, H=256, 4 layers), 8 pairs x {ours['tokens_per_sequence']} tokens, CPU, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, {args.steps} timed steps\n")  # fmt: skip
    print("| trainer | steps/s | peak RSS (MB) |\n| --- | ---: | ---: |")
    print(f"| trl 1.16 DPOTrainer | {trl['steps_per_s']:.3f} | {trl['peak_rss_mb']:.0f} |")
    print(f"| alignment DPOTrainer | {ours['steps_per_s']:.3f} | {ours['peak_rss_mb']:.0f} |")
    print(f"\nthroughput ours / TRL = {ours['steps_per_s'] / trl['steps_per_s']:.2f}x; "
          f"peak RSS ours / TRL = {ours['peak_rss_mb'] / trl['peak_rss_mb']:.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
