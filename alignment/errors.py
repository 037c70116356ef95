"""The library's error types for user mistakes and run-state problems. Every layer may import this module; it
imports nothing of ours. The command line turns each of them into one ``error: ...`` line (exit status 2).

- :class:`RecipeError`: a recipe or option that cannot be used (names the file and the field);
- :class:`RunError` and its kinds: a run that must not go on as asked - non-finite values
  (:class:`NonFiniteError`), an output folder another process is writing (:class:`OutputDirBusyError`),
  a resumed run whose settings differ from the saved ones (:class:`SettingsChangedError`), a disk that filled
  up while writing (:class:`DiskFullError`).
"""

from __future__ import annotations


class RecipeError(ValueError):
    """A recipe that cannot be used: names the file and the field."""


class RunError(RuntimeError):
    """A training run that must stop (or must not start): the message says why and what to do."""


class NonFiniteError(RunError):
    """A NaN or infinity in a loss, a gradient or the weights: nothing non-finite reaches the weights or a save."""


class OutputDirBusyError(RunError):
    """Another live process is writing the same output_dir."""


class SettingsChangedError(RunError):
    """A run resumed (or a self-play folder rerun) with settings other than those it was started with."""


class DiskFullError(RunError):
    """A write failed for lack of space (or another OS error): the partial files are removed."""
