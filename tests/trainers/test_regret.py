"""RegretLossTrainer (numeric mode): trained by the regret-loss on fresh sequences, it beats uniform on held-out
ones; saved and reloaded it plays the same policies; text mode and bad settings are refused clearly."""

import pytest
import torch

from alignment.modules.regret_learner import NumericRegretLearner
from alignment.tasks import online_learning as ol
from alignment.trainers import RegretConfig, RegretLossTrainer
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
    with pytest.raises(NotImplementedError, match="mode: text is not built yet"):
        RegretLossTrainer(args=config(tmp_path, mode="text"))
    with pytest.raises(ValueError, match="set max_steps > 0"):
        config(tmp_path, max_steps=-1)
    with pytest.raises(ValueError, match="families must be among"):
        config(tmp_path, families=["cyclic"])
    with pytest.raises(FileNotFoundError, match=r"no regret_learner\.json"):
        NumericRegretLearner.from_pretrained(tmp_path)


def test_a_recipe_is_refused_in_one_line(tmp_path, capsys):
    from alignment.cli import main

    recipe = tmp_path / "regret.yaml"
    recipe.write_text("method: regret\nmax_steps: 2\nuse_cpu: true\n")
    assert main(["train", str(recipe)]) == 2
    assert "method 'regret' has no recipe runner yet" in capsys.readouterr().err
