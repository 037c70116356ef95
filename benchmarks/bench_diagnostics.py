"""The overhead of the default diagnostics on the DPO quickstart: training time with and without them.

    OMP_NUM_THREADS=1 python benchmarks/bench_diagnostics.py [--recipe recipes/quickstart/dpo.yaml] [--repeats 2]

Runs ``alignment train RECIPE`` (no task evaluation, no report) with ``diagnostics: false`` and with the
defaults (softmax collapse every step; entanglement and displacement on 16 probe pairs every 50 steps,
plus the start and the end), alternating, each in a fresh subprocess; compares the trainer's own
``train_runtime`` (the probes run inside training, so they are counted) and takes the median over repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(recipe: str, diagnostics: bool, out: str) -> float:
    args = [sys.executable, "-m", "alignment.cli", "train", recipe, "--output_dir", out, "--eval_task", "null",
            "--report", "false", "--diagnostics", str(diagnostics).lower()]  # fmt: skip
    subprocess.run(args, cwd=ROOT, check=True, capture_output=True)
    with open(os.path.join(out, "alignment_run.json")) as f:
        return float(json.load(f)["train_metrics"]["train_runtime"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipe", default="recipes/quickstart/dpo.yaml")
    parser.add_argument("--repeats", type=int, default=2)
    opts = parser.parse_args()
    times: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(opts.repeats):
            for on in (False, True):
                seconds = run(opts.recipe, on, os.path.join(tmp, f"{on}-{i}"))
                times[on].append(seconds)
                print(f"repeat {i}: diagnostics {'on ' if on else 'off'} {seconds:7.1f} s", flush=True)
    off, on = statistics.median(times[False]), statistics.median(times[True])
    print("\n| recipe | diagnostics off | default diagnostics | overhead |\n| --- | ---: | ---: | ---: |")
    print(f"| {opts.recipe} | {off:.1f} s | {on:.1f} s | {100 * (on / off - 1):+.1f}% |")


if __name__ == "__main__":
    main()
