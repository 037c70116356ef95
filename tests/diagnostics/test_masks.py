"""`alignment masks`: the per-token masks of one pair of a SparsePO run, as JSON and a PNG strip."""

import json

import pytest
from PIL import Image

from alignment.cli import main
from alignment.run import train
from tests.conftest import DATA, ROOT

PAIRS = DATA / "tasks" / "sentiment" / "pref_eval_conversational.jsonl"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("sparsepo") / "run"
    overrides = {
        "max_steps": 1, "per_device_train_batch_size": 4, "output_dir": str(out), "eval_task": None, "report": True,
        "diagnostics": False, "dataset_mixture": [f"{PAIRS}:0.02"], "eval_dataset": None,
    }  # fmt: skip
    train(str(ROOT / "recipes" / "quickstart" / "sparsepo.yaml"), overrides)
    return out


def test_masks_of_one_pair(run_dir, tmp_path, capsys):
    out = tmp_path / "m.json"
    assert main(["masks", str(run_dir), str(PAIRS), "--row", "2", "-o", str(out)]) == 0
    assert "chosen" in capsys.readouterr().out
    masks = json.loads(out.read_text())
    row = json.loads(PAIRS.read_text().splitlines()[2])
    words = row["chosen"][0]["content"].split()
    tokens = [t["token"].strip() for t in masks["chosen"]]
    assert tokens[: len(words)] == words  # one token per word, then the end of the turn
    for side in ("chosen", "rejected"):
        for token in masks[side]:
            assert set(token) == {"token", "mask_reward", "mask_kl"}
            assert token["mask_reward"] >= 0 and token["mask_reward"] == token["mask_kl"]  # common mask
    image = Image.open(out.with_suffix(".png"))
    assert image.width > 300 and len(set(image.convert("L").getdata())) > 10


def test_masks_errors(run_dir, tmp_path, capsys):
    assert main(["masks", str(run_dir), str(PAIRS), "--row", "100000"]) == 2
    assert "out of range" in capsys.readouterr().err
    (tmp_path / "alignment_run.json").write_text(json.dumps({"method": "dpo"}))
    assert main(["masks", str(tmp_path), str(PAIRS)]) == 2
    assert "a dpo run has no token masks" in capsys.readouterr().err
    assert main(["masks", str(tmp_path / "nope"), str(PAIRS)]) == 2
    assert "no such run directory" in capsys.readouterr().err


def test_the_report_has_a_mask_panel(run_dir):
    snapshot = json.loads((run_dir / "token_masks.json").read_text())
    assert snapshot["mask_type"] == "learned" and len(snapshot["pairs"]) == 4
    assert all(t["mask_reward"] >= 0 for pair in snapshot["pairs"] for t in pair["chosen"])
    page = (run_dir / "report.html").read_text()
    assert ">SparsePO token masks</h2>" in page
