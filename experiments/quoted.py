"""Numbers the docs quote from results files: find them, check them, rewrite them.

A quoted number carries a tag right after it (invisible once the Markdown is rendered)::

    greedy accuracy 0.806<!--@ dpo.eval.greedy.accuracy -->, 1.26x<!--@ regret.regret.ratio_to_best_hedge.gaussian -->
    38%<!--@ benchmarks/some.json:rows.0.share -->, 82.6<!--@ benchmarks/plan_calibration.json:0.planned|mib -->

The key is a dotted path into a JSON file (list items by index), in ``docs/results/quickstarts.json`` unless
the tag names a file (``FILE:KEY``, relative to the repository root). The number keeps the form it is written in:
its decimals, a trailing ``x``, a trailing ``%`` (the file holds a share: 0.38 -> 38%). A region between
``<!-- results -->`` and ``<!-- /results -->`` must tag every decimal number in it but a table row's label (a
results table cannot hold an untagged one).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_RESULTS = Path("docs/results/quickstarts.json")
DOCS = ("README.md", "BENCHMARKS.md", "docs/*.md")
# a sign counts unless it follows a letter, a digit or a tag ("6<!--@ a -->-14<!--@ b -->" is the range 6 to 14)
TAG = re.compile(r"(?<![\w>.])(?P<number>(?:(?<![\w>])[-+])?\d+(?:\.\d+)?)(?P<suffix>[x%]?)<!--@ (?P<key>\S+) -->")
REGION = re.compile(r"<!-- results -->(?P<body>.*?)<!-- /results -->", re.S)
BARE_DECIMAL = re.compile(r"(?<![\w.])[-+]?\d+\.\d+(?![\w.])")


@dataclass
class Quote:
    path: Path
    line: int
    text: str  # the number as written, suffix included
    key: str
    start: int
    end: int
    decimals: int
    suffix: str

    def where(self) -> str:
        return f"{self.path}:{self.line}"


def doc_files(root: Path) -> list[Path]:
    return sorted({p for pattern in DOCS for p in root.glob(pattern)})


def quotes(path: Path) -> list[Quote]:
    text = path.read_text()
    out = []
    for m in TAG.finditer(text):
        number = m.group("number")
        decimals = len(number.split(".")[1]) if "." in number else 0
        out.append(Quote(path, text.count("\n", 0, m.start()) + 1, number + m.group("suffix"), m.group("key"),
                         m.start("number"), m.end("suffix"), decimals, m.group("suffix")))  # fmt: skip
    return out


#: a key may end in ``|UNIT``: the file's value converted (bytes to MiB or GiB)
UNITS = {"mib": 1 / 2**20, "gib": 1 / 2**30}


def lookup(root: Path, key: str, cache: dict) -> float:
    """The value at ``key`` ("FILE:dotted.path" or "dotted.path" in the default results file, optionally
    ending in ``|mib`` or ``|gib``)."""
    key, _, unit = key.partition("|")
    if unit and unit not in UNITS:
        raise KeyError(f"unknown unit |{unit} (known: {', '.join(UNITS)})")
    return _value(root, key, cache) * UNITS.get(unit, 1.0)


def _value(root: Path, key: str, cache: dict) -> float:
    file, _, path = key.rpartition(":") if ":" in key else (str(DEFAULT_RESULTS), "", key)
    if file not in cache:
        cache[file] = json.loads((root / file).read_text())
    value = cache[file]
    for part in _split(path):
        if isinstance(value, list):
            value = value[int(part)]
        elif isinstance(value, dict) and part in value:
            value = value[part]
        else:
            raise KeyError(f"{file}: no {path!r} (missing at {part!r})")
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise KeyError(f"{file}: {path!r} is {value!r}, not a number")
    return float(value)


def _split(path: str) -> list[str]:
    """Dotted path parts; a part may hold dots inside brackets: ``runs.[kto_beta0.1].eval`` -> kto_beta0.1."""
    return [p.strip("[]") for p in re.findall(r"\[[^\]]+\]|[^.]+", path)]


def formatted(value: float, quote: Quote) -> str:
    """``value`` written as the quote writes its number (decimals, %, x)."""
    shown = value * 100 if quote.suffix == "%" else value
    text = f"{shown:.{quote.decimals}f}"
    if text.startswith("-") and float(text) == 0:
        text = text[1:]
    if quote.text.startswith("+") and not text.startswith("-"):
        text = "+" + text  # a signed change keeps its sign
    return text + quote.suffix


def check(root: Path) -> list[str]:
    """One line per quoted number that differs from its file (or whose key is missing), and per untagged
    decimal number inside a results region."""
    problems, cache = [], {}
    for path in doc_files(root):
        for q in quotes(path):
            try:
                expected = formatted(lookup(root, q.key, cache), q)
            except (KeyError, IndexError, ValueError, FileNotFoundError) as err:
                problems.append(f"{q.where()}: {q.text} ({q.key}): {err}")
                continue
            if expected != q.text:
                problems.append(f"{q.where()}: quotes {q.text} but {q.key} is {expected}")
        problems += untagged(path)
    return problems


def untagged(path: Path) -> list[str]:
    """Decimal numbers without a tag inside results regions; a table row's first cell (its label, which may
    name a setting such as "beta 0.1") is not a result."""
    text = path.read_text()
    out = []
    for region in REGION.finditer(text):
        first_line = text.count("\n", 0, region.start("body")) + 1
        for offset, line in enumerate(TAG.sub("", region.group("body")).split("\n")):
            if line.startswith("|"):
                line = line[line.find("|", 1) :] if line.find("|", 1) > 0 else ""  # drop the label cell
            for m in BARE_DECIMAL.finditer(line):
                out.append(f"{path}:{first_line + offset}: {m.group()} in a results region has no tag")
    return out


def refresh_docs(root: Path, missing: list | None = None) -> dict[str, int]:
    """Rewrite every quoted number from its file; returns path -> numbers changed. A quote whose key is not
    in its file is left as it is and named in ``missing`` (check() then fails on it)."""
    changed, cache = {}, {}
    for path in doc_files(root):
        text, count = path.read_text(), 0
        for q in reversed(quotes(path)):
            try:
                new = formatted(lookup(root, q.key, cache), q)
            except (KeyError, IndexError, ValueError, FileNotFoundError) as err:
                if missing is not None:
                    missing.append(f"{q.where()}: {err}")
                continue
            if new != q.text:
                text, count = text[: q.start] + new + text[q.end :], count + 1
        if count:
            path.write_text(text)
            changed[str(path.relative_to(root))] = count
    return changed
