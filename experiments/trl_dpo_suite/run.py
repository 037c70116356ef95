"""Run trl's DPO test file against trl 1.16's DPOTrainer and against alignment's, and compare.

    python build_standins.py    # once
    python run.py               # both runs (about 10 minutes each on 2 cores), then the comparison
    python run.py --compare     # compare the last two runs' results again

Prints, for each trainer, how many tests passed, failed and were skipped, then every test that passes with trl
and not with ours (and the reverse), with the first line of each failure. Results: runs/trl.xml, runs/alignment.xml.
"""

import argparse
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUNS = HERE / "runs"
TEST_FILE = HERE / "tests" / "test_dpo_trainer.py"


def run(which):
    RUNS.mkdir(exist_ok=True)
    env = {**os.environ, "ALIGNMENT_TRL_SUITE": which, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", f"--junitxml={RUNS / which}.xml", str(TEST_FILE)]
    print(f"[{which}]", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=HERE, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def outcomes(which):
    tree = ET.parse(RUNS / f"{which}.xml")
    result = {}
    for case in tree.iter("testcase"):
        name = f"{case.get('classname').rsplit('.', 1)[-1]}::{case.get('name')}"
        bad = case.find("failure") if case.find("failure") is not None else case.find("error")
        if bad is not None:
            result[name] = ("failed", (bad.get("message") or "").splitlines()[0][:160] if bad.get("message") else "")
        elif case.find("skipped") is not None:
            result[name] = ("skipped", "")
        else:
            result[name] = ("passed", "")
    return result


def compare():
    trl, ours = outcomes("trl"), outcomes("alignment")
    for which, res in (("trl 1.16", trl), ("alignment", ours)):
        counts = {k: sum(1 for v in res.values() if v[0] == k) for k in ("passed", "failed", "skipped")}
        print(f"{which:10s} passed {counts['passed']:3d}  failed {counts['failed']:3d}  skipped {counts['skipped']:3d}")
    base = [n for n, v in trl.items() if v[0] == "passed"]
    kept = [n for n in base if ours.get(n, ("missing",))[0] == "passed"]
    print(f"\nalignment passes {len(kept)} of the {len(base)} tests that pass with trl 1.16")
    for n in base:
        if ours.get(n, ("missing",))[0] != "passed":
            print(f"  only trl: {n}: {ours.get(n, ('missing', ''))[1]}")
    for n, v in ours.items():
        if v[0] == "passed" and trl.get(n, ("missing",))[0] != "passed":
            print(f"  only ours: {n}: trl {trl.get(n, ('missing', ''))[1]}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", action="store_true", help="only compare the results of the last runs")
    args = parser.parse_args()
    if not TEST_FILE.exists():
        sys.exit(f"{TEST_FILE}: not found. Put trl's tests/test_dpo_trainer.py (tag v1.16.0) there (see README.md)")
    if not args.compare:
        for which in ("trl", "alignment"):
            run(which)
    compare()


if __name__ == "__main__":
    main()
