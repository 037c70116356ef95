"""INPO against iterative DPO with a Bradley-Terry reward model, on rock-paper-scissors (cyclic preference,
uniform Nash policy): does each method's policy approach the Nash policy over the iterations?

For each seed it runs, with the same budget (5 iterations x 256 prompts x 8 samples, 2 epochs per
iteration, the shipped tiny SFT model):

- INPO ranked by the task's oracle (``recipes/quickstart/inpo.yaml``);
- iterative DPO ranked by a Bradley-Terry reward model fitted once to the oracle's comparisons of the SFT
  model's samples (``recipes/quickstart/iterative_dpo.yaml``, ``judge: bradley_terry``), the standard RLHF
  pipeline;

then prints, per run, the sampled move distribution of 1000 held-out prompts after each iteration (TV
distance to uniform, exploitability), the seconds per stage, and renders every run into one report
(OUT/report.html; its self-play figure also as OUT/self_play.png).

    OMP_NUM_THREADS=1 python experiments/inpo_rps.py --out runs/inpo-rps [--seeds 0 1]

Runs whose iterations.jsonl is complete are not rerun (the loop resumes unfinished ones).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = {"INPO (oracle judge)": "inpo.yaml", "iterative DPO (Bradley-Terry judge)": "iterative_dpo.yaml"}
SHORT = {"inpo.yaml": "inpo", "iterative_dpo.yaml": "iterative-dpo-bt"}


def run(recipe: str, seed: int, out: Path) -> list[dict]:
    cmd = [sys.executable, "-m", "alignment.cli", "train", str(ROOT / "recipes" / "quickstart" / recipe),
           "--seed", str(seed), "--output_dir", str(out)]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return [json.loads(line) for line in (out / "iterations.jsonl").read_text().splitlines()]


def table(rows: list[dict]) -> list[str]:
    out = ["| iteration | pairs | p(rock) | p(paper) | p(scissors) | invalid | TV to uniform | exploitability | "
           "seconds (generate / judge / train / evaluate) |", "|" + " --- |" * 9]  # fmt: skip
    for r in rows:
        s, sec = r["sampled"], r.get("seconds", {})
        times = " / ".join(f"{sec.get(k, 0):.0f}" for k in ("generate", "judge", "train", "evaluate")) if sec else "-"
        out.append(f"| {r['iteration']} | {r.get('pairs', '-')} | {s['p_rock']:.3f} | {s['p_paper']:.3f} | "
                   f"{s['p_scissors']:.3f} | {s['invalid_rate']:.3f} | {s['tv_to_uniform']:.3f} | "
                   f"{s['exploitability']:.3f} | {times} |")  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/inpo-rps")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args()
    out = Path(args.out)
    results, folders, lines = {}, [], []
    for seed in args.seeds:
        for name, recipe in METHODS.items():
            folder = out / f"{SHORT[recipe]}-s{seed}"
            rows = run(recipe, seed, folder)
            results[f"{name}, seed {seed}"] = rows
            folders.append(str(folder))
            lines += [f"### {name}, seed {seed}", "", *table(rows), ""]
            fit = folder / "judge" / "fit.json"
            if fit.exists():
                f = json.loads(fit.read_text())
                lines += [f"Bradley-Terry judge: {f['comparisons']} comparisons, held-out accuracy "
                          f"{f['heldout_accuracy']:.3f}, fitted in {f['seconds']:.0f} s.", ""]  # fmt: skip
    lines += ["| run | TV start -> end | exploitability start -> end |", "| --- | --- | --- |"]
    for key, rows in results.items():
        a, b = rows[0]["sampled"], rows[-1]["sampled"]
        lines.append(f"| {key} | {a['tv_to_uniform']:.3f} -> {b['tv_to_uniform']:.3f} | "
                     f"{a['exploitability']:.3f} -> {b['exploitability']:.3f} |")  # fmt: skip
    (out / "results.json").write_text(json.dumps(results, indent=1))
    from alignment.diagnostics.plots import self_play
    from alignment.diagnostics.report import write_report
    from alignment.diagnostics.runs import load_runs

    page, _ = write_report(folders, out / "report.html")
    (out / "self_play.png").write_bytes(self_play(load_runs(folders)))  # the report's self-play figure
    print("\n".join(lines))
    print(f"\nreport: {page}, figure: {out / 'self_play.png'}")


if __name__ == "__main__":
    main()
