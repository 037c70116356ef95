"""The report's summary table: one row per run, the columns that fit its methods.

Every run gets its name, method, steps and final loss; then the preference metrics (reward accuracy and
margin), the probe diagnostics, SparsePO's mask sparsity, the task evaluation as "start -> end" (the start model
beside the aligned one; for self-play iteration 0 beside the last), the regret learner's ratio to the best
Hedge, and the softmax-collapse share. A column no run has a value for is left out, so a table of DPO runs has
no SparsePO columns and a regret run no rows of "-".
"""

from __future__ import annotations

from alignment.diagnostics.runs import Run

#: the metrics a task evaluation is read by, the headline ones first (rps, arithmetic, sentiment, others)
HEADLINE_METRICS = ("tv_to_uniform", "exploitability", "accuracy", "mean_score", "score", "reward")


def _last(run: Run, key: str, probes: bool = False):
    _, values = run.probe_series(key) if probes else run.series(key)
    return values[-1] if values else None


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def start_and_end(run: Run) -> tuple[dict, dict]:
    """({mode: metrics} of the start model, of the end model): a self-play run's iteration 0 and last iteration;
    a training run's eval_start and eval (empty when the run did not evaluate)."""
    if run.iterations:
        first, last = run.iterations[0], run.iterations[-1]
        pick = lambda row: {m: row[m] for m in ("greedy", "sampled") if isinstance(row.get(m), dict)}  # noqa: E731
        return (pick(first) if first is not last else {}), pick(last)
    task_modes = lambda ev: {m: v for m, v in ev.items() if m in ("greedy", "sampled") and isinstance(v, dict)}  # noqa: E731
    return task_modes(run.eval_start), task_modes(run.evaluation)


def headline_keys(metrics: dict) -> list[str]:
    """The headline metrics present in one mode's metrics (at most two)."""
    return [k for k in HEADLINE_METRICS if isinstance(metrics.get(k), (int, float))][:2]


def task_cells(run: Run) -> dict[str, str]:
    """column -> "start -> end" (or the end value alone) per headline metric and decoding mode."""
    start, end = start_and_end(run)
    cells = {}
    for mode in ("greedy", "sampled"):
        for key in headline_keys(end.get(mode, {})):
            after = _fmt(end[mode][key])
            before = start.get(mode, {}).get(key)
            cells[f"{key} ({mode})"] = f"{_fmt(before)} -> {after}" if before is not None else after
    return cells


def regret_cells(run: Run) -> dict[str, str]:
    """column -> the model's regret at T over the best Hedge's, per held-out family (regret-loss runs)."""
    cells = {}
    for fam in run.regret_eval.get("families", []):
        m = fam["methods"]
        if "hedge_best" in m and m["hedge_best"]["regret"] > 0:
            cells[f"regret / best Hedge ({fam['family']})"] = f"{m['model']['regret'] / m['hedge_best']['regret']:.2f}x"
    return cells


LOGGED = [("final loss", "loss"), ("reward acc.", "rewards/accuracies"), ("margin", "rewards/margins"),
          ("reward mask at 0", "sparsepo/mask_sparsity_reward"), ("KL mask at 0", "sparsepo/mask_sparsity_kl"),
          ("regret (train)", "regret/mean")]  # fmt: skip
PROBED = [("chosen dlogp", "chosen_delta"), ("rejected dlogp", "rejected_delta"),
          ("chosen fell", "chosen_fell_share"), ("entangled", "entangled_share")]  # fmt: skip


def run_row(run: Run) -> dict[str, str]:
    """column -> cell for one run (only the columns it has)."""
    steps = max((e.get("step", 0) for e in run.log_history), default=0)
    row = {"run": run.name, "method": run.method, "steps": str(steps)}
    if run.iterations:
        row["iterations"] = str(run.iterations[-1]["iteration"])
    row.update({col: _fmt(_last(run, key)) for col, key in LOGGED if run.has(key)})
    row.update({col: _fmt(_last(run, key, probes=True)) for col, key in PROBED if run.probe_series(key)[0]})
    row.update(task_cells(run))
    row.update(regret_cells(run))
    _, collapse = run.series("diagnostics/softmax_collapse")
    if collapse:
        row["max collapse"] = _fmt(max(collapse))
    return row


def summary_table(runs: list[Run]) -> tuple[list[str], list[list[str]]]:
    """(header, rows): the union of the runs' columns in first-seen order, "-" where a run lacks one."""
    rows = [run_row(r) for r in runs]
    header = list(dict.fromkeys(col for row in rows for col in row))
    return header, [[row.get(col, "-") for col in header] for row in rows]
