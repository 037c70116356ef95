"""Numbers the README, BENCHMARKS.md and docs/ quote from a command equal the results file the command wrote
(experiments/quoted.py; experiments/quickstarts.py reruns the quickstarts and rewrites them)."""

import json
import sys

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "experiments"))

from quoted import check, doc_files, quotes, refresh_docs


def test_every_quoted_number_equals_its_results_file():
    problems = check(ROOT)
    assert not problems, "\n".join(problems)


def test_the_docs_quote_the_quickstarts_results():
    """Not vacuous: the README quotes every quickstart's results through tags."""
    tagged = [q for path in doc_files(ROOT) for q in quotes(path)]
    keys = {q.key.split(".")[0] for q in tagged}
    assert len(tagged) >= 60
    assert {"dpo", "rpo", "cpo", "simpo", "orpo", "kto", "inpo", "inpo_arithmetic", "regret"} <= keys


def _tree(tmp_path, doc: str, results: dict):
    (tmp_path / "docs" / "results").mkdir(parents=True)
    (tmp_path / "docs" / "results" / "quickstarts.json").write_text(json.dumps(results))
    (tmp_path / "README.md").write_text(doc)
    return tmp_path


def test_an_edited_or_stale_number_fails(tmp_path):
    results = {"dpo": {"eval": {"greedy": {"accuracy": 0.806}}, "share": 0.375, "ratio": 1.4213}}
    doc = ("DPO reaches 0.806<!--@ dpo.eval.greedy.accuracy --> (38%<!--@ dpo.share --> fell), "
           "1.42x<!--@ dpo.ratio -->.\n")  # fmt: skip
    root = _tree(tmp_path, doc, results)
    assert check(root) == []
    (root / "README.md").write_text(doc.replace("0.806", "0.816"))
    assert check(root) == [f"{root / 'README.md'}:1: quotes 0.816 but dpo.eval.greedy.accuracy is 0.806"]
    results["dpo"]["ratio"] = 1.27
    (root / "docs/results/quickstarts.json").write_text(json.dumps(results))
    assert any("quotes 1.42x but dpo.ratio is 1.27x" in p for p in check(root))
    assert refresh_docs(root) == {"README.md": 2}  # the script's rewrite puts both back in line
    assert check(root) == [] and "0.806<!--@" in (root / "README.md").read_text()


def test_a_results_region_cannot_hold_an_untagged_number(tmp_path):
    doc = "<!-- results -->\n| a | 0.5<!--@ x.a --> |\n| b | 0.25 |\n<!-- /results -->\nOutside: 0.75.\n"
    root = _tree(tmp_path, doc, {"x": {"a": 0.5}})
    assert check(root) == [f"{root / 'README.md'}:3: 0.25 in a results region has no tag"]


def test_a_missing_key_is_named(tmp_path):
    root = _tree(tmp_path, "x 0.5<!--@ dpo.nothing -->\n", {"dpo": {}})
    (problem,) = check(root)
    assert "dpo.nothing" in problem and "missing at 'nothing'" in problem


def test_ranges_signs_and_table_labels(tmp_path):
    doc = ("<!-- results -->\n| beta 0.1 | 6<!--@ r.lo -->-14<!--@ r.hi --> | "
           "-0.25<!--@ r.neg --> -> +0.5<!--@ r.pos --> |\n<!-- /results -->\n")  # fmt: skip
    root = _tree(tmp_path, doc, {"r": {"lo": 6.2, "hi": 14.4, "neg": -0.25, "pos": 0.5}})
    assert check(root) == []  # "-14" after a tag is a range, a label's "0.1" is a setting, "+0.5" keeps its sign
    (root / "README.md").write_text(doc.replace("+0.5", "0.5"))
    assert check(root) == [] and refresh_docs(root) == {}
    results = {"r": {"lo": 5.0, "hi": 15.0, "neg": -0.3, "pos": 0.5}}
    (root / "docs/results/quickstarts.json").write_text(json.dumps(results))
    assert refresh_docs(root) == {"README.md": 3}
    assert "5<!--@ r.lo -->-15<!--@ r.hi -->" in (root / "README.md").read_text() and check(root) == []
