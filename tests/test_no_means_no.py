"""``no`` means "no": a text or enum field keeps the text it was given (``--save_strategy no``), on the command
line and unquoted in a recipe, for every such field of every method; a boolean field reads true/false only."""

import dataclasses
import enum
import typing

import pytest

from alignment.errors import RecipeError
from alignment.recipes import load_recipe, parse_overrides
from alignment.trainers import methods
from tests.conftest import ROOT
from tests.helpers import required_recipe_fields

RECIPE = ROOT / "recipes" / "quickstart" / "dpo.yaml"


def text_fields(config_class) -> list[str]:
    """The fields whose type admits a string or is an enum (str, str | None, IntervalStrategy | str, ...)."""
    hints = typing.get_type_hints(config_class)
    out = []
    for f in dataclasses.fields(config_class):
        kind = hints.get(f.name)
        args = typing.get_args(kind) or (kind,)
        text = any(a is str or (isinstance(a, type) and issubclass(a, enum.Enum)) for a in args)
        if text and not any(a in (bool, dict, list) or typing.get_origin(a) in (dict, list) for a in args):
            out.append(f.name)
    return out


def test_overrides_keep_no_yes_on_off_as_text():
    assert parse_overrides(["--save_strategy", "no", "--hub_strategy=on", "--x", "off", "--y", "yes"]) == {
        "save_strategy": "no", "hub_strategy": "on", "x": "off", "y": "yes"}  # fmt: skip
    assert parse_overrides(["--bf16", "true", "--use_cpu", "False"]) == {"bf16": True, "use_cpu": False}


def test_save_and_eval_strategy_no_from_the_command_line_and_a_recipe(tmp_path):
    _, _, _, config = load_recipe(RECIPE, parse_overrides(["--save_strategy", "no", "--eval_strategy", "no",
                                                           "--output_dir", str(tmp_path)]))  # fmt: skip
    assert config.save_strategy.value == "no" and config.eval_strategy.value == "no"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.read_text().replace('eval_strategy: "no"', "eval_strategy: no") + "save_strategy: no\n")
    _, _, _, config = load_recipe(recipe, {"output_dir": str(tmp_path)})
    assert config.save_strategy.value == "no" and config.eval_strategy.value == "no"


def test_a_boolean_field_reads_true_or_false_only(tmp_path):
    with pytest.raises(RecipeError, match=r"field 'use_cpu' must be true or false, got 'yes'"):
        load_recipe(RECIPE, parse_overrides(["--use_cpu", "yes", "--output_dir", str(tmp_path)]))


@pytest.mark.parametrize("method", sorted(methods()))
def test_every_text_field_of_every_method_keeps_no(tmp_path, method):
    config_class = methods()[method].config
    fields = text_fields(config_class)
    assert "save_strategy" in fields and "output_dir" in fields
    recipe = tmp_path / "minimal.yaml"
    extra = "".join(f"{k}: {v}\n" for k, v in required_recipe_fields(methods()[method]).items())
    recipe.write_text(f"method: {method}\nuse_cpu: true\nmax_steps: 1\n{extra}")
    kept, refused = [], []
    for name in fields:
        argv = [f"--{name}", "no"] + (["--output_dir", str(tmp_path / "out")] if name != "output_dir" else [])
        try:
            _, _, _, config = load_recipe(recipe, parse_overrides(argv))
        except (RecipeError, ValueError) as e:  # "no" is no valid value of the field (a choice, a backend)
            message = str(e).split(": ", 1)[1]
            assert "False" not in message, (name, message)  # refused as the text 'no', never as a boolean
            refused.append(name)
            continue
        value = getattr(config, name)
        assert (value.value if isinstance(value, enum.Enum) else value) == "no", (name, value)
        kept.append(name)
    assert "save_strategy" in kept and len(kept) > len(refused)
