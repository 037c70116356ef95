"""Atomic file writes (temp file + rename): a crash never leaves a half-written output behind."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

logger = logging.getLogger("alignment")


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8, "\\n" line ends) to ``path`` through a temporary file in the same folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


def write_jsonl(path: str | os.PathLike, rows) -> Path:
    """One JSON object per line (non-ASCII kept as is), written atomically."""
    return atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The objects of a file written by :func:`write_jsonl` (blank lines skipped)."""
    text = Path(path).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def read_cached_jsonl(path: str | os.PathLike) -> list[dict] | None:
    """A stage's cached rows, or None when they must be computed: no file, or a file that cannot be read
    (truncated, corrupt: named in a warning, then recomputed and replaced). A hit is logged."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        rows = read_jsonl(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        logger.warning("%s: unreadable cached file (%s); recomputing it", path, str(e).splitlines()[0][:120])
        return None
    logger.info("cache hit: %s", path)
    return rows
