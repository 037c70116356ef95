"""Regenerate everything the project ships under data/: task datasets and the tokenizer.

    alignment data build --out data

The output is byte-for-byte identical on a rerun (seeded generators, sorted keys, a deterministic BPE
trainer); ``alignment data check`` rebuilds into a temporary folder and compares. Layout:

    data/tasks/<task>/{sft,pref}_{train,eval}_{standard,conversational}.jsonl
    data/tokenizer/            (AutoTokenizer.from_pretrained("data/tokenizer"))

Standard rows hold plain strings; completions start with one space, so prompt + completion reads as
text. Conversational rows hold lists of {"role", "content"} messages (the completion without the space).
"""

from __future__ import annotations

import filecmp
import tempfile
from pathlib import Path

from alignment.io import write_jsonl
from alignment.tasks import TASKS, get_task

#: rows per (task, kind, split); keeps data/ at a few MB.
SIZES = {("sft", "train"): 6000, ("sft", "eval"): 500, ("pref", "train"): 3000, ("pref", "eval"): 500}
SEED = 1234
FORMATS = ("standard", "conversational")


def _standard(row: dict[str, str]) -> dict[str, str]:
    return {k: (v if k == "prompt" else " " + v) for k, v in row.items()}


def _conversational(row: dict[str, str]) -> dict[str, list[dict[str, str]]]:
    out = {"prompt": [{"role": "user", "content": row["prompt"]}]}
    for key, value in row.items():
        if key != "prompt":
            out[key] = [{"role": "assistant", "content": value}]
    return out


def task_rows(task_name: str, kind: str, split: str) -> list[dict[str, str]]:
    task = get_task(task_name)
    n = SIZES[(kind, split)]
    if kind == "sft":
        return task.sft_rows(split, n, seed=SEED)
    return task.build_pairs(split, n, seed=SEED + 1)


def build(out: str | Path) -> list[Path]:
    """Write the datasets and the tokenizer under ``out``; return the files written."""
    out = Path(out)
    written: list[Path] = []
    texts: list[str] = []
    for name in TASKS:
        for kind, split in SIZES:
            rows = task_rows(name, kind, split)
            texts.extend(v for row in rows for v in row.values())
            for fmt in FORMATS:
                convert = _standard if fmt == "standard" else _conversational
                path = out / "tasks" / name / f"{kind}_{split}_{fmt}.jsonl"
                write_jsonl(path, [convert(r) for r in rows])
                written.append(path)
    written.extend(build_tokenizer(out / "tokenizer", texts))
    return written


def build_tokenizer(folder: Path, texts: list[str]) -> list[Path]:
    from alignment.tasks.tokenizer import train_tokenizer

    tokenizer = train_tokenizer(texts)
    folder.mkdir(parents=True, exist_ok=True)
    return [Path(p) for p in tokenizer.save_pretrained(str(folder)) if Path(p).exists()]


def check(shipped: str | Path) -> list[str]:
    """Rebuild into a temporary folder; return the relative paths that differ from ``shipped``."""
    shipped = Path(shipped)
    with tempfile.TemporaryDirectory() as tmp:
        files = build(tmp)
        rel = [f.relative_to(tmp) for f in files]
        return [str(r) for r in rel if not (shipped / r).exists() or not filecmp.cmp(shipped / r, Path(tmp) / r, False)]
