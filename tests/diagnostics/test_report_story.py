"""The report tells the run's story: where it started, columns that fit the method, zero plots that say so,
INPO's loss explained, titles that fit, and raw HTML from the data shown as text in report.md."""

import json

from alignment.diagnostics import plots
from alignment.diagnostics.report import findings, render_markdown, write_report
from alignment.diagnostics.runs import load_run
from alignment.diagnostics.summary import summary_table


def _run_dir(folder, **record):
    folder.mkdir(parents=True)
    (folder / "alignment_run.json").write_text(json.dumps({"log_history": [], **record}))
    return folder


def _table(folder) -> dict:
    header, rows = summary_table([load_run(folder)])
    return dict(zip(header, rows[0]))


def test_a_training_run_shows_the_start_model_beside_the_trained_one(tmp_path):
    start = {"greedy": {"accuracy": 0.598, "n": 500.0}, "sampled": {"accuracy": 0.512, "n": 500.0}}
    end = {"greedy": {"accuracy": 0.806, "n": 500.0}, "sampled": {"accuracy": 0.546, "n": 500.0}}
    log = [{"step": 10, "loss": 0.4, "rewards/accuracies": 0.9, "rewards/margins": 2.0}]
    folder = _run_dir(tmp_path / "dpo", method="dpo", log_history=log, eval=end, eval_start=start)
    row = _table(folder)
    assert row["accuracy (greedy)"] == "0.598 -> 0.806" and row["accuracy (sampled)"] == "0.512 -> 0.546"
    assert not any("mask" in col or "Hedge" in col for col in row)  # no SparsePO or regret columns for DPO
    assert (
        "from the start model to the trained one on 500 held-out prompts: accuracy (greedy) 0.598 -> 0.806"
        in (findings([load_run(folder)])[0])
    )
    page, _ = write_report([str(folder)])
    assert "start model, greedy" in page.read_text()


def test_columns_fit_the_method(tmp_path):
    sparse_log = [{"step": 5, "loss": 0.2, "sparsepo/mask_sparsity_reward": 0.47, "sparsepo/mask_sparsity_kl": 0.4}]
    sparse = _run_dir(tmp_path / "sp", method="sparsepo", log_history=sparse_log,
                      eval={"greedy": {"mean_score": 2.75, "valid_rate": 1.0, "n": 20.0}})  # fmt: skip
    row = _table(sparse)
    assert row["reward mask at 0"] == "0.47" and row["KL mask at 0"] == "0.4" and row["mean_score (greedy)"] == "2.75"
    assert "reward acc." not in row  # not logged by this run: no column of "-"

    regret = _run_dir(tmp_path / "rg", method="regret", log_history=[{"step": 5, "loss": 6.0}])
    fam = {"family": "gaussian", "horizon": 25, "methods": {name: {"regret": value, "exponent": 0.2} for name, value in
           {"model": 0.6, "hedge_best": 0.4, "ftl": 0.42, "uniform": 2.6}.items()}}  # fmt: skip
    (regret / "regret_eval.json").write_text(json.dumps({"families": [fam]}))
    assert _table(regret)["regret / best Hedge (gaussian)"] == "1.50x"

    selfplay = tmp_path / "inpo"
    selfplay.mkdir()
    rows = [{"iteration": i, "sampled": {"tv_to_uniform": tv, "exploitability": ex, "n": 10.0}}
            for i, (tv, ex) in enumerate([(0.19, 0.16), (0.15, 0.12), (0.16, 0.09)])]  # fmt: skip
    (selfplay / "iterations.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    row = _table(selfplay)
    assert row["tv_to_uniform (sampled)"] == "0.19 -> 0.16" and row["exploitability (sampled)"] == "0.16 -> 0.09"
    assert row["iterations"] == "2"


def test_inpo_rising_loss_is_explained_with_the_runs_numbers(tmp_path):
    log = [{"step": 10, "loss": 22.7, "inpo/h": 0.3}, {"step": 20, "loss": 24.7, "inpo/h": 0.17}]
    folder = _run_dir(tmp_path / "inpo", method="inpo", log_history=log, hyperparameters={"eta": 0.1})
    lines = [line for line in findings([load_run(folder)]) if "(h - 1/(2 eta))^2" in line]
    assert len(lines) == 1 and "target 1/(2 eta) = 5" in lines[0] and "22.7 -> 24.7" in lines[0]
    dpo = _run_dir(tmp_path / "dpo", method="dpo", log_history=log, hyperparameters={"eta": 0.1})
    assert not [line for line in findings([load_run(dpo)]) if "1/(2 eta)" in line]


def test_an_all_zero_panel_says_so_and_a_long_title_wraps(tmp_path):
    folder = _run_dir(tmp_path / "r", method="dpo",
                      log_history=[{"step": s, "diagnostics/softmax_collapse": 0.0} for s in (1, 2, 3)])  # fmt: skip
    plt = plots._plt()
    fig, (ax,) = plots._grid(1, "Self-play: time-averaged play's distance to the Nash equilibrium")
    assert "\n" in fig._suptitle.get_text()  # wrapped to the one panel's width, not clipped
    plots._panel(ax, [load_run(folder)], [("diagnostics/softmax_collapse", "", "-")], "collapse")
    assert any("0 at every logged step" in t.get_text() for t in ax.texts) and ax.get_ylim() == (-1, 1)
    _, (ax2,) = plots._grid(1, "short")
    run = load_run(
        _run_dir(tmp_path / "s", method="dpo", log_history=[{"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.0}])
    )
    plots._panel(ax2, [run], [("loss", "", "-")], "loss")
    assert not ax2.texts  # a panel with a nonzero value is drawn as it is
    plt.close("all")


def test_raw_html_from_the_data_is_text_in_report_md(tmp_path):
    folder = _run_dir(tmp_path / "<img src=x onerror=alert(1)>", method="<b>dpo</b>",
                      log_history=[{"step": 1, "loss": 0.5}])  # fmt: skip
    markdown = render_markdown([load_run(folder)], "report.html")
    assert "<img" not in markdown and "<b>" not in markdown
    assert "&lt;img src=x onerror=alert(1)>" in markdown and "&lt;b>dpo&lt;/b>" in markdown
    page, _ = write_report([str(folder)], tmp_path / "page.html")
    assert "<img src=x" not in page.read_text()  # the page escapes it too (autoescape)
