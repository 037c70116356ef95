"""The layers of docs/architecture.md, enforced: every import of an alignment module (module-level and inside
functions) goes to the same layer or one below it, and no chain of imports comes back to where it started.
A failure names the file and line of the offending import."""

import ast
from pathlib import Path

from tests.conftest import ROOT

#: lowest first; a module belongs to the first entry that is its name or a package above it
LAYERS = [
    ("ground", ["alignment.errors", "alignment.checks", "alignment.secrets", "alignment.io", "alignment.yaml_io",
                "alignment.locks", "alignment.run_settings", "alignment.text"]),
    ("ops", ["alignment.ops"]),
    ("losses", ["alignment.losses"]),
    ("tasks", ["alignment.tasks"]),
    ("data", ["alignment.data"]),
    ("long_context", ["alignment.long_context"]),
    ("models", ["alignment.models", "alignment.heads", "alignment.reward_heads", "alignment.learners",
                "alignment.generation", "alignment.vllm_backend", "alignment.sampling", "alignment.processes"]),
    ("configs", ["alignment.configs", "alignment.hub", "alignment.checkpoints"]),
    ("evaluation", ["alignment.evaluation", "alignment.diagnostics", "alignment.regret_eval"]),
    ("trainers", ["alignment.trainers"]),
    ("judges", ["alignment.judges"]),
    ("loops", ["alignment.loops"]),
    ("recipes", ["alignment.legacy", "alignment.recipes", "alignment.preflight"]),
    ("planning", ["alignment.planning"]),
    ("commands", ["alignment.run", "alignment.method_index", "alignment.cli", "alignment"]),
]  # fmt: skip


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted((ROOT / "alignment").rglob("*.py"))}


def layer_of(module: str) -> int:
    for rank, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes if p != "alignment"):
            return rank
    if module == "alignment":
        return len(LAYERS) - 1
    raise AssertionError(f"{module} is in no layer of tests/test_layers.py (and docs/architecture.md)")


def _target(name: str) -> str | None:
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in MODULES:
            return ".".join(parts[:i])
    return None


def imports(module: str) -> list[tuple[str, int]]:
    """(imported alignment module, line) for every import statement of ``module``, in functions too."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            names = [f"{base}.{a.name}" for a in node.names] if base else []
        for name in names:
            if name == "alignment" or name.startswith("alignment."):
                target = _target(name)
                if target and target != module and (target, node.lineno) not in found:
                    found.append((target, node.lineno))
    return found


GRAPH = {m: imports(m) for m in MODULES}


def _where(module: str, line: int) -> str:
    return f"{MODULES[module].relative_to(ROOT)}:{line}"


def _doc_name(module: str) -> str:
    name = module.removeprefix("alignment.")
    return name + ("/" if MODULES[module].name == "__init__.py" else ".py")


def doc_layers() -> list[tuple[str, list[str]]]:
    """The layers block of docs/architecture.md: (layer, [alignment/ paths]) for each line that names a layer."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = text.split("## Layers", 1)[1].split("```", 2)[1]
    names = {name for name, _ in LAYERS}
    return [
        (line.split()[0], line.split()[1:]) for line in block.splitlines() if line.split()[:1] in [[n] for n in names]
    ]


def test_the_architecture_doc_lists_every_module_in_its_layer():
    expected = [(name, [_doc_name(m) if m != "alignment" else "__init__.py" for m in prefixes if m in MODULES])
                for name, prefixes in LAYERS]  # fmt: skip
    assert [(n, sorted(paths)) for n, paths in doc_layers()] == [(n, sorted(p)) for n, p in expected]
    top = [m for m in MODULES if m.count(".") == 1]  # alignment/<name>.py and alignment/<name>/
    for module in top:
        layer_of(module)
    listed = {p for _, paths in doc_layers() for p in paths}
    assert not [m for m in top if _doc_name(m) not in listed], "docs/architecture.md misses a module"


def test_no_import_goes_up_a_layer():
    wrong = [f"{_where(m, line)}: {m} ({LAYERS[layer_of(m)][0]}) imports {t} ({LAYERS[layer_of(t)][0]})"
             for m, edges in GRAPH.items() for t, line in edges if layer_of(t) > layer_of(m)]  # fmt: skip
    assert not wrong, "imports from a lower layer into a higher one:\n" + "\n".join(wrong)


def cycles(graph: dict[str, list[tuple[str, int]]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]

    def visit(root):
        work = [(root, iter(graph.get(root, [])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            node, it = work[-1]
            for target, _ in it:
                if target not in index:
                    index[target] = low[target] = counter[0]
                    counter[0] += 1
                    stack.append(target)
                    on.add(target)
                    work.append((target, iter(graph.get(target, []))))
                    break
                if target in on:
                    low[node] = min(low[node], index[target])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        out.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return out


def test_no_import_cycles():
    found = cycles(GRAPH)
    lines = []
    for component in found:
        members = set(component)
        lines += [f"{_where(m, line)}: {m} imports {t}" for m in component for t, line in GRAPH[m] if t in members]
    assert not found, "import cycles:\n" + "\n".join(lines)


def test_the_checks_can_fail():
    """The cycle finder and the layer rule on a made-up graph: a -> b -> a is found, ops importing trainers is up."""
    assert cycles({"a": [("b", 1)], "b": [("a", 2)], "c": [("a", 3)]}) == [["a", "b"]]
    assert layer_of("alignment.trainers.base") > layer_of("alignment.ops.tiles")
