"""`alignment report`: real (short) quickstart runs rendered to HTML + Markdown, and opened in headless
Chromium (Debian's chromium package; the README's test command installs it)."""

import json
import os
import re
import shutil

import pytest

from alignment.cli import main
from alignment.diagnostics.report import write_report
from alignment.diagnostics.runs import load_run
from alignment.run import train

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Six steps of the DPO and the RPO quickstart (probes every 2 steps), each ending with its report."""
    out = tmp_path_factory.mktemp("runs")
    dirs = []
    for method in ("dpo", "rpo"):
        folder = out / method
        overrides = {"max_steps": 6, "output_dir": str(folder), "eval_task": None, "diagnostics_steps": 2,
                     "diagnostics_probe_pairs": 6, "logging_steps": 2, "precompute_ref_logps": False}  # fmt: skip
        train(f"recipes/quickstart/{method}.yaml", overrides, command=f"test {method}")
        dirs.append(folder)
    return dirs


def test_each_run_ends_with_its_report(runs):
    for folder in runs:
        page, md = folder / "report.html", folder / "report.md"
        assert page.exists() and md.exists()
        run = load_run(folder)
        assert [p["step"] for p in run.probes] == [0, 2, 4, 6]
        assert run.finished and run.method in ("dpo", "rpo")


def test_overlay_page_is_self_contained_and_markdown_has_the_numbers(runs, tmp_path):
    page, md = write_report([str(p) for p in runs], tmp_path / "both.html")
    text = page.read_text()
    images = re.findall(r'<img src="([^"]+)"', text)
    assert len(images) >= 4 and all(src.startswith("data:image/png;base64,") for src in images)
    assert not re.search(r'(src|href)="(https?:)?//', text) and "<script" not in text
    for title in ("Training curves", "Likelihood displacement", "Gradient entanglement", "Softmax collapse"):
        assert f">{title}</h2>" in text
    summary = md.read_text()
    assert "| dpo | dpo | 6 |" in summary and "| rpo | rpo | 6 |" in summary
    run = load_run(runs[0])
    delta = run.probes[-1]["summary"]["chosen_delta"]
    assert f"{abs(delta):.3f} nats" in summary
    assert "holds the chosen log-probability highest" in summary


@pytest.mark.skipif(bool(os.environ.get("ALIGNMENT_NO_BROWSER")), reason="ALIGNMENT_NO_BROWSER is set")
def test_page_renders_in_headless_chromium(runs, tmp_path):
    if CHROMIUM is None:
        pytest.fail("headless Chromium is needed: apt-get install chromium (or set ALIGNMENT_NO_BROWSER=1)")
    from PIL import Image
    from playwright.sync_api import sync_playwright

    page_path, _ = write_report([str(p) for p in runs], tmp_path / "report.html")
    errors, failed = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("requestfailed", lambda r: failed.append(r.url))
        page.goto(page_path.resolve().as_uri(), wait_until="load")
        images = page.evaluate(
            "Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight])"
        )
        shot = tmp_path / "shot.png"
        page.screenshot(path=str(shot), full_page=True)
        title = page.title()
        browser.close()
    assert not errors and not failed, (errors, failed)
    assert len(images) >= 4
    for alt, complete, width, height in images:
        assert complete and width > 300 and height > 200, alt
    assert title.startswith("Training report: dpo, rpo")
    pixels = Image.open(shot).convert("L")
    histogram = pixels.histogram()
    non_white = 1 - histogram[255] / sum(histogram)
    assert pixels.size[1] > 1000 and non_white > 0.05  # not blank: text and plots cover the page


def test_report_errors_name_the_file_and_line(runs, tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "no such run directory" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", str(empty)]) == 2
    assert "not a run directory" in capsys.readouterr().err
    broken = tmp_path / "broken"
    shutil.copytree(runs[0], broken)
    lines = (broken / "diagnostics.jsonl").read_text().splitlines()
    (broken / "diagnostics.jsonl").write_text("\n".join([*lines, '{"kind": "probe", "st']) + "\n")
    assert len(load_run(broken).probes) == len(lines)  # a truncated last line (a killed run) is skipped
    (broken / "diagnostics.jsonl").write_text("\n".join([lines[0], "{oops", lines[1]]) + "\n")
    assert main(["report", str(broken)]) == 2
    assert "diagnostics.jsonl: line 2 is not valid JSON" in capsys.readouterr().err
    summary = json.loads((runs[0] / "alignment_run.json").read_text())
    assert summary["log_history"]


def test_several_runs_are_written_into_the_first_run_dir(tmp_path, monkeypatch):
    """As the command's help says: the first RUN_DIR/report.html, never the current folder."""
    import json as _json

    from alignment.diagnostics.report import write_report

    runs = []
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "alignment_run.json").write_text(
            _json.dumps({"method": "dpo", "log_history": [{"step": 1, "loss": 0.5}]})
        )
        runs.append(str(folder))
    monkeypatch.chdir(tmp_path)
    page, markdown = write_report(runs)
    assert page == tmp_path / "a" / "report.html" and markdown.exists() and not (tmp_path / "report.html").exists()
