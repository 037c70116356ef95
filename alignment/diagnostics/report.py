"""``alignment report RUN_DIR [RUN_DIR ...] [-o report.html]``: one self-contained HTML page and a Markdown
summary of one or more training runs (README, "Diagnostics and reports").

The page holds the figures as embedded PNGs (data: URIs), no script and no external resource, so it opens
anywhere with no network. Runs overlay in every figure. The Markdown file (same name, ``.md``) holds the
findings and the tables, for pull requests and model cards.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import math
from pathlib import Path

import jinja2

from alignment.diagnostics.plots import FIGURES
from alignment.diagnostics.regret_plots import REGRET_FIGURES
from alignment.diagnostics.runs import Run, load_runs
from alignment.diagnostics.summary import _fmt, start_and_end, summary_table
from alignment.io import atomic_write_text
from alignment.regret_eval import table as regret_table
from alignment.secrets import redact_text
from alignment.text import md_text

TEMPLATE = Path(__file__).with_name("report.html.j2")


def _last(run: Run, key: str, probes: bool = False):
    _, values = run.probe_series(key) if probes else run.series(key)
    return values[-1] if values else None


def run_facts(run: Run) -> dict:
    """The numbers a reader wants first, per run (None where the run has no such data)."""
    final = {k: _last(run, k) for k in ("loss", "rewards/accuracies", "rewards/margins")}
    probe = {
        k: _last(run, k, probes=True)
        for k in ("chosen_delta", "rejected_delta", "chosen_fell_share", "entangled_share", "cosine_mean")
    }
    _, collapse_values = run.series("diagnostics/softmax_collapse")
    greedy = run.evaluation.get("greedy", {}).get("accuracy")
    sampled = run.evaluation.get("sampled", {}).get("accuracy")
    steps = max((e.get("step", 0) for e in run.log_history), default=0)
    return {
        "name": run.name, "method": run.method, "steps": steps, **final, **probe,
        "max_collapse": max(collapse_values) if collapse_values else None,
        "lse_squared": _last(run, "z_loss/lse_squared"), "diverged": diverged(run),
        "greedy": greedy, "sampled": sampled, "probe_pairs": len(run.probes[0]["pairs"]["logp_w"]) if run.probes else 0,
    }  # fmt: skip


def self_play_findings(run: Run) -> list[str]:
    """How the headline task metrics moved from the starting model to the last iteration."""
    from alignment.diagnostics.plots import iteration_metrics

    if len(run.iterations) < 2:
        return []
    first, last = run.iterations[0], run.iterations[-1]
    moves = []
    for key in iteration_metrics([run])[:2]:
        for mode in ("sampled", "greedy"):
            if key in first.get(mode, {}) and key in last.get(mode, {}):
                trail = " -> ".join(f"{r[mode][key]:.3f}" for r in run.iterations if key in r.get(mode, {}))
                moves.append(f"{key} ({mode}) {trail}")
    return [f"{run.name} ({run.method}, self-play, {last['iteration']} iterations): " + "; ".join(moves) + "."]


def task_findings(run: Run) -> list[str]:
    """A training run's task metrics from the start model to the trained one (alignment train's eval_start)."""
    from alignment.diagnostics.summary import headline_keys

    start, end = start_and_end(run)
    if run.iterations or not start:
        return []
    moves = [f"{key} ({mode}) {start[mode][key]:.3f} -> {end[mode][key]:.3f}"
             for mode in ("greedy", "sampled") if mode in start and mode in end
             for key in headline_keys(end[mode]) if key in start[mode]]  # fmt: skip
    n = int(end.get("greedy", end.get("sampled", {})).get("n", 0))
    where = f" on {n} held-out prompts" if n else ""
    return [f"{run.name} ({run.method}): from the start model to the trained one{where}: " + "; ".join(moves) + "."]


def inpo_findings(run: Run) -> list[str]:
    """INPO's training loss is a squared distance to a target, not a quantity that falls to 0: say so with the
    run's own numbers, so a rising curve is not read as a failing run."""
    eta = run.config.get("eta")
    _, losses = run.series("loss")
    _, hs = run.series("inpo/h")
    if run.method != "inpo" or not isinstance(eta, (int, float)) or eta <= 0 or not losses or not hs:
        return []
    target = 1 / (2 * eta)
    return [f"{run.name} (inpo): the training loss is (h - 1/(2 eta))^2, the squared distance of each pair's "
            f"log-ratio h to the target 1/(2 eta) = {target:.3g}; it starts near {target:.3g}^2 = {target**2:.3g} "
            f"and does not fall to 0 as DPO's does. Here it went {losses[0]:.3g} -> {losses[-1]:.3g} while the "
            f"logged mean h went {hs[0]:.3g} -> {hs[-1]:.3g}: each iteration draws new pairs from the new policy "
            "and anchors on it, so a loss that rises across iterations is not a failing run; the task metrics "
            "above are the measure."]  # fmt: skip


def regret_findings(run: Run) -> list[str]:
    """Regret-loss: per family, the model's regret at T against the best baseline and its growth exponent."""
    lines = []
    for fam in run.regret_eval.get("families", []):
        m = fam["methods"]
        best = min((k for k in m if k != "model"), key=lambda k: m[k]["regret"])
        lines.append(f"{run.name} on held-out {fam['family']} sequences (T={fam['horizon']}): regret "
                     f"{m['model']['regret']:.3f} (growth exponent {m['model']['exponent']:.2f}); best baseline "
                     f"{best} {m[best]['regret']:.3f}, FTL {m['ftl']['regret']:.3f}, "
                     f"uniform {m['uniform']['regret']:.3f}.")  # fmt: skip
    for game in run.regret_eval.get("games", []):
        p = game["players"]["model"]
        lines.append(f"{run.name} in {game['game']} self-play: after {game['rounds']} rounds the time-averaged play "
                     f"is {p['final_distance']:.3f} from Nash (TV).")  # fmt: skip
    return lines


def iteration_table(run: Run) -> list[str]:
    """Markdown rows: the task's metrics per iteration, the pairs and the seconds per stage."""
    from alignment.diagnostics.plots import iteration_metrics

    keys = iteration_metrics([run])[:4]
    header = ["iteration"] + [f"{k} ({m})" for k in keys for m in ("sampled", "greedy")] + ["pairs", "seconds"]
    out = [
        f"### {md_text(run.name)}: self-play iterations",
        "",
        "| " + " | ".join(header) + " |",
        "|" + " --- |" * len(header),
    ]
    for r in run.iterations:
        cells = [str(r["iteration"])] + [_fmt(r.get(m, {}).get(k)) for k in keys for m in ("sampled", "greedy")]
        seconds = ", ".join(f"{k} {v:.0f}" for k, v in r.get("seconds", {}).items())
        out.append("| " + " | ".join([*cells, _fmt(r.get("pairs")), seconds or "-"]) + " |")
    return [*out, ""]


#: the per-run findings, in the order the report lists them
RUN_FINDINGS = [task_findings, self_play_findings, inpo_findings, regret_findings]


def diverged(run: Run) -> tuple[float, int] | None:
    """(loss, step) of the first logged step whose loss is not a finite number (a run from before the
    non-finite guard, or a log written elsewhere), else None."""
    for entry in run.log_history:
        value = entry.get("loss")
        if isinstance(value, (int, float)) and not math.isfinite(value):
            return value, entry.get("step", "?")
    return None


def findings(runs: list[Run]) -> list[str]:
    """Plain-language findings: self-play progress, displacement, entanglement, collapse per run, then a
    comparison."""
    lines = [line for run in runs for per_run in RUN_FINDINGS for line in per_run(run)]
    facts = [run_facts(r) for r in runs]
    for f in facts:
        if f.get("diverged"):
            loss, step = f["diverged"]
            lines.append(f"{f['name']} ({f['method']}): the training loss is {loss} from step {step}: the run "
                         "diverged, and the metrics after that step mean nothing.")  # fmt: skip
        if f["chosen_delta"] is not None and not math.isfinite(f["chosen_delta"]):
            lines.append(
                f"{f['name']} ({f['method']}): the probe pairs' chosen log-probability is {f['chosen_delta']} at the "
                "last probe: the run diverged (non-finite weights), so its probe diagnostics mean nothing."
            )
        elif f["chosen_delta"] is not None:
            direction = "fell" if f["chosen_delta"] < 0 else "rose"
            lines.append(
                f"{f['name']} ({f['method']}): on {f['probe_pairs']} probe pairs the chosen log-probability "
                f"{direction} by {abs(f['chosen_delta']):.3f} nats on average (it fell for "
                f"{f['chosen_fell_share']:.0%} of the pairs), the rejected one changed by {f['rejected_delta']:+.3f}; "
                f"{f['entangled_share']:.0%} of the pairs are entangled (rho > 1) at the last probe, "
                f"mean cos(g_w, g_l) = {f['cosine_mean']:.2f}."
            )
        if f["max_collapse"]:
            lines.append(
                f"{f['name']}: up to {f['max_collapse']:.2%} of the scored tokens had a collapsed softmax (the "
                "largest logit so far above the others that float32 rounds its probability to 1: those tokens "
                "give no gradient). A z-loss (z_loss: 1e-4) keeps the logits' normalizer near 0 and out of "
                "that regime"
                + (f"; here z_loss was on (mean lse^2 {f['lse_squared']:.3g})." if f["lse_squared"] else ".")
            )
        elif f["max_collapse"] == 0:
            lines.append(f"{f['name']}: no softmax collapse (no scored token's softmax saturated in float32).")
    ranked = sorted(
        (f for f in facts if f["chosen_delta"] is not None and math.isfinite(f["chosen_delta"])),
        key=lambda f: f["chosen_delta"],
    )
    if len(ranked) > 1:
        low, high = ranked[0], ranked[-1]
        lines.append(
            f"{high['name']} holds the chosen log-probability highest ({high['chosen_delta']:+.3f}), "
            f"{low['name']} lowest ({low['chosen_delta']:+.3f})."
        )
    return lines


def render_markdown(runs: list[Run], html_name: str) -> str:
    """The findings and tables as Markdown; text from the runs (names, data) is escaped, so raw HTML in it
    shows as text (as in report.html)."""
    header, rows = summary_table(runs)
    out = [f"# Training report: {md_text(', '.join(r.name for r in runs))}", ""]
    out += [f"- {md_text(line)}" for line in findings(runs)] + [""]
    out += ["| " + " | ".join(md_text(h) for h in header) + " |", "|" + " --- |" * len(header)]
    out += ["| " + " | ".join(md_text(cell) for cell in row) + " |" for row in rows] + [""]
    out += [line for run in runs if run.iterations for line in iteration_table(run)]
    for run in (r for r in runs if r.regret_eval):
        out += [f"### {md_text(run.name)}: regret on held-out sequences", "", *regret_table(run.regret_eval), ""]
    out += [f"Figures and each run's configuration: {md_text(html_name)}", ""]
    return "\n".join(out)


def _run_view(run: Run) -> dict:
    keys = ("name", "active", "config", "evaluation", "finished")
    start = start_and_end(run)[0] if run.evaluation else {}
    return {"path": str(run.path), "start": start, **{k: getattr(run, k) for k in keys}}


def render_html(runs: list[Run]) -> str:
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    template = env.from_string(TEMPLATE.read_text())
    figures = []
    for key, title, make in REGRET_FIGURES + FIGURES:
        png = make(runs)
        if png is not None:
            src = "data:image/png;base64," + base64.b64encode(png).decode()
            figures.append({"key": key, "title": title, "src": src})
    header, rows = summary_table(runs)
    return template.render(
        title="Training report: " + ", ".join(r.name for r in runs),
        generated=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        findings=findings(runs),
        header=header,
        rows=rows,
        figures=figures,
        runs=[_run_view(r) for r in runs],
        escape=html.escape,
    )


def write_report(run_dirs: list[str], output: str | Path | None = None) -> tuple[Path, Path]:
    """Render the runs into ``output`` (default: the first RUN_DIR's report.html, also for several runs; a
    folder: report.html inside it) and the Markdown twin next to it; written atomically. Returns (html path,
    markdown path)."""
    runs = load_runs(run_dirs)
    if output is None:
        output = Path(run_dirs[0]) / "report.html"
    output = Path(output)
    if output.is_dir():  # -o FOLDER: the page goes inside it
        output = output / "report.html"
    markdown = output.with_suffix(".md")
    atomic_write_text(output, redact_text(render_html(runs)))  # a run record from elsewhere may hold a secret
    atomic_write_text(markdown, redact_text(render_markdown(runs, output.name)))
    return output, markdown
