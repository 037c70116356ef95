"""One writer per output_dir: a run holds an exclusive lock on ``output_dir/_alignment.lock`` (``fcntl.flock``,
released by the kernel when the process ends, however it ends) while it writes there. A second run into the
same folder stops at once with one line naming the other process; the lock of a killed run is free again, so
it is taken over (its record is named in a warning). The record (pid, host, start time, command) is JSON in
the file; the file stays behind (removing it could let two runs lock two different files) and, like every
``_*`` file, is never pushed to the Hub.

The lock is re-entrant within a process (``alignment train`` holds it, and the trainer it builds asks again);
under several processes only global rank 0 takes it. A filesystem without ``flock`` support (some network
mounts) falls back to the record: a live pid on this host means busy.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import logging
import os
import socket
import sys
from pathlib import Path

from alignment.errors import OutputDirBusyError, RecipeError

logger = logging.getLogger("alignment")

LOCK_FILE = "_alignment.lock"
_HELD: dict[str, list] = {}  # resolved folder -> [open file, depth]


def is_rank_zero() -> bool:
    """Global rank 0 (or a single process), before or after torch.distributed starts."""
    return os.environ.get("RANK", "0") == "0"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _record(handle) -> dict:
    handle.seek(0)
    try:
        data = json.loads(handle.read() or "{}")
    except ValueError:
        data = {}
    return data if isinstance(data, dict) else {}


def _describe(record: dict) -> str:
    return (f"pid {record.get('pid', '?')} on {record.get('host', '?')}, started {record.get('started', '?')}"
            + (f": {record['command']}" if record.get("command") else ""))  # fmt: skip


def _flock(handle) -> bool:
    """True when the exclusive lock is ours; False when another process holds it."""
    import fcntl

    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as e:  # no flock on this filesystem: the record decides
        if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            raise
        record = _record(handle)
        return not (record.get("host") == socket.gethostname() and _alive(int(record.get("pid", 0) or 0)))


def acquire(output_dir: str | Path, command: str | None = None) -> None:
    """Take the lock of ``output_dir`` (created if needed) or raise :class:`OutputDirBusyError`."""
    folder = Path(output_dir)
    if folder.exists() and not folder.is_dir():
        raise RecipeError(f"output_dir {folder} is a file, not a folder: choose another --output_dir")
    key = str(folder.resolve())
    if key in _HELD:
        _HELD[key][1] += 1
        return
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / LOCK_FILE, "a+", encoding="utf-8")  # noqa: SIM115 (held open while the lock is)
    if not _flock(handle):
        other = _record(handle)
        handle.close()
        raise OutputDirBusyError(
            f"{folder} is being written by another run ({_describe(other)}): wait for it to finish, or choose "
            "another --output_dir"
        )
    previous = _record(handle)
    if previous.get("pid") and previous.get("pid") != os.getpid():
        logger.warning("%s: taking over the lock of a run that ended without releasing it (%s)", folder,
                       _describe(previous))  # fmt: skip
    started = dt.datetime.now().isoformat(timespec="seconds")
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": started,
              "command": command or " ".join(sys.argv)}  # fmt: skip
    handle.seek(0)
    handle.truncate()
    from alignment.secrets import redact_text

    handle.write(redact_text(json.dumps(record)))
    handle.flush()
    _HELD[key] = [handle, 1]


def release(output_dir: str | Path) -> None:
    key = str(Path(output_dir).resolve())
    held = _HELD.get(key)
    if held is None:
        return
    held[1] -= 1
    if held[1] == 0:
        del _HELD[key]
        held[0].close()  # closing the file releases the flock


@contextlib.contextmanager
def output_dir_lock(output_dir: str | Path, command: str | None = None, enabled: bool | None = None):
    """Hold the lock of ``output_dir`` for the block (on global rank 0; ``enabled`` overrides)."""
    enabled = is_rank_zero() if enabled is None else enabled
    if enabled:
        acquire(output_dir, command)
    try:
        yield
    finally:
        if enabled:
            release(output_dir)
