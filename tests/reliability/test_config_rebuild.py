"""A config rebuilt from another (dataclasses.replace, as the self-play loop does per iteration) keeps every
value: __post_init__ must be idempotent. (It was not: save_strategy "no" became "steps" on the rebuild.)"""

import dataclasses

import pytest

from alignment.trainers.registry import methods

VARIANTS = [
    {},
    {"save_strategy": "no"},
    {"save_steps": 7},
    {"save_strategy": "steps"},
    {"save_strategy": "epoch"},
    {"pad_to_multiple_of": "auto"},
    {"model_init_kwargs": '{"attn_implementation": "eager"}'},
    {"eval_strategy": "steps", "eval_steps": 5, "logging_steps": 0.5},
]


def _config(method, **kwargs):
    base = {"output_dir": "outputs/rebuild", "use_cpu": True, "max_steps": 3}
    return methods()[method].config(**{**base, **kwargs})


def _differences(a, b) -> list[str]:
    return [f.name for f in dataclasses.fields(a) if getattr(a, f.name) != getattr(b, f.name)]


@pytest.mark.parametrize("method", sorted(methods()))
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: ",".join(v) or "defaults")
def test_replaced_config_equals_the_original_field_by_field(method, variant):
    config = _config(method, **variant)
    assert _differences(config, dataclasses.replace(config)) == []
    moved = dataclasses.replace(config, output_dir="outputs/elsewhere", seed=config.seed + 1)
    assert _differences(config, moved) == ["output_dir", "seed"]


def test_save_strategy_no_survives_a_rebuild():
    config = _config("inpo", save_strategy="no")
    assert str(dataclasses.replace(config).save_strategy.value) == "no"
    assert dataclasses.replace(config).save_steps is None
    assert str(_config("dpo", save_steps=7).save_strategy.value) == "steps"  # --save_steps N alone still saves
