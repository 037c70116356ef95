"""Benchmark the fused log-softmax op against naive log_softmax, TRL's fused LM head and the GEMM bound.

    OMP_NUM_THREADS=1 python benchmarks/bench_kernel.py                  # both spec shapes, markdown table
    OMP_NUM_THREADS=1 python benchmarks/bench_kernel.py --shapes 2048x32000 --repeats 3 --methods naive,general

Every (shape, method) runs in a fresh subprocess, which builds the inputs (h [N, H], W [V, H] float32,
targets uniform with 10% of rows masked), records its RSS, resets the kernel's peak-RSS counter, runs one
forward + backward (peak RSS above the inputs = "extra peak memory"), then times ``--repeats`` more runs
(the median is reported; default 3 for the first shape, 1 for the second). Methods:

- naive:       z = h @ W^T, log_softmax, gather, masked sum, backward (grads to h and W)
- trl:         trl 1.16's chunked log-prob function, called as its fused LM head calls it on CPU
               (every position scored, masked afterwards), grads to h and W
- gemm:        the bare GEMM bound: z = h @ W^T, z @ W, z^T @ h, nothing else
- general:     alignment.ops.token_logps, path="general", grads to h and W
- pair_fused:  alignment.ops.pair_fused_loss with the sigmoid DPO loss, sequences of 256 tokens, grads to h, W
- frozen:      alignment.ops.token_logps with W frozen (frozen-head path), grad to h
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time

import torch

METHODS = ("naive", "trl", "gemm", "general", "pair_fused", "frozen")
SHAPES = ((2048, 32000), (8192, 128256))
HIDDEN = 512
SEQ = 256


def _hwm_kb() -> int:
    return int(re.search(r"VmHWM:\s+(\d+)", open("/proc/self/status").read()).group(1))


def _rss_kb() -> int:
    return int(re.search(r"VmRSS:\s+(\d+)", open("/proc/self/status").read()).group(1))


def _inputs(n: int, v: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, HIDDEN, generator=gen)
    weight = torch.randn(v, HIDDEN, generator=gen) * 0.02
    targets = torch.randint(0, v, (n,), generator=gen)
    targets[torch.rand(n, generator=gen) < 0.1] = -100
    return hidden, weight, targets


def _runner(method: str, hidden, weight, targets):
    from alignment.losses import dpo_loss
    from alignment.ops import pair_fused_loss, token_logps

    mask = targets != -100
    n = hidden.shape[0]

    def leaf(x, grad=True):
        return x.detach().requires_grad_(grad)

    def naive():
        h, w = leaf(hidden), leaf(weight)
        logp = torch.log_softmax(h @ w.t(), dim=-1).gather(1, targets.clamp(min=0).unsqueeze(1)).squeeze(1)
        (logp * mask).sum().backward()

    def trl():
        from trl.kernels.chunked_logprob import ChunkedLogProbFunction
        from trl.trainer.utils import _CHUNKED_LOGPROB_CHUNK_SIZE

        h, w = leaf(hidden), leaf(weight)
        out = ChunkedLogProbFunction.apply(
            h, w, None, targets.clamp(min=0), 1.0, _CHUNKED_LOGPROB_CHUNK_SIZE, None, 1.0, ("log_probs",)
        )
        (out[0] * mask).sum().backward()

    def gemm():
        z = hidden @ weight.t()
        z @ weight
        z.t() @ hidden

    def general():
        h, w = leaf(hidden), leaf(weight)
        token_logps(h, w, targets, path="general").logps.sum().backward()

    def frozen():
        token_logps(leaf(hidden), weight, targets, path="frozen").logps.sum().backward()

    pairs = n // (2 * SEQ)
    ref = torch.zeros(pairs)

    def loss_fn(chunk):
        losses, metrics = dpo_loss(
            chunk.chosen_logps, chunk.rejected_logps, ref[chunk.pair_index], ref[chunk.pair_index]
        )
        return losses.sum() / pairs, metrics

    def pair_fused():
        h, w = leaf(hidden.view(2 * pairs, SEQ, HIDDEN)), leaf(weight)
        pair_fused_loss(h, w, targets.view(2 * pairs, SEQ), loss_fn).loss.backward()

    return {"naive": naive, "trl": trl, "gemm": gemm, "general": general, "frozen": frozen, "pair_fused": pair_fused}[
        method
    ]


def worker(method: str, n: int, v: int, repeats: int) -> dict:
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    hidden, weight, targets = _inputs(n, v)
    run = _runner(method, hidden, weight, targets)
    base = _rss_kb()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    start = time.perf_counter()
    run()
    first = time.perf_counter() - start
    extra_mb = (_hwm_kb() - base) / 1024
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return {"method": method, "n": n, "v": v, "extra_mb": extra_mb, "time_s": statistics.median(times or [first])}


def measure(method: str, n: int, v: int, repeats: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", method, "--n", str(n), "--v", str(v), "--repeats", str(repeats)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        return {"method": method, "n": n, "v": v, "error": out.stderr.strip().splitlines()[-1:] or ["failed"]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(results: list[dict]) -> str:
    lines = [
        "| N x V | method | time (s) | x naive | x TRL | x GEMM bound | extra peak MB | mem x naive |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for (n, v), group in _by_shape(results).items():
        base = {r["method"]: r for r in group if "error" not in r}
        for r in group:
            if "error" in r:
                lines.append(f"| {n} x {v} | {r['method']} | failed: {r['error'][0][:60]} | | | | | |")
                continue

            lines.append(
                f"| {n} x {v} | {r['method']} | {r['time_s']:.2f} | {_ratio(r, base, 'naive')} | "
                f"{_ratio(r, base, 'trl')} | {_ratio(r, base, 'gemm')} | {r['extra_mb']:.0f} | "
                f"{_ratio(r, base, 'naive', 'extra_mb')} |"
            )
    return "\n".join(lines)


def _ratio(result: dict, base: dict, ref: str, key: str = "time_s") -> str:
    if ref not in base or base[ref][key] <= 0:
        return "-"
    return f"{result[key] / base[ref][key]:.2f}"


def _by_shape(results):
    groups: dict = {}
    for r in results:
        groups.setdefault((r["n"], r["v"]), []).append(r)
    return groups


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default=",".join(f"{n}x{v}" for n, v in SHAPES))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--repeats", default="3,1", help="timed runs per shape (comma list, one per shape)")
    parser.add_argument("--json", default=None, help="also write the raw results to this file")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--v", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.n, args.v, int(args.repeats))))
        return 0
    results = []
    shapes = args.shapes.split(",")
    repeats = [int(r) for r in args.repeats.split(",")]
    repeats += [repeats[-1]] * (len(shapes) - len(repeats))
    for shape, reps in zip(shapes, repeats):
        n, v = (int(x) for x in shape.split("x"))
        for method in args.methods.split(","):
            result = measure(method, n, v, reps)
            print(json.dumps(result), file=sys.stderr, flush=True)
            results.append(result)
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, H={HIDDEN}, float32, "
        f"median of {args.repeats} timed runs per shape after one untimed run\n"
    )
    print(table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
