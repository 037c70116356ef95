"""The library's error types for user mistakes and run-state problems. Every layer may import this module; it
imports nothing of ours. The command line turns each of them into one ``error: ...`` line (exit status 2).

- :class:`RecipeError`: a recipe or option that cannot be used (names the file and the field); its kind
  :class:`UnavailableError`: something a setting needs that this machine lacks (a package, a device);
- :class:`RunError` and its kinds: a run that must not go on as asked - non-finite values
  (:class:`NonFiniteError`), an output folder another process is writing (:class:`OutputDirBusyError`),
  a resumed run whose settings differ from the saved ones (:class:`SettingsChangedError`), a disk that filled
  up while writing (:class:`DiskFullError`).
"""

from __future__ import annotations


class UserError(Exception):
    """The base of every error a user causes (a recipe, data, a run's state): the command line prints it in one
    line. The data and diagnostics layers' errors derive from it too."""


class RecipeError(UserError, ValueError):
    """A recipe that cannot be used: names the file and the field."""


class RunError(UserError, RuntimeError):
    """A training run that must stop (or must not start): the message says why and what to do."""


class NonFiniteError(RunError):
    """A NaN or infinity in a loss, a gradient or the weights: nothing non-finite reaches the weights or a save."""


class OutputDirBusyError(RunError):
    """Another live process is writing the same output_dir."""


class SettingsChangedError(RunError):
    """A run resumed (or a self-play folder rerun) with settings other than those it was started with."""


class DiskFullError(RunError):
    """A write failed for lack of space (or another OS error): the partial files are removed."""


class UnavailableError(RecipeError, RuntimeError):
    """A setting that needs what this machine lacks (a package, a CUDA device, a DeepSpeed launch)."""


#: OS errors a user causes (a path that cannot be written, a full disk): one line, not a traceback
USER_OS_ERRORS = {"EACCES", "EPERM", "EROFS", "ENOSPC", "EDQUOT", "ENOTDIR", "EISDIR", "EEXIST", "ENAMETOOLONG",
                  "ENOENT", "ELOOP"}  # fmt: skip


def user_classes() -> tuple[type, ...]:
    """The exception classes that are a user's mistake or the machine's limits, never a bug of ours."""
    return (UserError, FileNotFoundError, NotImplementedError, MemoryError)


def one_line(error: BaseException) -> str | None:
    """The one line (``error: ...`` and the fix) the command line prints for a user's mistake, or None for an
    internal bug (whose traceback must show). The one place that decides which is which."""
    import errno

    if isinstance(error, MemoryError) or out_of_memory(error):
        return (f"error: this machine ran out of memory ({type(error).__name__}: {first_line(error)}): lower "
                "max_length, the batch or lora_r, or plan it first with `alignment plan`")  # fmt: skip
    if isinstance(error, user_classes()):
        return f"error: {error}" if str(error).strip() else f"error: {type(error).__name__}"
    if isinstance(error, OSError) and errno.errorcode.get(error.errno or 0) in USER_OS_ERRORS:
        where = f" {error.filename}" if error.filename else ""
        return f"error: cannot write or read{where}: {error.strerror} (check the path and its permissions or space)"
    return None


#: what torch's allocators say when a tensor does not fit (the CPU's enforce-fail, CUDA's OutOfMemoryError)
OUT_OF_MEMORY = ("DefaultCPUAllocator: can't allocate memory", "out of memory")


def out_of_memory(error: BaseException) -> bool:
    """An allocation the machine cannot make: torch raises it as a RuntimeError (torch.OutOfMemoryError on a GPU)."""
    return isinstance(error, RuntimeError) and (
        type(error).__name__ == "OutOfMemoryError" or any(words in str(error) for words in OUT_OF_MEMORY)
    )


def first_line(error: BaseException, limit: int = 160) -> str:
    text = str(error).strip().splitlines()
    return (text[0][:limit] if text else "") or type(error).__name__
