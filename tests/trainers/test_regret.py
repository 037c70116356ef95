"""RegretLossTrainer (numeric mode): trained by the regret-loss on fresh sequences, it beats uniform on held-out
ones; saved and reloaded it plays the same policies; text mode trains a language model; the recipe runs and
ends with alignment regret-eval and a report; bad settings are refused clearly."""

import json

import pytest
import torch

from alignment.learners.regret_learner import NumericRegretLearner
from alignment.tasks import online_learning as ol
from alignment.trainers import RegretConfig, RegretLossTrainer
from tests.conftest import ROOT
from tests.helpers import FRESH_SEED


def config(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path / "run"), actions=3, horizon=20, max_steps=80, per_device_train_batch_size=32,
                learning_rate=1e-3, lr_scheduler_type="constant", use_cpu=True, report_to=[], logging_steps=20,
                seed=FRESH_SEED % 1000)  # fmt: skip
    return RegretConfig(**{**base, **kw})


def test_trained_learner_beats_uniform_and_reloads(tmp_path):
    trainer = RegretLossTrainer(args=config(tmp_path, families=["gaussian"]))
    trainer.train()
    logged = [e for e in trainer.state.log_history if "regret/mean" in e]
    assert len(logged) == 4 and all(e["regret/max"] >= e["regret/mean"] for e in logged)
    trainer.save_model()
    held = ol.make_losses("gaussian", 128, 20, 3, seed=10_000 + FRESH_SEED % 1000)
    learner = NumericRegretLearner.from_pretrained(tmp_path / "run")
    played = learner.policies(held)
    assert torch.allclose(played, trainer.model.policies(held), atol=1e-6)
    assert ol.regret(played, held).mean() < 0.75 * ol.regret(ol.uniform(held), held).mean()


def test_fresh_sequences_every_step_and_clear_errors(tmp_path):
    trainer = RegretLossTrainer(args=config(tmp_path, max_steps=2))
    a, b = trainer.sequences([0, 1, 2, 3]), trainer.sequences([4, 5, 6, 7])
    assert a.shape == (4, 20, 3) and not torch.equal(a, b)
    assert torch.equal(a[3], ol.make_losses("adversarial", 1, 20, 3, seed=trainer.args.seed * 1_000_003 + 3)[0])
    with pytest.raises(ValueError, match="mode: text trains a language model: pass one"):
        RegretLossTrainer(args=config(tmp_path, mode="text"))
    with pytest.raises(ValueError, match="action_names has 2 names for 3 actions"):
        config(tmp_path, action_names=[" a", " b"])
    with pytest.raises(ValueError, match="set max_steps > 0"):
        config(tmp_path, max_steps=-1)
    with pytest.raises(ValueError, match="families must be among"):
        config(tmp_path, families=["cyclic"])
    with pytest.raises(FileNotFoundError, match=r"no regret_learner\.json"):
        NumericRegretLearner.from_pretrained(tmp_path)


def test_text_mode_trains_saves_and_reloads(tmp_path):
    from alignment import RegretLearner
    from alignment.learners.regret_text import TextRegretLearner

    args = config(tmp_path, mode="text", actions=2, horizon=6, max_steps=3, per_device_train_batch_size=4,
                  logging_steps=1, learning_rate=1e-3)  # fmt: skip
    trainer = RegretLossTrainer(str(ROOT / "data" / "sft_model"), args=args)
    assert "action tokens' log-probabilities" in trainer.kernel_path()
    before = {k: v.clone() for k, v in trainer.model.named_parameters()}
    trainer.train()
    logged = [e for e in trainer.state.log_history if "regret/action_mass" in e]
    assert len(logged) == 3 and all(0 < e["regret/action_mass"] <= 1 for e in logged)
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.named_parameters())
    trainer.save_model()
    learner = RegretLearner.from_pretrained(tmp_path / "run")
    assert isinstance(learner, TextRegretLearner) and learner.text == trainer.text_learner.text
    held = ol.make_losses("gaussian", 5, 6, 2, seed=FRESH_SEED)
    assert torch.allclose(learner.policies(held), trainer.text_learner.policies(held), atol=1e-5)


@pytest.mark.slow
def test_text_mode_learns_to_beat_uniform(tmp_path):
    """The shipped tiny LM, fine-tuned by the regret-loss for 120 steps on Gaussian sequences (d = 2, T = 10),
    plays held-out ones with clearly less regret than uniform and than before training."""
    args = config(tmp_path, mode="text", actions=2, horizon=10, max_steps=120, per_device_train_batch_size=16,
                  learning_rate=3e-4, families=["gaussian"], logging_steps=40)  # fmt: skip
    trainer = RegretLossTrainer(str(ROOT / "data" / "sft_model"), args=args)
    held = ol.make_losses("gaussian", 128, 10, 2, seed=10_000 + FRESH_SEED % 1000)
    before = ol.regret(trainer.text_learner.policies(held), held).mean()
    trainer.train()
    after = ol.regret(trainer.text_learner.policies(held), held).mean()
    uniform = ol.regret(ol.uniform(held), held).mean()
    assert after < 0.75 * uniform and after < 0.8 * before, (before, after, uniform)


def test_recipe_trains_evaluates_and_reports(tmp_path, capsys):
    from alignment.cli import main

    out = tmp_path / "run"
    recipe = ROOT / "recipes" / "quickstart" / "regret.yaml"
    code = main(["train", str(recipe), "--max_steps", "3", "--eval_sequences", "16", "--output_dir", str(out)])
    assert code == 0
    evaluated = json.loads((out / "regret_eval.json").read_text())
    assert [f["family"] for f in evaluated["families"]] == [*ol.FAMILIES, "adaptive"]
    assert evaluated["games"][0]["game"] == "matching_pennies"  # d = 2
    summary = json.loads((out / "alignment_run.json").read_text())
    assert summary["method"] == "regret" and set(summary["eval"]) == {*ol.FAMILIES, "adaptive"}
    meta = json.loads((out / "regret_learner.json").read_text())
    assert meta["mode"] == "numeric" and meta["trained"]["horizon"] == 25
    report = (out / "report.md").read_text()
    assert "regret on held-out sequences" in report and "matching_pennies self-play" in report
    assert 'id="regret"' in (out / "report.html").read_text()


def test_regret_eval_command(tmp_path, capsys):
    """An untrained learner (zero head) plays uniform: its regret equals the uniform baseline's exactly; the
    command prints the table and writes the JSON and the PNGs."""
    from alignment.cli import main

    trainer = RegretLossTrainer(args=config(tmp_path, actions=3, horizon=12, max_steps=1))
    trainer.save_model()
    run = tmp_path / "run"
    assert main(["regret-eval", str(run), "--family", "gaussian", "--family", "adversarial", "--sequences", "32",
                 "--rounds", "20", "--out", str(tmp_path / "eval")]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "| gaussian (T=12) |" in printed and "rock_paper_scissors self-play" in printed
    result = json.loads((tmp_path / "eval" / "regret_eval.json").read_text())
    for fam in result["families"]:
        m = fam["methods"]
        assert m["model"]["regret"] == pytest.approx(m["uniform"]["regret"], abs=1e-5)
        assert len(m["model"]["curve"]) == 12
    adversarial = result["families"][1]["methods"]
    assert (
        adversarial["ftl"]["exponent"] > 0.95
        and adversarial["ftl"]["regret"] > 10 * adversarial["hedge_best"]["regret"]
    )
    for name in ("regret_curves.png", "regret_games.png"):
        assert (tmp_path / "eval" / name).read_bytes()[:4] == b"\x89PNG"
    assert main(["regret-eval", str(tmp_path / "nothing")]) == 2
