"""Checkpoints of a run: which one ``--resume_from_checkpoint true`` continues from.

The Trainer writes ``checkpoint-N/trainer_state.json`` last, after the weights, optimizer, scheduler and RNG
states: a folder without it is a save that did not finish (a process killed mid-save) and is skipped with a
warning, so the previous complete checkpoint is the latest valid one.
"""

from __future__ import annotations

import logging
from pathlib import Path

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
