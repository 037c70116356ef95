"""What a trainer checks when it resumes: the settings a checkpoint was trained with (compared by
alignment.run_settings), and what to do with a checkpoint saved at the last step of its run.

A resume from such a checkpoint trains nothing: its weights and state are loaded and are the result. (The
Trainer would run one step past ``max_steps``, or record a ``train_loss`` of 0.0 for zero steps of an
epoch-based run.) Under DeepSpeed or FSDP, whose engines restore their own state, the Trainer resumes it as
usual and only the empty ``train_loss`` is dropped.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from alignment.trainers.anchors import is_peft, unwrap_peft

logger = logging.getLogger("alignment")


def dataset_signature(dataset) -> dict | None:
    """A training dataset's identity for the run settings: its rows and a hash of its first 32 rows."""
    if dataset is None or not hasattr(dataset, "__len__"):
        return None
    head = dataset.select(range(min(32, len(dataset)))).to_list() if hasattr(dataset, "select") else []
    text = json.dumps(head, sort_keys=True, default=str)
    return {"rows": len(dataset), "head": hashlib.sha256(text.encode()).hexdigest()[:16]}


def run_settings(trainer) -> dict:
    """What makes a run this run: the method, the model, the data and every config field (compared on a resume;
    alignment.run_settings says which fields may change)."""
    peft = next(iter(unwrap_peft(trainer.model).peft_config.values()), None) if is_peft(trainer.model) else None
    return {
        "method": trainer.method.name,
        "model": trainer.model_id,
        "datasets": list(trainer.run_info.datasets),
        "train_rows": dataset_signature(trainer.train_dataset),
        "peft": None if peft is None else peft.to_dict(),
        **trainer.args.to_dict(),
    }


def at_the_end(trainer, folder) -> bool:
    """The checkpoint was saved at the last step of its run (``global_step == max_steps``)."""
    if trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled:
        return False
    state = json.loads((Path(folder) / "trainer_state.json").read_text())
    return 0 < state.get("max_steps", 0) <= state.get("global_step", -1)


def finish_from(trainer, folder):
    """Load a finished checkpoint's weights and state instead of training; a TrainOutput without a loss."""
    from transformers.trainer_callback import TrainerState
    from transformers.trainer_utils import TrainOutput

    trainer._load_from_checkpoint(str(folder))
    trainer.state = TrainerState.load_from_json(str(Path(folder) / "trainer_state.json"))
    logger.warning("%s is the end of its training (step %d of %d): nothing was left to train; its weights are the "
                   "result", folder, trainer.state.global_step, trainer.state.max_steps)  # fmt: skip
    return TrainOutput(trainer.state.global_step, None, {})


def drop_empty_train_loss(trainer, result) -> None:
    """A train() that ran no step reports a train_loss of 0.0 (its mean over zero steps): dropped, with a
    warning."""
    logger.warning("the checkpoint is at step %d already (max_steps): nothing was left to train",
                   trainer.state.global_step)  # fmt: skip
    result.metrics.pop("train_loss", None)
    if trainer.state.log_history and "train_runtime" in trainer.state.log_history[-1]:
        trainer.state.log_history[-1].pop("train_loss", None)
