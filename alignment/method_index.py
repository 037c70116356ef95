"""What the command line says about the methods without importing them (``alignment --help``, ``alignment
methods``, ``alignment dpo --help`` start in well under a second: torch and transformers are imported only by
the commands that run something).

The built-in methods are read from their source with ``ast``: each module under alignment/trainers/builtin/ that
decorates a trainer with ``@register("name", config=..., paper=..., ...)``, and each config dataclass's fields
(name, type, default, help) through its bases inside the package (PreferenceConfig, AlignmentConfig; the
transformers TrainingArguments fields are summarized, not listed). Methods of other packages (entry points of
``alignment.methods``) are named from their metadata. tests/test_method_index.py checks that this index equals
the registry that training uses.
"""

from __future__ import annotations

import ast
import functools
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from alignment.text import first_sentence

PACKAGE = Path(__file__).resolve().parent
BUILTIN = PACKAGE / "trainers" / "builtin"
RECIPES = PACKAGE.parent / "recipes"  # present in a source checkout


@dataclass
class MethodInfo:
    name: str
    module: Path
    config: str
    paper: str = ""
    arxiv: str | None = None
    anchors: tuple[str, ...] = ()
    recipe: str | None = None
    summary: str = ""


@dataclass
class FieldInfo:
    group: str
    name: str
    type: str
    default: str
    help: str = ""
    extra: dict = field(default_factory=dict)


def _constant(node):
    try:
        return ast.literal_eval(node)
    except ValueError:
        return None


def builtin_methods() -> dict[str, MethodInfo]:
    """name -> MethodInfo of every built-in method, in the registry's order (module names, sorted)."""
    out = {}
    for path in sorted(BUILTIN.glob("*.py")):
        for node in _tree(path).body:
            if not isinstance(node, ast.ClassDef):
                continue
            for deco in node.decorator_list:
                if isinstance(deco, ast.Call) and getattr(deco.func, "id", None) == "register" and deco.args:
                    kw = {k.arg: _constant(k.value) for k in deco.keywords if k.arg != "config"}
                    name = _constant(deco.args[0])
                    config = next((getattr(k.value, "id", "") for k in deco.keywords if k.arg == "config"), "")
                    out[name] = MethodInfo(name, path, config, kw.get("paper") or "", kw.get("arxiv"),
                                           tuple(kw.get("anchors") or ()), kw.get("recipe"),
                                           kw.get("summary") or kw.get("paper") or "")  # fmt: skip
    return dict(sorted(out.items()))


def plugin_methods() -> dict[str, str]:
    """name -> the module that registers it, for methods of other packages (entry points) and methods
    registered in this process (when the registry is already imported: nothing is imported for them)."""
    from importlib.metadata import entry_points

    out = {e.name: e.value for e in entry_points(group="alignment.methods")}
    registry = sys.modules.get("alignment.trainers.registry")
    if registry is not None:
        out.update({name: m.trainer.__module__ for name, m in registry._REGISTRY.items() if name not in out})
    builtin = builtin_methods()
    return {name: module for name, module in out.items() if name not in builtin}


# ----- config fields ----------------------------------------------------------------------------------------
@functools.cache
def _source(path: Path) -> str:
    return path.read_text(encoding="utf-8")


@functools.cache
def _tree(path: Path) -> ast.Module:
    """The parsed module (each file of the package parsed once per process)."""
    return ast.parse(_source(path))


def _imports(path: Path) -> dict[str, tuple[str, str | None]]:
    """Each name the module imports: alias -> (module, name) for ``from module import name as alias``,
    (module, None) for ``import module as alias``."""
    out = {}
    for node in _tree(path).body:
        if isinstance(node, ast.ImportFrom) and node.module:
            out.update({a.asname or a.name: (node.module, a.name) for a in node.names})
        elif isinstance(node, ast.Import):
            out.update({a.asname or a.name: (a.name, None) for a in node.names})
    return out


def _classes(path: Path) -> tuple[dict[str, ast.ClassDef], dict[str, str]]:
    """The module's classes and where each name imported with ``from`` comes from (name -> module)."""
    classes = {n.name: n for n in _tree(path).body if isinstance(n, ast.ClassDef)}
    imported = {alias: module for alias, (module, name) in _imports(path).items() if name is not None}
    return classes, imported


def _module_path(module: str) -> Path | None:
    if not module.startswith("alignment"):
        return None
    parts = module.split(".")[1:]
    path = PACKAGE.joinpath(*parts)
    return path.with_suffix(".py") if path.with_suffix(".py").exists() else path / "__init__.py"


def _field_call(value):
    if isinstance(value, ast.Call) and getattr(value.func, "id", None) == "field":
        return {k.arg: k.value for k in value.keywords}
    return None


_MISSING = object()
_FACTORIES = {"list": "[]", "dict": "{}", "tuple": "()", "set": "set()"}


def _assigned(path: Path, name: str):
    """The module-level literal ``name = ...`` of ``path``, following ``from alignment... import name``."""
    for node in _tree(path).body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        if any(isinstance(t, ast.Name) and t.id == name for t in targets) and getattr(node, "value", None) is not None:
            return _resolve(node.value, path)
    module, original = _imports(path).get(name, ("", None))
    target = _module_path(module) if original is not None else None
    return _assigned(target, original) if target and target.exists() else _MISSING


def _imported_module(path: Path, alias: str) -> Path | None:
    """The file of the package module that ``path`` imports as ``alias`` (``from alignment.tasks import
    online_learning as ol``, ``import alignment.x as y``)."""
    module, name = _imports(path).get(alias, ("", None))
    return _module_path(f"{module}.{name}" if name is not None else module)


def _resolve(node, path: Path):
    """The value of a constant expression of the package's source, read without importing: literals, names
    bound to literals (here or imported from the package), ``module.NAME`` of an imported package module, and
    ``list``/``tuple``/``sorted`` of those; ``_MISSING`` for anything else (a call that computes at run time)."""
    value = _constant(node)
    if value is not None or isinstance(node, ast.Constant):
        return value
    if isinstance(node, ast.Name):
        return _assigned(path, node.id)
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        module = _imported_module(path, node.value.id)
        return _assigned(module, node.attr) if module and module.exists() else _MISSING
    if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("list", "tuple", "sorted") and node.args:
        inner = _resolve(node.args[0], path)
        if inner is _MISSING:
            return _MISSING
        return {"list": list, "tuple": tuple, "sorted": sorted}[node.func.id](inner)
    return _MISSING


def _help_text(metadata, path: Path) -> str:
    """The ``help`` of a field's metadata dict: its text, an f-string's parts filled in where they are constants
    of the source (``...`` where a part is computed at run time)."""
    if not isinstance(metadata, ast.Dict):
        return ""
    for key, value in zip(metadata.keys, metadata.values):
        if _constant(key) != "help":
            continue
        if isinstance(value, ast.JoinedStr):
            return "".join(_part(v, path) for v in value.values)
        text = _constant(value)
        return text if isinstance(text, str) else ""
    return ""


def _part(node, path: Path) -> str:
    if isinstance(node, ast.Constant):
        return str(node.value)
    value = _resolve(node.value, path)
    if value is _MISSING:
        return "..."
    return repr(value) if node.conversion == ord("r") else str(value)


def _factory_default(node, source: str, path: Path) -> str:
    """A ``default_factory`` shown as the value it makes: ``list`` as ``[]``, a lambda of constants as their
    value, a function that decides at start-up (``_bf16_default``) as ``auto``."""
    if isinstance(node, ast.Name) and node.id in _FACTORIES:
        return _FACTORIES[node.id]
    if isinstance(node, ast.Lambda):
        value = _resolve(node.body, path)
        return repr(value) if value is not _MISSING else ast.get_source_segment(source, node.body) or ""
    return "auto"


def _fields_of(node: ast.ClassDef, source: str, path: Path) -> list[FieldInfo]:
    out = []
    for stmt in node.body:
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        annotation = ast.get_source_segment(source, stmt.annotation) or ""
        if annotation.startswith("ClassVar"):
            continue
        call, default, help_ = _field_call(stmt.value), "", ""
        if call is not None:
            if "default" in call:
                default = ast.get_source_segment(source, call["default"]) or ""
            elif "default_factory" in call:
                default = _factory_default(call["default_factory"], source, path)
            help_ = _help_text(call.get("metadata"), path)
        elif stmt.value is not None:
            default = ast.get_source_segment(source, stmt.value) or ""
        out.append(FieldInfo(node.name, stmt.target.id, annotation, default, help_))
    return out


def class_fields(path: Path, name: str) -> list[FieldInfo]:
    """The fields of class ``name`` of ``path`` and of its bases inside the package, the class's own first,
    each field once (where it is last declared)."""
    classes, imported = _classes(path)
    node = classes.get(name)
    if node is None:
        module = imported.get(name)
        target = _module_path(module) if module else None
        return class_fields(target, name) if target and target.exists() else []
    own = _fields_of(node, _source(path), path)
    inherited = []
    for base in node.bases:
        base_name = getattr(base, "id", None)
        if base_name and (base_name in classes or _module_path(imported.get(base_name, "")) is not None):
            inherited += class_fields(path, base_name)
    seen = {f.name for f in own}
    return own + [f for f in inherited if f.name not in seen and not seen.add(f.name)]


def config_fields(method: str) -> list[FieldInfo]:
    info = builtin_methods()[method]
    return class_fields(info.module, info.config)


def script_fields() -> list[FieldInfo]:
    """The recipe's script and model arguments (alignment.configs.ScriptArguments, ModelArguments)."""
    path = PACKAGE / "configs.py"
    return class_fields(path, "ScriptArguments") + class_fields(path, "ModelArguments")


# ----- recipes ---------------------------------------------------------------------------------------------
def recipes_using(method: str) -> list[str]:
    """The recipes (under recipes/, relative) whose ``method:`` is ``method``."""
    if not RECIPES.is_dir():
        return []
    pattern = re.compile(rf"^method:\s*['\"]?{re.escape(method)}['\"]?\s*(#.*)?$", re.M)
    return sorted(str(p.relative_to(RECIPES)) for p in RECIPES.rglob("*.yaml") if pattern.search(p.read_text()))


def recipe_method(path: str) -> str | None:
    """The ``method:`` of a recipe file, read without loading anything (None when it names none)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    match = re.search(r"^method:\s*['\"]?([\w-]+)", text, re.M)
    return match.group(1) if match else None


# ----- the texts ---------------------------------------------------------------------------------------------
def _field_lines(fields: list[FieldInfo]) -> list[str]:
    lines, group = [], None
    for f in fields:
        if f.group != group:
            group = f.group
            lines.append(f"\n{group}:")
        kind = f.type.replace("Optional[", "").rstrip("]") if f.type.startswith("Optional[") else f.type
        default = f" = {f.default}" if f.default else ""
        lines.append(f"  --{f.name} ({kind}{default})")
        if f.help:
            lines.append(f"      {first_sentence(f.help)}")
    return lines


def method_help(method: str) -> str:
    """``alignment METHOD --help``: the method, its config's fields grouped by the class that declares them
    (type, default, the first sentence of the help), then the recipe's script and model arguments."""
    methods = builtin_methods()
    if method not in methods:
        module = plugin_methods().get(method, "?")
        return f"{method}: registered by {module} (its fields: `alignment methods {method}` imports it)."
    info = methods[method]
    head = [f"{info.name}: {info.summary}", f"paper: {info.paper}" + (f" (arXiv {info.arxiv})" if info.arxiv else "")]
    head.append(f"anchors: {', '.join(info.anchors) or 'none'}")
    recipes = recipes_using(method)
    head.append(f"recipes: {', '.join(recipes) or '-'}")
    lines = head + _field_lines(config_fields(method))
    lines.append("\nand every transformers TrainingArguments field (learning_rate, num_train_epochs, ...).")
    lines += _field_lines(script_fields())
    return "\n".join(lines)


def methods_table() -> str:
    rows = [(m.name, m.summary, f"arXiv {m.arxiv}" if m.arxiv else "-", ", ".join(m.anchors) or "none",
             ", ".join(recipes_using(m.name)) or (m.recipe or "-")) for m in builtin_methods().values()]  # fmt: skip
    registry = getattr(sys.modules.get("alignment.trainers.registry"), "_REGISTRY", {})
    for name, module in plugin_methods().items():
        m = registry.get(name)  # registered in this process: its own words, else the entry point's module
        rows.append((name, m.summary, f"arXiv {m.arxiv}" if m.arxiv else "-", ", ".join(m.anchors) or "none",
                     m.recipe or "-") if m else (name, f"from {module}", "-", "-", "-"))  # fmt: skip
    header = ("method", "what it is", "paper", "anchors", "recipes (under recipes/)")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join([*(cell.ljust(w) for cell, w in zip(row[:-1], widths)), row[-1]]).rstrip() for row in [header, *rows]
    )
