"""With precompute_ref_logps and no ref_model, the frozen copy of the policy is released when training starts
(it held a whole second model for the run: 16 GB on an 8B model in bf16); a dataset that needs the reference
after that is a clear error naming the fix, as in TRL; before training it is still computed; a ref_model passed
in stays."""

import gc
import weakref

import pytest

from alignment.trainers import DPOConfig, DPOTrainer
from tests.conftest import DATA
from tests.helpers import preference_rows, train_args


def _trainer(tmp_path, **kw):
    args = train_args(DPOConfig, tmp_path, diagnostics=False, precompute_ref_logps=True, max_length=48)
    return DPOTrainer(str(DATA / "sft_model"), args=args, train_dataset=preference_rows(DATA, n=8), **kw)


def test_the_frozen_copy_is_released_after_the_precompute(tmp_path, monkeypatch):
    import alignment.trainers.anchors.kinds as anchors

    made = []
    original = anchors.frozen_copy
    monkeypatch.setattr(anchors, "frozen_copy", lambda model: made.append(original(model)) or made[-1])
    trainer = _trainer(tmp_path, eval_dataset={"a": preference_rows(DATA, n=4), "b": preference_rows(DATA, n=4)})
    copy = weakref.ref(made.pop())
    assert all("ref_chosen_logps" in d.column_names for d in trainer.eval_dataset.values())
    assert "eval_loss" in trainer.evaluate(preference_rows(DATA, n=4, split="eval"))  # before training: computed
    trainer.train()  # from the precomputed columns alone
    gc.collect()
    assert copy() is None and trainer.ref_model is None and trainer.anchors["ref"].freed
    assert {"eval_a_loss", "eval_b_loss"} <= set(trainer.evaluate())
    trl_words = r"Cannot compute reference log-probs for a dataset passed to `evaluate\(\)`"  # trl's tests match it
    with pytest.raises(
        ValueError, match=trl_words + r".*frozen copy was released after they were precomputed .* eval_"
    ):
        trainer.evaluate(preference_rows(DATA, n=4, split="eval"))


def test_a_ref_model_passed_in_is_kept(tmp_path):
    from alignment.models import load_model

    reference = load_model(str(DATA / "sft_model"))
    trainer = _trainer(tmp_path, ref_model=reference)
    assert trainer.ref_model is not None and not trainer.anchors["ref"].freed
    assert "eval_loss" in trainer.evaluate(preference_rows(DATA, n=4, split="eval"))
