"""Recipes: flat YAML files naming a method and its fields, parsed into (ScriptArguments, ModelArguments,
<Method>Config). Unknown fields and bad values fail with one line naming the file and the field.

    method: dpo
    model_name_or_path: data/sft_model
    dataset_mixture: [data/tasks/arithmetic/pref_train_conversational.jsonl]
    beta: 0.1
    learning_rate: 5.0e-6
    output_dir: outputs/dpo

Command-line overrides (``alignment train RECIPE.yaml --beta 0.2 --max_steps 10``) replace recipe values;
they are parsed as YAML scalars. A recipe may set ``init_from_config`` (a JSON model config) instead of a
model to train from scratch (the quickstart SFT model).
"""

from __future__ import annotations

import difflib
import os
from dataclasses import fields
from pathlib import Path

from transformers import HfArgumentParser

from alignment.configs import ModelArguments, ScriptArguments
from alignment.errors import RecipeError
from alignment.yaml_io import load_yaml

__all__ = ["RecipeError", "load_recipe", "parse_overrides"]


def _fields(*classes) -> set[str]:
    return {f.name for cls in classes for f in fields(cls) if f.init}


def parse_overrides(argv: list[str]) -> dict:
    out, i = {}, 0
    while i < len(argv):
        key = argv[i]
        if not key.startswith("--"):
            raise RecipeError(f"expected --field value, got {key!r}")
        key = key[2:].replace("-", "_")
        if "=" in key:
            key, value = key.split("=", 1)
            i += 1
        elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            value, i = argv[i + 1], i + 2
        else:
            value, i = "true", i + 1
        out[key] = load_yaml(value, f"--{key}", text_on_syntax_error=True)
    return out


def _coerce(path, key: str, value, type_name: str):
    """YAML reads 1e-3 as a string (it wants 1.0e-3): convert strings for numeric fields."""
    if not isinstance(value, str):
        return value
    name = type_name.replace("<class '", "").replace("'>", "").replace("typing.", "")
    for kind, cast in (("float", float), ("int", int)):
        if name.startswith(kind):
            try:
                return cast(value)
            except ValueError:
                raise RecipeError(f"{path}: field '{key}' must be a number, got {value!r}") from None
    return value


def _field_types(*classes) -> dict[str, str]:
    """Each field's declared type as text, from the class annotations: HfArgumentParser rewrites
    ``field.type`` in place (``str | None`` becomes ``str``), so ``fields()`` is not reliable once a recipe
    has been parsed in this process."""
    import typing

    out = {}
    for cls in classes:
        try:
            hints = typing.get_type_hints(cls)
        except Exception:  # an annotation that does not resolve here: fall back to the field's
            hints = {}
        out.update({f.name: str(hints.get(f.name, f.type)) for f in fields(cls)})
    return out


def _members(type_name: str) -> list[str]:
    """The members of a union type's text at its top level (``dict[str, Any] | str | None`` -> three)."""
    name = type_name.replace("<class '", "").replace("'>", "").replace("typing.", "").replace("NoneType", "None")
    if name.startswith(("Union[", "Optional[")) and name.endswith("]"):
        inner, optional = name[name.index("[") + 1 : -1], name.startswith("Optional[")
        return _split_top(inner) + (["None"] if optional else [])
    return _split_top(name, "|")


def _split_top(text: str, separator: str = ",") -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char == "["
        depth -= char == "]"
        if char == separator and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    return [p for p in [*parts, current.strip()] if p]


def _kinds(type_name: str) -> set[str]:
    """The plain kinds a field's type admits: bool, int, float, str, list, dict, none; ``class`` for a type given from
    Python only (an accelerate ParallelismConfig); an empty set for the others (an enum with text, a Literal,
    Any: left to the parser)."""
    kinds = set()
    for member in _members(type_name):
        base = member.split("[")[0].strip()
        if base in ("bool", "int", "float", "str", "list", "dict"):
            kinds.add(base)
        elif base == "None":
            kinds.add("none")
        elif "." in base and not base.startswith(("transformers.trainer_utils", "transformers.training_args")):
            kinds.add("class")
        else:
            return set()  # an enum, a Literal, Any: leave it to the parser
    return kinds


#: text fields that name a file (a JSON config), checked to exist
FILE_FIELDS = {"deepspeed", "fsdp_config", "accelerator_config"}


def _check_type(path, key: str, value, type_name: str):
    """The value for its field, or one line when it does not fit the field's type (``--beta`` with no value is
    true, not a number; ``--max_steps 2.5`` is no integer; a string is no list). A number or true/false for a
    text field becomes its text (``--hub_model_id 2024``, ``--resume_from_checkpoint true``)."""
    kinds = _kinds(type_name)
    if not kinds or (value is None and "none" in kinds):
        return value
    if "class" in kinds:
        raise RecipeError(f"{path}: field '{key}' is set from Python (a {type_name.split('.')[-1].split()[0]}), not "
                          "in a recipe")  # fmt: skip
    if {"dict", "str"} <= kinds and isinstance(value, str):  # a mapping given as text: JSON, or a file
        return _mapping_text(path, key, value)
    if kinds <= {"str", "none"} and isinstance(value, bool):
        return str(value).lower()  # --resume_from_checkpoint true
    if kinds <= {"str", "none"} and isinstance(value, (int, float)):
        return str(value)
    numbers = type_name.replace("typing.", "").startswith(("list[float]", "list[int]"))
    if numbers and isinstance(value, (int, float)) and not isinstance(value, bool):
        return [value]  # one value for a list of numbers (online DPO's beta: one per epoch, or one for all)
    fits = {
        "bool": isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "str": isinstance(value, str),
        "list": isinstance(value, list),
        "dict": isinstance(value, dict),
    }
    if any(fits[k] for k in kinds if k in fits):
        return value
    want = {"bool": "true or false", "int": "an integer", "float": "a number", "str": "a string",
            "list": "a list, e.g. [a, b]", "dict": "a mapping"}  # fmt: skip
    wanted = " or ".join(want[k] for k in ("bool", "int", "float", "str", "list", "dict") if k in kinds)
    raise RecipeError(f"{path}: field '{key}' must be {wanted}, got {value!r}")


def _mapping_text(path, key: str, value: str) -> str:
    """A field that takes a mapping or its text: JSON text of a mapping, or (the config files) a file that exists."""
    import json

    if key in FILE_FIELDS and not value.lstrip().startswith("{"):
        if not Path(value).is_file():
            raise RecipeError(f"{path}: field '{key}': {value}: no such file")
        return value
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise RecipeError(f"{path}: field '{key}' must be a mapping (or its JSON text), got {value!r}")
    return value


def load_recipe(path: str | os.PathLike, overrides: dict | None = None, method: str | None = None):
    """(method, ScriptArguments, ModelArguments, <Method>Config) from a recipe file and overrides. ``method``
    (the CLI's ``alignment dpo --config RECIPE``) is used when the recipe names none. Recipes in the
    alignment-handbook's and TRL's shapes, and renamed or removed fields, are mapped first (alignment.legacy)."""
    path = Path(path)
    if not path.exists():
        raise RecipeError(f"{path}: no such recipe file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise RecipeError(f"{path}: cannot be read ({e})") from None
    raw = load_yaml(text, str(path)) or {}
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: a recipe is a mapping of field: value")
    raw.update(overrides or {})
    from alignment.legacy import LegacyError, normalize
    from alignment.trainers.registry import methods

    known_methods = methods()
    if method is not None:
        if raw.get("method") not in (None, method):
            raise RecipeError(f"{path}: the recipe's method is {raw['method']!r} but the command says {method!r}")
        raw["method"] = method
    try:
        raw = normalize(raw)
    except LegacyError as e:
        raise RecipeError(f"{path}: {e}") from None
    method = raw.pop("method", None)
    if method is None:
        raise RecipeError(
            f"{path}: no method: add 'method: dpo' (one of {sorted(known_methods)}) to the recipe, pass --method "
            "dpo, or run `alignment dpo --config RECIPE`"
        )
    if method not in known_methods:
        raise RecipeError(f"{path}: field 'method' must be one of {sorted(known_methods)}, got {method!r}")
    config_class = known_methods[method].config
    if raw.get("init_from_config") is not None:
        _check_model_config(path, raw["init_from_config"])
    self_play = _self_play(path, raw, _fields(config_class))
    env = raw.pop("env", {}) or {}
    if not isinstance(env, dict):
        raise RecipeError(f"{path}: field 'env' must be a mapping of NAME: value (environment variables), got {env!r}")
    known = _fields(ScriptArguments, ModelArguments, config_class)
    for key in raw:
        if key not in known:
            hint = difflib.get_close_matches(key, sorted(known), n=1)
            more = f" (did you mean '{hint[0]}'?)" if hint else ""
            raise RecipeError(f"{path}: unknown field '{key}' for method {method}{more}")
    for key, value in env.items():
        os.environ.setdefault(str(key), str(value))
    types = _field_types(ScriptArguments, ModelArguments, config_class)
    for key, value in raw.items():
        raw[key] = _check_type(path, key, _coerce(path, key, value, types.get(key, "")), types.get(key, ""))
    parser = HfArgumentParser((ScriptArguments, ModelArguments, config_class))
    try:
        script, model_args, config = parser.parse_dict(raw)
    except (
        FileNotFoundError
    ) as e:  # a field naming a file (accelerator_config, fsdp_config, deepspeed) that is not there
        raise RecipeError(f"{path}: a file a field names does not exist: {e.filename}") from None
    except (ValueError, TypeError) as e:
        raise RecipeError(f"{path}: {e}") from None
    script.self_play = self_play
    if known_methods[method].trainer.model_head == "reward" and script.eval_task:
        raise RecipeError(f"{path}: field 'eval_task' scores a policy's answers; a reward model is scored on held-out "
                          "pairs: drop eval_task and set eval_dataset (its pair accuracy is reported)")  # fmt: skip
    _check_online_judge(path, config, script)
    from alignment.preflight import check_recipe

    check_recipe(path, method, script, config, model_args)  # the environment, the steps, the model's config: first
    return method, script, model_args, config


def _check_online_judge(path, config, script) -> None:
    """A method whose config names a judge (online DPO) has one, of a known form, before anything loads."""
    if not hasattr(config, "judge"):
        return
    from alignment.loops.settings import JUDGE_FORMS, check_judge

    if config.judge is None:
        raise RecipeError(f"{path}: field 'judge': online DPO labels its sampled pairs with a judge: set judge to "
                          f"{JUDGE_FORMS}")  # fmt: skip
    try:
        check_judge(config.judge, script.eval_task)
    except ValueError as e:
        raise RecipeError(f"{path}: field 'judge': {e}") from None


def _check_model_config(path, init_config) -> None:
    """``init_from_config`` names a readable JSON object (a model config), checked before anything loads."""
    import json

    try:
        config = json.loads(Path(str(init_config)).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        reason = "no such file" if isinstance(e, FileNotFoundError) else f"not a JSON model config ({e})"
        raise RecipeError(f"{path}: field 'init_from_config': {init_config}: {reason}") from None
    if not isinstance(config, dict) or "model_type" not in config:
        raise RecipeError(f"{path}: field 'init_from_config': {init_config}: a model config is a JSON object with "
                          "a model_type")  # fmt: skip


def _self_play(path, raw: dict, method_fields: set[str] = frozenset()):
    """The self-play loop's settings (``loop: self_play`` and its fields, popped from ``raw``), or None. A field
    that is the method's own too (online DPO's ``judge``) stays the method's when there is no loop."""
    from alignment.loops.settings import SelfPlayArguments, check_judge

    loop = raw.pop("loop", None)
    names = _fields(SelfPlayArguments)
    if loop is None:
        stray = sorted(k for k in raw if k in names and k not in method_fields)
        if stray:
            raise RecipeError(f"{path}: field '{stray[0]}' belongs to the self-play loop: add 'loop: self_play'")
        return None
    if loop != "self_play":
        raise RecipeError(f"{path}: field 'loop' must be self_play, got {loop!r}")
    types = _field_types(SelfPlayArguments)
    values = {k: _coerce(path, k, raw.pop(k), types[k]) for k in list(raw) if k in names}
    try:
        loop = SelfPlayArguments(**values)
        check_judge(loop.judge, loop.prompt_task)  # a recipe names its judge (from Python it may be an object)
        return loop
    except (ValueError, TypeError) as e:
        raise RecipeError(f"{path}: {e}") from None
