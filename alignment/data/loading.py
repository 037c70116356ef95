"""Load preference datasets from files, saved datasets folders or the Hub; validate and mix them.

Sources: ``.jsonl``, ``.json``, ``.parquet``, ``.csv`` files, a folder written by ``Dataset.save_to_disk``,
or a Hugging Face Hub dataset name (``org/name``; needs the Hub to be reachable). Every row goes through
:func:`~alignment.data.formats.validate_row`; a bad row raises :class:`DataFormatError` naming the file,
the 1-based row number and the field, or, with ``drop_invalid=True``, is dropped and counted.

Example::

    from alignment.data import load_preference_data
    train = load_preference_data("data/tasks/arithmetic/pref_train_standard.jsonl")
    mix = load_preference_data(
        [{"path": "data/tasks/arithmetic/pref_train_standard.jsonl", "weight": 0.5},
         {"path": "data/tasks/rps/pref_train_standard.jsonl", "weight": 1.0}],
        test_split_size=0.1,
    )   # a DatasetDict with "train" and "test"
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import random
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignment.data.errors import DataFormatError, DataLoadError, DatasetTypeError
from alignment.data.formats import (
    PREFERENCE,
    SFT,
    TEMPLATE_KWARGS,
    UNPAIRED,
    carried_values,
    is_carried,
    validate_row,
)

logger = logging.getLogger(__name__)
FILE_TYPES = (".jsonl", ".json", ".parquet", ".csv")


@dataclass
class ValidationReport:
    """What validation kept and dropped, by reason."""

    source: str
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    format: str | None = None
    kind: str = "rows"  # "unpaired rows" for KTO's (prompt, completion, label) rows

    def __str__(self) -> str:
        text = f"{self.source}: {self.kept} {self.kind} kept ({self.format} format)"
        if self.dropped:
            reasons = "; ".join(f"{n} x {reason}" for reason, n in self.dropped.most_common())
            text += f", {sum(self.dropped.values())} dropped: {reasons}"
        return text


# ----- reading rows -------------------------------------------------------------------------------------
def _decode(data: bytes) -> str:
    # Invalid UTF-8 bytes become lone surrogates; validation then names the field that holds them.
    return data.decode("utf-8", errors="surrogateescape")


def _iter_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    for line_no, line in enumerate(_decode(path.read_bytes()).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield line_no, json.loads(line)
        except json.JSONDecodeError as e:
            raise DataFormatError(f"invalid JSON: {e.msg} at column {e.colno}", str(path), line_no) from None


def _iter_json(path: Path) -> Iterator[tuple[int, Any]]:
    try:
        data = json.loads(_decode(path.read_bytes()))
    except json.JSONDecodeError as e:
        raise DataFormatError(f"invalid JSON: {e.msg} at line {e.lineno}", str(path)) from None
    if isinstance(data, dict) and "data" in data and isinstance(data["data"], list):
        data = data["data"]
    if isinstance(data, dict) and all(isinstance(v, list) for v in data.values()):
        n = len(next(iter(data.values()), []))
        data = [{k: v[i] for k, v in data.items()} for i in range(n)]
    if not isinstance(data, list):
        raise DataFormatError("a .json file must hold a list of rows or a dict of columns", str(path))
    yield from enumerate(data, start=1)


def _iter_csv(path: Path) -> Iterator[tuple[int, Any]]:
    reader = csv.DictReader(io.StringIO(_decode(path.read_bytes()), newline=""))
    for row_no, row in enumerate(reader, start=1):
        yield row_no, {k: v for k, v in row.items() if k is not None}


def _iter_arrow(rows: Iterable[dict[str, Any]]) -> Iterator[tuple[int, Any]]:
    yield from enumerate(rows, start=1)


def _iter_parquet(path: Path) -> Iterator[tuple[int, Any]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for a corrupt file
        raise DataLoadError(f"{path}: not a readable parquet file ({e})") from None
    yield from _iter_arrow(table.to_pylist())


def _load_from_disk(path: Path, split: str):
    from datasets import DatasetDict, load_from_disk

    try:
        ds = load_from_disk(str(path))
    except Exception as e:
        raise DataLoadError(f"{path}: not a folder written by Dataset.save_to_disk ({e})") from None
    if isinstance(ds, DatasetDict):
        if split not in ds:
            raise DataLoadError(f"{path}: no split {split!r}; it has {sorted(ds)}")
        ds = ds[split]
    return ds


def _load_hub(name: str, split: str, config: str | None):
    from datasets import load_dataset

    try:
        return load_dataset(name, config, split=split)
    except Exception as e:
        text = f"{type(e).__name__}: {e}"
        offline = any(
            s in text.lower() for s in ("offline", "connection", "resolve", "network", "max retries", "timed out")
        )
        hint = (
            "the Hugging Face Hub is not reachable from this machine (offline). Download the dataset "
            "where the Hub is reachable (datasets.load_dataset(...).save_to_disk(DIR)) and pass DIR, "
            "or a jsonl/parquet file"
            if offline
            else "check the name, config and split"
        )
        raise DataLoadError(f"could not load Hub dataset {name!r} (split {split!r}): {hint}. [{text[:300]}]") from None


def iter_source_rows(source: str | Path, split: str = "train", config: str | None = None):
    """Yield (row number, raw row) from any supported source, without validating."""
    path = Path(source)
    if path.is_dir():
        return _iter_arrow(_load_from_disk(path, split))
    if path.exists():
        readers = {".jsonl": _iter_jsonl, ".json": _iter_json, ".parquet": _iter_parquet, ".csv": _iter_csv}
        if path.suffix not in readers:
            raise DataLoadError(f"{path}: unknown file type {path.suffix!r}; use one of {FILE_TYPES}")
        return readers[path.suffix](path)
    if path.suffix in FILE_TYPES or str(source).startswith((".", "/", "~")) or str(source).count("/") > 1:
        raise DataLoadError(f"{source}: no such file or folder")
    return _iter_arrow(_load_hub(str(source), split, config))


# ----- validation ---------------------------------------------------------------------------------------
def validate_rows(
    rows: Iterable[tuple[int, Any]],
    source: str,
    drop_invalid: bool = False,
    completions: tuple[str, ...] = PREFERENCE,
    labeled: bool = False,
) -> tuple[list[dict[str, Any]], ValidationReport]:
    """Validate numbered rows; return the normalized rows and a report. Raises on the first bad row unless
    ``drop_invalid``, in which case bad rows are dropped and counted by reason. ``completions``: the
    completion columns (``formats.PREFERENCE`` or ``formats.SFT``)."""
    report = ValidationReport(source)
    if completions == UNPAIRED:  # preference rows or unpaired ones: the first row decides
        rows = iter(rows)
        first = next(rows, None)
        paired = first is not None and isinstance(first[1], dict) and {"chosen", "rejected"} <= set(first[1])
        completions, labeled = (PREFERENCE, False) if paired else (SFT, True)
        report.kind = "rows" if paired else "unpaired rows"
        rows = iter([first, *rows]) if first is not None else iter(())
    out: list[dict[str, Any]] = []
    numbers: list[int] = []  # each kept row's number in the source
    iterator = iter(rows)
    while True:
        try:
            row_no, row = next(iterator)
        except StopIteration:
            break
        except DataFormatError as e:  # an unreadable line: it cannot be skipped reliably in csv/json
            if not drop_invalid or e.row is None:
                raise e.located(source) from None
            report.dropped[e.reason.split(":")[0]] += 1
            continue
        try:
            clean, fmt = validate_row(row, report.format, completions, labeled)
        except DataFormatError as e:
            if not drop_invalid:
                raise e.located(source, row_no) from None
            report.dropped[f"{e.field}: {e.reason}" if e.field else e.reason] += 1
            continue
        report.format = report.format or fmt
        out.append(clean)
        numbers.append(row_no)
    report.kept = len(out)
    check_carried_columns(out, numbers, source)
    if any(TEMPLATE_KWARGS in row for row in out):  # one schema for every row (from_list reads the first's keys)
        for row in out:
            row.setdefault(TEMPLATE_KWARGS, None)
    if report.dropped:
        logger.warning("%s: dropped %d invalid rows (drop_invalid_rows), kept %d: %s", source,
                       sum(report.dropped.values()), report.kept, dict(report.dropped))  # fmt: skip
    return out, report


def check_carried_columns(rows: list[dict[str, Any]], numbers: list[int], source: str) -> None:
    """Precomputed columns (``*_logps``) are all or nothing: a column that some rows have and another lacks is
    an error naming the first row without it (``Dataset.from_list`` would otherwise keep the first row's
    columns and drop or null the column for every row)."""
    carried = sorted({k for row in rows for k in row if is_carried(k)})
    for column in carried:
        for row, number in zip(rows, numbers):
            if column not in row:
                raise DataFormatError(
                    "missing column (precomputed columns are all or nothing: other rows have it)", source, number,
                    column,
                )  # fmt: skip


def check_one_split(dataset, name: str = "train") -> None:
    """A trainer's dataset is one split: a (Iterable)DatasetDict or another mapping of splits is refused with
    trl's words (``train_dataset`` must be a ``Dataset`` or ``IterableDataset``) and the split names to pick from."""
    if isinstance(dataset, Mapping):
        splits = ", ".join(repr(k) for k in list(dataset)[:5]) or "none"
        raise DatasetTypeError(
            f"`{name}_dataset` must be a `Dataset` or `IterableDataset`, got a {type(dataset).__name__} of splits "
            f"({splits}): pass one of them, e.g. dataset[{next(iter(dataset), 'train')!r}] (columns in a mapping: "
            "Dataset.from_dict(...))"
        )


def check_tokenized_columns(dataset, source: str) -> None:
    """An already tokenized dataset's precomputed columns, checked as :func:`validate_rows` checks raw rows
    (finite numbers in every row)."""
    carried = [c for c in dataset.column_names if is_carried(c)]
    if not carried:
        return
    for number, row in enumerate(dataset.select_columns(carried).to_list(), start=1):
        try:
            carried_values(row)
        except DataFormatError as e:
            raise e.located(source, number) from None


def _rows_to_dataset(rows: list[dict[str, Any]], source: str):
    from datasets import Dataset

    if not rows:
        raise DataLoadError(f"{source}: no valid rows")
    return Dataset.from_list(rows)


def load_preference_dataset(
    source: str | Path,
    split: str = "train",
    config: str | None = None,
    drop_invalid: bool = False,
    validate: bool = True,
    completions: tuple[str, ...] = PREFERENCE,
    columns: list[str] | None = None,
):
    """Load and validate one source; return (datasets.Dataset with prompt and the ``completions`` columns,
    report). ``validate=False`` loads the rows as they are. ``columns`` keeps only those columns of each row
    (the handbook's ``columns: [chosen, rejected]``: a conversation whose prompt is implicit)."""
    rows_in = iter_source_rows(source, split, config)
    if columns is not None:
        keep = set(columns)
        rows_in = (
            (n, {k: v for k, v in row.items() if k in keep} if isinstance(row, dict) else row) for n, row in rows_in
        )
    if not validate:
        rows = [row for _, row in rows_in]
        report = ValidationReport(str(source), kept=len(rows), format="unvalidated")
        return _rows_to_dataset(rows, str(source)), report
    rows, report = validate_rows(rows_in, str(source), drop_invalid, completions)
    logger.info("%s", report)
    return _rows_to_dataset(rows, str(source)), report


def validate_dataset(
    dataset, name: str = "<dataset>", drop_invalid: bool = False, completions: tuple[str, ...] = PREFERENCE,
    labeled: bool = False,
):  # fmt: skip
    """Validate an in-memory ``datasets.Dataset`` (or a list of dicts) the same way: (Dataset, report).
    ``labeled``: rows carry a boolean ``label`` (KTO)."""
    rows = dataset.to_list() if hasattr(dataset, "to_list") else list(dataset)
    clean, report = validate_rows(_iter_arrow(rows), name, drop_invalid, completions, labeled)
    return _rows_to_dataset(clean, name), report


# ----- mixing -------------------------------------------------------------------------------------------
def _parse_source(text: str) -> dict[str, Any]:
    """ "path" or "path:weight" (a number after the last colon)."""
    head, sep, tail = str(text).rpartition(":")
    if sep:
        try:
            return {"path": head, "weight": float(tail)}
        except ValueError:
            pass
    return {"path": str(text)}


def _normalize_sources(sources) -> list[dict[str, Any]]:
    if isinstance(sources, (str, Path)):
        return [_parse_source(sources)]
    if isinstance(sources, Mapping):
        return [{"path": str(k), "weight": v} for k, v in sources.items()]
    if isinstance(sources, Sequence):
        out = []
        for s in sources:
            out.append(_parse_source(s) if isinstance(s, (str, Path)) else dict(s))
        return out
    raise DataLoadError(f"dataset sources must be a path, a list or a {{path: weight}} mapping, got {sources!r}")


def _weight(spec: dict) -> float:
    """A source's weight: a finite number > 0 (default 1)."""
    value = spec.get("weight", 1.0)
    try:
        weight = float(value)
    except (TypeError, ValueError):
        weight = math.nan
    if not (math.isfinite(weight) and weight > 0):
        raise DataLoadError(f"dataset source {spec.get('path')}: weight must be a finite number > 0, got {value!r}")
    return weight


def _take(n_rows: int, weight: float, rng: random.Random) -> list[int]:
    """Row indices for a weight: a fraction of the rows (weight <= 1) or whole copies plus a fraction."""
    whole, frac = divmod(weight, 1.0)
    indices = list(range(n_rows)) * int(whole)
    indices += rng.sample(range(n_rows), round(frac * n_rows))
    return indices


def load_preference_data(
    sources,
    split: str = "train",
    test_split_size: float | int | None = None,
    seed: int = 0,
    drop_invalid: bool = False,
    validate: bool = True,
    completions: tuple[str, ...] = PREFERENCE,
):
    """Load one or several sources, each with an optional ``weight`` (fraction of its rows to take; above 1
    it is repeated), ``split`` and ``config``; shuffle the mix with ``seed``. With ``test_split_size``,
    return a DatasetDict with "train" and "test". All sources must share one format."""
    from datasets import concatenate_datasets

    rng = random.Random(seed)
    parts, formats, kinds = [], {}, {}
    for spec in _normalize_sources(sources):
        unknown = set(spec) - {"path", "weight", "split", "config", "columns"}
        if unknown:
            raise DataLoadError(f"dataset source {spec}: unknown keys {sorted(unknown)}")
        weight = _weight(spec)  # before the source is read
        ds, report = load_preference_dataset(
            spec["path"], spec.get("split", split), spec.get("config"), drop_invalid, validate, completions,
            spec.get("columns"),
        )  # fmt: skip
        formats[spec["path"]] = report.format
        kinds[spec["path"]] = report.kind
        parts.append(ds.select(_take(len(ds), weight, rng)))
    if len(set(formats.values())) > 1:
        raise DataLoadError(f"cannot mix datasets of different formats: {formats}")
    if len(set(kinds.values())) > 1:
        raise DataLoadError(f"cannot mix paired and unpaired datasets: {kinds}")
    mixed = concatenate_datasets(parts).shuffle(seed=seed) if len(parts) > 1 else parts[0]
    if test_split_size:
        if test_split_size >= 1 and not test_split_size < len(mixed):
            raise DataLoadError(f"test_split_size {test_split_size:g}: the mixture has {len(mixed)} rows; give fewer "
                                "held-out rows, or a fraction in (0, 1)")  # fmt: skip
        return mixed.train_test_split(test_size=test_split_size, seed=seed)
    return mixed


def first_rows(dataset, n: int) -> list[dict[str, Any]]:
    """The first ``n`` rows of a map-style or streaming (IterableDataset) dataset, as dicts."""
    if hasattr(dataset, "select") and hasattr(dataset, "__len__"):
        return dataset.select(range(min(n, len(dataset)))).to_list()
    return list(dataset.take(n))
