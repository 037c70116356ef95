"""A run is one set of settings: every checkpoint carries the settings it was trained with
(``checkpoint-N/alignment_settings.json``), and a resume with other ones - another ``beta``, learning rate,
method field, dataset or model - stops with one line listing the differences. ``allow_changed_settings: true``
continues deliberately; the changes are then logged and recorded in the run (``alignment_run.json``:
``setting_changes``). A self-play folder keeps its loop's settings the same way (``self_play_settings.json``).

What may change on a resume without the flag (FREE, FREE_PREFIXES) is what does not change the training: where
and how often files and logs are written and pushed, evaluation and diagnostics, the device. Everything else
is compared, so a new field is compared unless it is added here.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from alignment.errors import SettingsChangedError
from alignment.io import atomic_write_text
from alignment.secrets import redact

logger = logging.getLogger("alignment")

SETTINGS_FILE = "alignment_settings.json"
FREE = {
    "output_dir", "resume_from_checkpoint", "overwrite_output_dir", "allow_changed_settings", "report_to", "run_name",
    "push_to_hub", "disable_tqdm", "use_cpu", "ref_cache_dir", "precompute_ref_batch_size", "report", "eval_task",
    "eval_prompts", "per_device_eval_batch_size", "do_eval", "do_predict", "do_train", "local_rank", "log_level",
    "log_level_replica", "log_on_each_node", "skip_memory_metrics", "project", "batch_eval_metrics",
    "prediction_loss_only", "include_for_metrics", "dataset_num_proc", "load_best_model_at_end",
    "metric_for_best_model", "greater_is_better", "loop_eval_prompts", "iterations",
}  # fmt: skip
FREE_PREFIXES = ("hub_", "logging_", "save_", "eval_", "diagnostics", "dataloader_", "ddp_", "trackio_")


def _free(name: str) -> bool:
    return name in FREE or name.startswith(FREE_PREFIXES)


def comparable(settings: dict) -> dict:
    """The JSON form of ``settings`` (secrets masked) less the fields that may change."""
    plain = json.loads(json.dumps(redact(settings), default=str))
    return {k: v for k, v in plain.items() if not _free(k)}


def differences(saved: dict, current: dict) -> list[str]:
    """``name: old -> new`` for every compared setting that differs (one missing on either side included)."""
    a, b = comparable(saved), comparable(current)
    return [f"{k}: {_short(a.get(k))} -> {_short(b.get(k))}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def _short(value) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 120 else text[:117] + "..."


def write_settings(folder: str | Path, settings: dict, name: str = SETTINGS_FILE) -> None:
    atomic_write_text(Path(folder) / name, json.dumps(json.loads(json.dumps(redact(settings), default=str)), indent=1))


def read_settings(folder: str | Path, name: str = SETTINGS_FILE) -> dict | None:
    """The settings saved in ``folder`` (None when there are none: a checkpoint from an older version, or a
    file that cannot be read, named in a warning)."""
    path = Path(folder) / name
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return data
    except (OSError, ValueError) as e:
        logger.warning("%s: unreadable settings (%s); the settings are not compared", path, str(e)[:120])
        return None


def check_same(saved: dict | None, current: dict, where: str, allow: bool) -> list[str]:
    """The differences between the saved and the current settings (empty when there is nothing saved); an error
    listing them unless ``allow``, in which case they are logged and returned (to be recorded)."""
    if saved is None:
        return []
    changed = differences(saved, current)
    if changed and not allow:
        raise SettingsChangedError(
            f"{where} was started with other settings ({'; '.join(changed)}): rerun with the same ones, use "
            "another output_dir, or pass --allow_changed_settings true to continue with the new ones (recorded)"
        )
    if changed:
        logger.warning("%s: continuing with changed settings (allow_changed_settings): %s", where, "; ".join(changed))
    return changed
