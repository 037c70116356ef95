"""How one training step's cost grows with sequence length: ours padded, ours packed (padding_free) and
trl 1.16 (padded, and with its padding_free flag), in one run.

    OMP_NUM_THREADS=1 python benchmarks/bench_scaling.py [--steps 2] [--lengths 256 512 1024 2048]
        [--skewed-steps 4] [--plot benchmarks/scaling.png] [--json benchmarks/scaling.json]

Setup: bench_train.py's tiny Llama (vocab 32000, hidden 256, 4 layers, sdpa attention), float32 on CPU, a
separate reference model, AdamW, gradient checkpointing off, 4 pairs per batch, batches in dataset order
(``train_sampling_strategy="sequential"``, so every trainer sees the same batches). Data:

- fixed lengths: every sequence ``L`` tokens (prompt L/2 + completion L/2), L in ``--lengths``;
- skewed: sequence lengths drawn lognormal (sigma 0.9, mean about 300 tokens, capped at 2048), half prompt,
  half completion, the chosen and the rejected completion of a pair drawn separately.

Each configuration runs in a fresh process (glibc ``MALLOC_MMAP_THRESHOLD_=65536``: tensors get their own
mappings, so the peak RSS follows the live tensors): one warm-up step, then the timed steps. Reported:
steps/s, tokens/s (the real prompt + completion tokens of the timed batches, chosen and rejected, over
their wall time: the same count for every trainer), peak RSS (the process's high-water mark: models,
optimizer state and the steps). DPO at every shape; RPO and SparsePO on the skewed data; and the skewed
DPO step of ours padded / packed again on a backbone-heavy Llama (hidden 512, 8 layers), since on the tiny one
the LM head, which packing does not change (the op scores completion tokens only), costs more than the
backbone. A linear and a quadratic fit of our peak memory against L say whether anything grows faster than
the tokens.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys

from bench_train import WORDS, Setup, _hwm_mb

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAIRS = 4
#: (hidden, layers): bench_train.py's tiny Llama, whose LM head (V = 32000) costs more than its backbone, and a
#: backbone-heavy one (as real models are: Llama-3-8B's head is about 7% of its parameters)
SHAPES = {"tiny": (256, 4), "deep": (512, 8)}
TRAINERS = ("trl", "trl_padding_free", "ours", "ours_packed")
LABELS = {
    "trl": "trl 1.16 (padded)",
    "trl_padding_free": "trl 1.16 (padding_free=True)",
    "ours": "alignment (padded)",
    "ours_packed": "alignment (padding_free)",
}


def rows_for(data: str, n: int, seed: int = 0) -> list[dict]:
    """``n`` standard rows: ``fixed:L`` (every sequence L tokens) or ``skewed`` (lognormal lengths)."""
    rng = random.Random(seed)

    def text(k):
        return " ".join(rng.choice(WORDS) for _ in range(max(k, 1)))

    if data.startswith("fixed:"):
        half = int(data.split(":")[1]) // 2
        return [{"prompt": text(half - 1), "chosen": " " + text(half), "rejected": " " + text(half)} for _ in range(n)]
    sigma = 0.9
    mu = math.log(300) - sigma**2 / 2  # mean 300 before the cap

    def length():
        return min(2048, max(8, int(rng.lognormvariate(mu, sigma))))

    rows = []
    for _ in range(n):
        chosen, rejected = length(), length()
        prompt = min(chosen, rejected) // 2
        rows.append({"prompt": text(prompt - 1), "chosen": " " + text(chosen - prompt),
                     "rejected": " " + text(rejected - prompt)})  # fmt: skip
    return rows


def token_counts(rows, tokenizer) -> list[int]:
    """Real tokens per row as our tokenizer pipeline counts them: prompt + chosen + prompt + rejected."""
    from datasets import Dataset

    from alignment.data import tokenize_preference_dataset

    tokenized, _ = tokenize_preference_dataset(Dataset.from_list(rows), tokenizer, max_length=None)
    return [2 * len(r["prompt_ids"]) + len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in tokenized]


def make_trainer(which: str, method: str, setup: Setup, data, steps: int):
    common = dict(
        output_dir=f"/tmp/bench_scaling_{which}_{method}", per_device_train_batch_size=PAIRS, max_steps=steps + 1,
        learning_rate=1e-5, max_length=4096, use_cpu=True, bf16=False, report_to=[], save_strategy="no",
        logging_steps=1000, seed=0, dataloader_num_workers=0, train_sampling_strategy="sequential",
    )  # fmt: skip
    kw = dict(ref_model=setup.ref, train_dataset=data, processing_class=setup.tokenizer, callbacks=[setup.clock])
    if which.startswith("trl"):
        from trl import DPOConfig, DPOTrainer

        extra = {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, 1.0]} if method == "rpo" else {}
        if method == "sparsepo":
            raise SystemExit("trl has no SparsePO")
        args = DPOConfig(gradient_checkpointing=False, padding_free=which == "trl_padding_free", **extra, **common)
        return DPOTrainer(model=setup.model, args=args, **kw)
    from alignment.trainers import DPOConfig, DPOTrainer, RPOConfig, RPOTrainer, SparsePOConfig, SparsePOTrainer

    cls, config = {"dpo": (DPOTrainer, DPOConfig), "rpo": (RPOTrainer, RPOConfig),
                   "sparsepo": (SparsePOTrainer, SparsePOConfig)}[method]  # fmt: skip
    extra = {"eta": 1.0, "sft_normalization": "token_mean"} if method == "rpo" else {}
    return cls(setup.model, args=config(padding_free=which == "ours_packed", **extra, **common), **kw)


def worker(which: str, method: str, data: str, steps: int, shape: str = "tiny") -> dict:
    from datasets import Dataset

    hidden, layers = SHAPES[shape]
    setup = Setup(steps, positions=4096, hidden=hidden, layers=layers)
    rows = rows_for(data, PAIRS * (steps + 1))
    counts = token_counts(rows, setup.tokenizer)
    trainer = make_trainer(which, method, setup, Dataset.from_list(rows), steps)
    trainer.train()
    timed = sum(counts[PAIRS:])  # batch 0 is the warm-up
    seconds = setup.times[-1] - setup.times[1]
    return {
        "trainer": which,
        "method": method,
        "data": data,
        "shape": shape,
        "steps_per_s": steps / seconds,
        "tokens_per_s": timed / seconds,
        "peak_rss_mb": _hwm_mb(),
        "mean_tokens_per_sequence": sum(counts) / (2 * len(counts)),
    }


def run(which: str, method: str, data: str, steps: int, shape: str = "tiny") -> dict:
    cmd = [sys.executable, __file__, "--worker", which, "--method", method, "--data", data, "--steps", str(steps),
           "--shape", shape]  # fmt: skip
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": os.environ.get("MALLOC_MMAP_THRESHOLD_", "65536")}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"{which} {method} {data} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(json.dumps(result), file=sys.stderr, flush=True)
    return result


def fit(lengths: list[int], peaks: list[float]) -> dict:
    """Least-squares fits of peak memory against L: linear (slope MB per token, worst residual) and
    quadratic (the L^2 term's share of the peak at the longest L)."""
    import numpy as np

    x, y = np.array(lengths, dtype=float), np.array(peaks, dtype=float)
    b, a = np.polyfit(x, y, 1)
    residual = float(np.max(np.abs(y - (a + b * x))))
    c2 = np.polyfit(x, y, 2)[0] if len(x) >= 3 else 0.0
    return {"intercept_mb": a, "mb_per_token": b, "max_residual_mb": residual,
            "quadratic_share": float(c2 * x[-1] ** 2 / y[-1])}  # fmt: skip


def plot(results: list[dict], lengths: list[int], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.2))
    for which in TRAINERS:
        runs = [next(r for r in results if r["trainer"] == which and r["data"] == f"fixed:{n}") for n in lengths]
        style = "--" if which.endswith(("padding_free", "packed")) else "-"
        ax_t.plot(lengths, [1 / r["steps_per_s"] for r in runs], style, marker="o", label=LABELS[which])
        ax_m.plot(lengths, [r["peak_rss_mb"] / 1024 for r in runs], style, marker="o", label=LABELS[which])
    ax_t.set(xlabel="tokens per sequence", ylabel="seconds per DPO step", xscale="log", yscale="log",
             title=f"Step time ({PAIRS} pairs, tiny Llama, V=32000, CPU)")  # fmt: skip
    ax_m.set(xlabel="tokens per sequence", ylabel="peak RSS (GiB)", xscale="log", title="Peak memory")
    for ax in (ax_t, ax_m):
        ax.minorticks_off()
        ax.set_xticks(lengths, [str(n) for n in lengths])
        ax.grid(alpha=0.3)
    ax_m.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def table(results: list[dict], data: str, method: str = "dpo", shape: str = "tiny") -> None:
    runs = [r for r in results if r["data"] == data and r["method"] == method and r.get("shape", "tiny") == shape]
    base = next((r for r in runs if r["trainer"] == "trl"), None)
    hidden, layers = SHAPES[shape]
    print(f"\n{method.upper()}, {data} (mean {runs[0]['mean_tokens_per_sequence']:.0f} tokens per sequence), "
          f"H={hidden}, {layers} layers\n")  # fmt: skip
    print("| trainer | steps/s | tokens/s | peak RSS (MB) | tokens/s vs trl | peak vs trl |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in runs:
        vs = f"{r['tokens_per_s'] / base['tokens_per_s']:.2f}x" if base else "-"
        mem = f"{r['peak_rss_mb'] / base['peak_rss_mb']:.2f}" if base else "-"
        print(f"| {LABELS[r['trainer']]} | {r['steps_per_s']:.3f} | {r['tokens_per_s']:.0f} | "
              f"{r['peak_rss_mb']:.0f} | {vs} | {mem} |")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2, help="timed steps at each fixed length")
    parser.add_argument("--skewed-steps", type=int, default=4, help="timed steps on the skewed data")
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 512, 1024, 2048])
    parser.add_argument("--plot", default=os.path.join(ROOT, "benchmarks", "scaling.png"))
    parser.add_argument("--json", default=os.path.join(ROOT, "benchmarks", "scaling.json"))
    parser.add_argument("--report-only", action="store_true", help="re-print the tables and plot from --json")
    parser.add_argument("--deep-only", action="store_true", help="run the backbone-heavy pair, add it to --json")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--method", default="dpo", help=argparse.SUPPRESS)
    parser.add_argument("--data", default="skewed", help=argparse.SUPPRESS)
    parser.add_argument("--shape", default="tiny", choices=sorted(SHAPES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.method, args.data, args.steps, args.shape)))
        return 0
    deep = [("ours", "dpo", "skewed", "deep"), ("ours_packed", "dpo", "skewed", "deep")]
    if args.report_only or args.deep_only:
        with open(args.json) as f:
            results = [r for r in json.load(f) if not (args.deep_only and r.get("shape") == "deep")]
    else:
        results = [run(w, "dpo", f"fixed:{n}", args.steps) for n in args.lengths for w in TRAINERS]
        results += [run(w, "dpo", "skewed", args.skewed_steps) for w in TRAINERS]
        results += [run(w, "rpo", "skewed", args.skewed_steps) for w in ("trl", "ours", "ours_packed")]
        results += [run(w, "sparsepo", "skewed", args.skewed_steps) for w in ("ours", "ours_packed")]
    if not args.report_only:
        results += [run(w, method, data, args.skewed_steps, shape) for w, method, data, shape in deep]
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    plot(results, args.lengths, args.plot)
    print(f"tiny Llama (V=32000, H=256, 4 layers), {PAIRS} pairs per step, CPU, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}; plot: {os.path.relpath(args.plot, ROOT)}")  # fmt: skip
    for n in args.lengths:
        table(results, f"fixed:{n}")
    for method in ("dpo", "rpo", "sparsepo"):
        table(results, "skewed", method)
    table(results, "skewed", "dpo", "deep")
    print("\nPeak memory against L (fixed lengths): linear fit, worst residual, L^2 term's share at the longest L")
    for which in TRAINERS:
        peaks = [next(r for r in results if r["trainer"] == which and r["data"] == f"fixed:{n}")["peak_rss_mb"]
                 for n in args.lengths]  # fmt: skip
        f = fit(args.lengths, peaks)
        print(f"- {LABELS[which]}: {f['intercept_mb']:.0f} MB + {f['mb_per_token']:.2f} MB/token, worst residual "
              f"{f['max_residual_mb']:.0f} MB, quadratic share {100 * f['quadratic_share']:+.1f}%")  # fmt: skip
    for shape, (hidden, layers) in SHAPES.items():
        skewed = {r["trainer"]: r for r in results if r["data"] == "skewed" and r["method"] == "dpo"
                  and r.get("shape", "tiny") == shape}  # fmt: skip
        print(f"packed / padded tokens/s on the skewed data (DPO, H={hidden}, {layers} layers): "
              f"{skewed['ours_packed']['tokens_per_s'] / skewed['ours']['tokens_per_s']:.2f}x")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
