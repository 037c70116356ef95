"""Read a run directory for ``alignment report``: the training log, the diagnostics probes and the config.

A run directory is an ``output_dir`` of ``alignment train`` (or of a trainer): ``alignment_run.json`` (written
at the end: config, log history, task evaluation of the
start model and of the trained one), else the newest ``trainer_state.json`` (a run still going
or stopped: the output_dir's own or its newest checkpoint's), and ``diagnostics.jsonl`` (one line per probe).
A self-play loop's output_dir has ``iterations.jsonl`` (one line per iteration: the policy's task metrics).
A truncated last line of diagnostics.jsonl or iterations.jsonl (a run killed mid-write) is skipped with a
warning.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from alignment.data.errors import DataError

logger = logging.getLogger("alignment")


class RunDirError(DataError):
    """A report input that is not a readable run directory."""


@dataclass
class Run:
    name: str
    path: Path
    method: str = "?"
    log_history: list[dict] = field(default_factory=list)
    probes: list[dict] = field(default_factory=list)
    first_order: list[dict] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    active: dict = field(default_factory=dict)
    evaluation: dict = field(default_factory=dict)
    eval_start: dict = field(default_factory=dict)  # the start model's task evaluation (alignment train eval_start)
    finished: bool = False
    token_masks: dict = field(default_factory=dict)  # SparsePO: the masks of the first probe pairs at the end
    iterations: list[dict] = field(default_factory=list)  # self-play: one row per iteration (0 = the start)
    regret_eval: dict = field(default_factory=dict)  # regret-loss: alignment regret-eval's regret_eval.json

    def series(self, key: str, prefix: str = "") -> tuple[list[float], list[float]]:
        """(steps, values) of a logged metric (``prefix`` "eval_" for evaluation logs)."""
        steps, values = [], []
        for entry in self.log_history:
            value = entry.get(prefix + key)
            if isinstance(value, (int, float)) and "step" in entry:
                steps.append(entry["step"])
                values.append(float(value))
        return steps, values

    def probe_series(self, key: str) -> tuple[list[float], list[float]]:
        pairs = [(p["step"], p["summary"][key]) for p in self.probes if key in p["summary"]]
        return [s for s, _ in pairs], [float(v) for _, v in pairs]

    def has(self, key: str) -> bool:
        return bool(self.series(key)[0])


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise RunDirError(f"{path}: not valid JSON (line {err.lineno}, column {err.colno}): {err.msg}") from None


def _read_lines(path: Path) -> list[tuple[int, object]]:
    """(line number, JSON value) per non-empty line; a truncated last line is skipped with a warning."""
    records = []
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                logger.warning("%s: line %d is truncated (the run stopped mid-write); skipped", path, number)
                continue
            raise RunDirError(f"{path}: line {number} is not valid JSON") from None
        records.append((number, record))
    return records


def _read_probes(path: Path) -> list[dict]:
    records = []
    for number, record in _read_lines(path):
        if not isinstance(record, dict) or "step" not in record or "summary" not in record:
            raise RunDirError(f"{path}: line {number} is not a diagnostics record (needs 'step' and 'summary')")
        records.append(record)
    return records


def _read_iterations(path: Path) -> list[dict]:
    rows = []
    for number, row in _read_lines(path):
        if not isinstance(row, dict) or not isinstance(row.get("iteration"), int):
            raise RunDirError(f"{path}: line {number} is not a self-play iteration (needs an integer 'iteration')")
        rows.append(row)
    return sorted(rows, key=lambda r: r["iteration"])


def _newest_state(path: Path) -> Path | None:
    own = path / "trainer_state.json"
    if own.exists():
        return own
    checkpoints = sorted(path.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[-1]))
    return checkpoints[-1] if checkpoints else None


def load_run(path: str | Path, name: str | None = None) -> Run:
    path = Path(path)
    if not path.is_dir():
        raise RunDirError(f"{path}: no such run directory")
    run = Run(name=name or path.name, path=path)
    summary_file, state_file = path / "alignment_run.json", _newest_state(path)
    diagnostics_file = path / "diagnostics.jsonl"
    if summary_file.exists():
        summary = _read_json(summary_file)
        run.method = summary.get("method", "?")
        run.log_history = summary.get("log_history", [])
        run.config = summary.get("hyperparameters", {})
        run.active = summary.get("active", {})
        run.evaluation = summary.get("eval", {})
        run.eval_start = summary.get("eval_start", {})
        run.finished = True
        for key in ("recipe", "command", "base_model", "datasets"):
            if summary.get(key):
                run.config = {key: summary[key], **run.config}
    elif state_file is not None:
        run.log_history = _read_json(state_file).get("log_history", [])
    if diagnostics_file.exists():
        records = _read_probes(diagnostics_file)
        run.probes = [r for r in records if r.get("kind", "probe") == "probe"]
        run.first_order = [r for r in records if r.get("kind") == "first_order"]
    if (path / "token_masks.json").exists():
        run.token_masks = _read_json(path / "token_masks.json")
    iterations_file = path / "iterations.jsonl"
    if iterations_file.exists():
        run.iterations = _read_iterations(iterations_file)
    if (path / "regret_eval.json").exists():
        run.regret_eval = _read_json(path / "regret_eval.json")
    if not (summary_file.exists() or state_file is not None or diagnostics_file.exists() or run.iterations):
        raise RunDirError(
            f"{path}: not a run directory (no alignment_run.json, trainer_state.json, diagnostics.jsonl or "
            "iterations.jsonl in it)"
        )
    return run


def load_runs(paths: list[str]) -> list[Run]:
    """Load several runs; names are the folder names, made unique with their parents where they clash."""
    runs = [load_run(p) for p in paths]
    names = [r.name for r in runs]
    for run in runs:
        if names.count(run.name) > 1:
            run.name = f"{run.path.parent.name}/{run.path.name}"
    return runs
