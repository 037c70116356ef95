"""Checkpoints of a run: which one ``--resume_from_checkpoint true`` continues from.

The Trainer writes ``checkpoint-N/trainer_state.json`` last, after the weights, optimizer, scheduler and RNG
states: a folder without it is a save that did not finish (a process killed mid-save) and is skipped with a
warning, so the previous complete checkpoint is the latest valid one.
"""

from __future__ import annotations

import logging
from pathlib import Path

from transformers import TrainerCallback

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


def resume_target(value, output_dir: str | Path) -> str | None:
    """``--resume_from_checkpoint``: None (start fresh), a checkpoint folder, or true (the latest valid one in
    output_dir). A folder that does not exist, or true without a valid checkpoint, is an error."""
    from alignment.recipes import RecipeError

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
    """A TrainerCallback: on SIGTERM (a cluster's preemption, ``kill``), finish the current optimizer step,
    save a checkpoint and stop; ``alignment train`` then exits cleanly, naming the checkpoint to resume from.
    Under several processes the request is shared (all-reduced) so that every process saves at one step."""

    def __init__(self):
        self.requested = False
        self.stopped_at: int | None = None
        self._previous = None

    def _handler(self, signum, frame):
        self.requested = True
        logger.warning("SIGTERM: saving a checkpoint after this step, then stopping")

    def on_train_begin(self, args, state, control, **kwargs):
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handler)

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

        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None
