"""Checkpoints of a run: written atomically, and which one ``--resume_from_checkpoint true`` continues from.

Every save goes to ``output_dir/.partial-checkpoints/checkpoint-N`` and is renamed to ``output_dir/checkpoint-N``
once complete (all processes done writing): a process killed mid-save (SIGKILL, a node lost) leaves only
the staging folder, and the previous ``checkpoint-N`` stays the latest valid one. Older checkpoints are
rotated (``save_total_limit``) only after the rename. A ``checkpoint-N`` without ``trainer_state.json``
(which the Trainer writes last; e.g. copied by hand, or from an older version) is skipped with a warning.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from transformers import TrainerCallback

from alignment.errors import DiskFullError
from alignment.io import fsync_folder, is_write_failure, write_failure_reason

logger = logging.getLogger("alignment")


def _step(folder: Path) -> int:
    try:
        return int(folder.name.rsplit("-", 1)[-1])
    except ValueError:
        return -1


def latest_valid_checkpoint(output_dir: str | Path) -> Path | None:
    """The highest-numbered ``checkpoint-N`` holding a trainer_state.json (None when there is none)."""
    folders = sorted((p for p in Path(output_dir).glob("checkpoint-*") if p.is_dir() and _step(p) >= 0), key=_step)
    for folder in reversed(folders):
        if (folder / "trainer_state.json").exists():
            return folder
        logger.warning("%s: an unfinished save (no trainer_state.json); skipped", folder)
    return None


STAGING = ".partial-checkpoints"


def save_atomically(trainer, save: Callable[[], None], trial=None) -> None:
    """Run the Trainer's ``save()`` of ``checkpoint-N`` into the staging folder, then rename it into
    ``output_dir`` (main process, after every process has written its part) and rotate old checkpoints."""
    run_dir = trainer._get_output_dir(trial=trial)
    staging = os.path.join(run_dir, STAGING)
    name = f"checkpoint-{trainer.state.global_step}"
    if trainer.args.should_save:
        shutil.rmtree(os.path.join(staging, name), ignore_errors=True)  # a killed save's leftovers
    trainer.accelerator.wait_for_everyone()
    trainer._get_output_dir = lambda trial=None: staging  # the Trainer builds <run_dir>/checkpoint-N from it
    pushes: list[str] = []  # the Trainer's push of the checkpoint uploads in the background: from its final place
    trainer._push_from_checkpoint = pushes.append
    try:
        save()
    except Exception as e:
        if not is_write_failure(e, staging):
            raise
        shutil.rmtree(os.path.join(staging, name), ignore_errors=True)  # nothing half-written stays, or is promoted
        with contextlib.suppress(OSError):
            os.rmdir(staging)
        latest = latest_valid_checkpoint(run_dir)
        raise DiskFullError(
            f"could not save {name} in {run_dir} ({write_failure_reason(e)}): the partial checkpoint was removed; "
            + (f"the latest complete one is {latest}" if latest else "no complete checkpoint exists yet")
        ) from None
    finally:
        del trainer._get_output_dir, trainer._push_from_checkpoint
    trainer.accelerator.wait_for_everyone()
    final = os.path.join(run_dir, name)
    if trainer.args.should_save:
        _promote(trainer, run_dir, os.path.join(staging, name), final)
        from transformers.trainer_utils import rotate_checkpoints

        rotate_checkpoints(run_dir, trainer.args.save_total_limit, trainer.state.best_model_checkpoint)
    trainer.accelerator.wait_for_everyone()
    if pushes:
        trainer._push_from_checkpoint(final)


def _promote(trainer, run_dir: str, staged: str, final: str) -> None:
    """Rename a complete staged checkpoint into place (replacing one of the same step, as a re-save at the
    end of training does), with its best-checkpoint path pointing into ``run_dir``."""
    state = trainer.state
    if state.best_global_step:
        best = os.path.join(run_dir, f"checkpoint-{state.best_global_step}")
        if os.path.exists(best) or os.path.abspath(best) == os.path.abspath(final):
            state.best_model_checkpoint = best
            state.save_to_json(os.path.join(staged, "trainer_state.json"))
    if os.path.exists(final):
        old = staged + ".replaced"
        os.replace(final, old)
        os.replace(staged, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staged, final)
    with contextlib.suppress(OSError):
        os.rmdir(os.path.dirname(staged))  # the staging folder, once empty


def save_final_model(trainer, output_dir: str) -> None:
    """``trainer.save_model(output_dir)`` through a staging folder (``output_dir/_partial-model``): the files
    move into place once all are written, so a full disk leaves the previous files (or none), never a truncated
    model.safetensors beside a complete config. A failed write is one line naming the folder."""
    staging = os.path.join(output_dir, "_partial-model")
    if trainer.args.should_save:
        shutil.rmtree(staging, ignore_errors=True)
    try:
        trainer.save_model(staging)
    except Exception as e:
        full = is_write_failure(e, staging)
        if trainer.args.should_save:
            shutil.rmtree(staging, ignore_errors=True)
        if not full:
            raise
        reason = write_failure_reason(e)
        raise DiskFullError(f"could not save the model in {output_dir} ({reason}): nothing was kept") from None
    trainer.accelerator.wait_for_everyone()
    if trainer.args.should_save:
        for name in sorted(os.listdir(staging)):
            target = os.path.join(output_dir, name)
            if os.path.isdir(target) and not os.path.islink(target):
                shutil.rmtree(target)  # a folder of an earlier save is replaced whole
            os.replace(os.path.join(staging, name), target)
        os.rmdir(staging)
        fsync_folder(output_dir)
    trainer.accelerator.wait_for_everyone()


def resume_target(value, output_dir: str | Path) -> str | None:
    """``--resume_from_checkpoint``: None (start fresh), a checkpoint folder, or true (the latest valid one in
    output_dir). A folder that does not exist, or true without a valid checkpoint, is an error."""
    from alignment.errors import RecipeError

    if value is None or value is False or str(value).lower() in ("false", "none", ""):
        return None
    if value is True or str(value).lower() == "true":
        found = latest_valid_checkpoint(output_dir)
        if found is None:
            raise RecipeError(f"--resume_from_checkpoint true: {output_dir} has no complete checkpoint-N folder")
        logger.warning("resuming from %s", found)
        return str(found)
    if not (Path(value) / "trainer_state.json").exists():
        raise RecipeError(f"--resume_from_checkpoint {value}: not a complete checkpoint (no trainer_state.json)")
    return str(value)


class SigtermCheckpoint(TrainerCallback):
    """A TrainerCallback: on SIGTERM (a cluster's preemption, ``kill``) or Ctrl-C (SIGINT), finish the current
    optimizer step, save a checkpoint and stop; ``alignment train`` then exits cleanly, naming the checkpoint to
    resume from. A second Ctrl-C stops at once (KeyboardInterrupt, which the command line reports in one line).
    Under several processes the request is shared (all-reduced) so that every process saves at one step."""

    SIGNALS = ("SIGTERM", "SIGINT")

    def __init__(self):
        self.requested = False
        self.signal_name = "SIGTERM"
        self.stopped_at: int | None = None
        self._previous: dict = {}

    def _handler(self, signum, frame):
        import signal

        name = signal.Signals(signum).name
        if self.requested and name == "SIGINT":  # the second Ctrl-C: now
            raise KeyboardInterrupt
        self.requested, self.signal_name = True, name
        more = " (Ctrl-C again to stop at once)" if name == "SIGINT" else ""
        logger.warning("%s: saving a checkpoint after this step, then stopping%s", name, more)

    def on_train_begin(self, args, state, control, **kwargs):
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                self._previous[name] = signal.signal(getattr(signal, name), self._handler)

    def _shared(self) -> bool:
        import torch
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return self.requested
        flag = torch.tensor([1.0 if self.requested else 0.0])
        if dist.get_backend() == "nccl":
            flag = flag.cuda()
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def on_step_end(self, args, state, control, **kwargs):
        if self._shared():
            control.should_save = True
            control.should_training_stop = True
            self.stopped_at = state.global_step

    def on_train_end(self, args, state, control, **kwargs):
        import signal

        for name, previous in self._previous.items():
            signal.signal(getattr(signal, name), previous)
        self._previous = {}
