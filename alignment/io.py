"""Atomic file writes (temp file + rename): a crash never leaves a half-written output behind."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
from pathlib import Path

from alignment.errors import DiskFullError

logger = logging.getLogger("alignment")


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8, "\\n" line ends) to ``path`` through a temporary file in the same folder: the
    file is fsynced, renamed into place and the folder fsynced, so a crash leaves the old file or the new one.
    A failed write (a full disk, a folder in the way) removes the temporary file and raises
    :class:`~alignment.errors.DiskFullError` naming the folder; the old file stays as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise write_error(path, e) from None
    fsync_folder(path.parent)
    return path


def write_error(path: Path, error: OSError) -> DiskFullError:
    """The one-line error of a failed write."""
    if error.errno == errno.ENOSPC:
        return DiskFullError(f"no space left on the device of {path.parent} while writing {path.name}: free some "
                             "space (nothing half-written was kept)")  # fmt: skip
    return DiskFullError(f"cannot write {path} ({error.strerror or error})")


def fsync_folder(folder: str | os.PathLike) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened, e.g. on Windows)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


#: how a full disk shows in an error's text (safetensors' Rust IoError, the OS message) and how torch.save's C++
#: stream writer reports a write it could not finish
NO_SPACE = ("No space left", "StorageFull", "os error 28")
WRITE_FAILED = ("file write failed", "iostream error", "PytorchStreamWriter", "unexpected pos", "Disk quota")
WRITE_FAILURES = NO_SPACE + WRITE_FAILED


def write_failure_reason(error: BaseException) -> str:
    """A failed write in a few words (torch.save's own message is a C++ enforce-fail of several lines)."""
    text = " ".join(str(error).split())
    if getattr(error, "errno", None) == errno.ENOSPC or any(s in text for s in NO_SPACE):
        return "no space left on the device"
    if any(s in text for s in WRITE_FAILED):
        return "a file write failed: is the disk full?"
    return text[:160] or type(error).__name__


def is_write_failure(error: BaseException, folder: str | os.PathLike | None = None) -> bool:
    """An error raised by a write that the disk refused (full, quota, read-only, I/O): an OSError, or torch.save's
    and safetensors' own errors, which carry the failure in their text (a C++ enforce-fail) - or any error while
    ``folder``'s filesystem is (nearly) full."""
    if isinstance(error, OSError) or any(s in str(error) for s in WRITE_FAILURES):
        return True
    return folder is not None and disk_nearly_full(folder)


def disk_nearly_full(folder: str | os.PathLike) -> bool:
    """Less than 1 MiB free on ``folder``'s filesystem (the nearest existing parent)."""
    import shutil

    path = Path(folder)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free < 2**20
    except OSError:
        return False


def append_line(path: str | os.PathLike, text: str) -> None:
    """Append one line (a log record); a failed write is one line naming the file (DiskFullError)."""
    path = Path(path)
    try:
        with path.open("a", encoding="utf-8") as f:
            f.write(text + "\n")
    except OSError as e:
        raise write_error(path, e) from None


def read_json(path: str | os.PathLike, default=None):
    """A JSON file written by this library, or ``default`` when there is none or it cannot be read (truncated,
    corrupt: named in a warning, and the stage that wrote it runs again)."""
    path = Path(path)
    if not path.exists():
        return default
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        logger.warning("%s: unreadable (%s); it is recomputed", path, str(e).splitlines()[0][:120])
        return default


def read_jsonl_tolerant(path: str | os.PathLike) -> list[dict]:
    """The readable lines of a jsonl log (none when it is missing); a truncated or corrupt line is skipped
    with a warning (what it recorded is recomputed)."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            logger.warning("%s: line %d is unreadable (a write cut short?); skipped and recomputed", path, number)
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


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
