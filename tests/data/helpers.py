"""Small writers shared by the data tests."""

import csv
import json
from pathlib import Path

STANDARD_ROWS = [
    {"prompt": "What is 1 + 2?", "chosen": " 3", "rejected": " 4"},
    {"prompt": "What is 5 + 5?", "chosen": " 10", "rejected": " 11"},
    {"prompt": "Play rock, paper or scissors.", "chosen": " paper", "rejected": " I pass."},
]


def conversational(rows):
    return [
        {
            "prompt": [{"role": "user", "content": r["prompt"]}],
            "chosen": [{"role": "assistant", "content": r["chosen"].strip()}],
            "rejected": [{"role": "assistant", "content": r["rejected"].strip()}],
        }
        for r in rows
    ]


def write(path: Path, rows, kind: str | None = None) -> Path:
    kind = kind or path.suffix.lstrip(".")
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif kind == "json":
        path.write_text(json.dumps(rows), encoding="utf-8")
    elif kind == "csv":
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    elif kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    elif kind == "disk":
        from datasets import Dataset

        Dataset.from_list(rows).save_to_disk(str(path))
    else:
        raise ValueError(kind)
    return path
