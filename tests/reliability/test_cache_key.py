"""The anchors' logps cache is keyed by everything that changes its values: a field the anchors' pass reads
(tokenization, collation, packing, the op) must be in the key (VALUE_FIELDS) or declared neutral; a rerun with
another normalizer computes its own values (it reused the softmax ones: a first loss of 13.73 instead of ln 2)."""

import math
from dataclasses import fields

import pytest

from alignment.trainers import DPOConfig, DPOTrainer, INPOConfig, INPOTrainer, RPOConfig, RPOTrainer
from alignment.trainers import packing as packing_lib
from alignment.trainers.anchors import NEUTRAL_FIELDS, VALUE_FIELDS, cache_key, precompute
from tests.conftest import DATA
from tests.helpers import preference_rows, train_args

TRAINERS = {"dpo": (DPOTrainer, DPOConfig), "rpo": (RPOTrainer, RPOConfig), "inpo": (INPOTrainer, INPOConfig)}


def _trainer(tmp_path, method="dpo", **kw):
    trainer_cls, config_cls = TRAINERS[method]
    args = train_args(config_cls, tmp_path, diagnostics=False, max_length=48, **kw)
    return trainer_cls(str(DATA / "sft_model"), args=args, train_dataset=preference_rows(DATA, n=8))


@pytest.mark.parametrize("method", sorted(TRAINERS))
@pytest.mark.parametrize("padding_free", [False, True])
def test_every_field_the_anchor_pass_reads_is_in_the_key_or_declared_neutral(tmp_path, method, padding_free):
    trainer = _trainer(tmp_path, method, precompute_ref_logps=False, padding_free=padding_free)
    reads: set[str] = set()
    plain = type(trainer.args)

    class Recording(plain):
        def __getattribute__(self, name):
            reads.add(name)
            return super().__getattribute__(name)

    trainer.args.__class__ = Recording
    try:  # tokenization, collation, packing and the anchors' passes through the op, as precompute runs them
        trainer.make_dataset(preference_rows(DATA, n=4), trainer.processing_class, trainer.args, "eval")
        trainer.data_collator = trainer.make_collator(trainer.processing_class, trainer.args)
        packing_lib.configure(trainer)
        for anchor in trainer.anchors.values():
            precompute(trainer, anchor, trainer.train_dataset, "train", tokens=True)
    finally:
        trainer.args.__class__ = plain
    read_fields = reads & {f.name for f in fields(plain)}
    assert {"max_length", "normalizer"} <= read_fields  # the recording sees the reads
    assert sorted(read_fields - set(VALUE_FIELDS) - set(NEUTRAL_FIELDS)) == []


def _other(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    return "stablemax" if value == "softmax" else f"{value}-changed"


def test_every_value_field_changes_the_key(tmp_path):
    trainer = _trainer(tmp_path)
    anchor, dataset = trainer.anchors["ref"], trainer.train_dataset
    base = cache_key(trainer, anchor, dataset, tokens=False)
    assert cache_key(trainer, anchor, dataset, tokens=True) != base
    for name in VALUE_FIELDS:
        old = getattr(trainer.args, name)
        object.__setattr__(trainer.args, name, _other(old))
        assert cache_key(trainer, anchor, dataset, tokens=False) != base, name
        object.__setattr__(trainer.args, name, old)
    assert cache_key(trainer, anchor, dataset, tokens=False) == base


def test_a_rerun_with_another_normalizer_does_not_reuse_the_softmax_cache(tmp_path):
    first_losses = {}
    for normalizer in ("softmax", "stablemax"):
        trainer = _trainer(tmp_path, precompute_ref_logps=True, normalizer=normalizer, max_steps=1, learning_rate=0.0)
        trainer.train()
        first_losses[normalizer] = trainer.state.log_history[0]["loss"]
    assert len(list((tmp_path / "out" / "_ref_logps_cache").glob("train-ref-*.pt"))) == 2
    for normalizer, loss in first_losses.items():  # policy == reference at step 0: every margin is 0
        assert loss == pytest.approx(math.log(2), abs=1e-4), normalizer
