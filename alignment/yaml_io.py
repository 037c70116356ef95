"""Reading recipe YAML safely: one line for every way a recipe file can be malformed, before any work.

- duplicate keys are an error (YAML lets the last one win silently);
- keys must be text (``1: 2`` is no field name);
- a document whose aliases expand to more than :data:`MAX_VALUES` values is refused before it is built (an
  "alias bomb" of nested ``*anchor`` lists expands to billions of values: 3.9 GB and a MemoryError before);
- a syntax error is one line with its position;
- only true/false are booleans (YAML 1.2): ``no``, ``yes``, ``on``, ``off`` stay text.

Safe loading only (no Python objects). Imports nothing of ours but the error type.
"""

from __future__ import annotations

import re

import yaml

from alignment.errors import RecipeError

MAX_VALUES = 100_000


class RecipeLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses duplicate and non-text keys."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            self.flatten_mapping(node)
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                where = f"line {key_node.start_mark.line + 1}"
                if not isinstance(key, str):
                    raise RecipeError(f"{where}: key {key!r} is not text (field names are words)")
                if key in seen:
                    raise RecipeError(f"{where}: duplicate key '{key}' (the last one would silently win)")
                seen.add(key)
        return super().construct_mapping(node, deep)


RecipeLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, RecipeLoader.construct_mapping)


def _yaml_12_booleans(loader: type) -> None:
    """Only true/false are booleans (YAML 1.2), so that ``save_strategy: no`` or ``--eval_strategy no`` keep the
    text a transformers user types (YAML 1.1 reads yes/no/on/off as booleans: "False is not a valid
    IntervalStrategy"). A boolean field given yes/no is then one clear error naming the field."""
    bool_tag = "tag:yaml.org,2002:bool"
    loader.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != bool_tag]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    loader.add_implicit_resolver(bool_tag, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


_yaml_12_booleans(RecipeLoader)


def expanded_size(node, sizes: dict | None = None) -> int:
    """How many values the node stands for once every alias is expanded (shared nodes counted each time they
    are used), computed once per node."""
    sizes = {} if sizes is None else sizes
    key = id(node)
    if key in sizes:
        return sizes[key]
    sizes[key] = 1  # a node that contains itself (a recursive alias) counts once here
    if isinstance(node, yaml.SequenceNode):
        total = 1 + sum(expanded_size(child, sizes) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        total = 1 + sum(expanded_size(k, sizes) + expanded_size(v, sizes) for k, v in node.value)
    else:
        total = 1
    sizes[key] = total
    return total


def load_yaml(text: str, where: str, text_on_syntax_error: bool = False):
    """The value of a YAML document (None when empty), or RecipeError naming ``where``, on one line.
    ``text_on_syntax_error``: text that is not YAML is returned as it is (a command-line value such as a Jinja
    template); aliases and keys are checked all the same."""
    loader = RecipeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = expanded_size(node)
        if size > MAX_VALUES:
            raise RecipeError(f"{where}: its aliases expand to {size:,} values (more than {MAX_VALUES:,}): refused")
        return loader.construct_document(node)
    except RecipeError as e:
        raise RecipeError(str(e) if str(e).startswith(where) else f"{where}: {e}") from None
    except yaml.YAMLError as e:
        if text_on_syntax_error:
            return text
        raise RecipeError(f"{where}: not valid YAML ({' '.join(str(e).split())})") from None
    except RecursionError:
        raise RecipeError(f"{where}: nested too deeply to be a recipe") from None
    finally:
        loader.dispose()
