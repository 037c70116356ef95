"""What the console shows while a trainer runs: one compact line per log (step, loss, the method's two or three
key metrics, steps per second) instead of transformers' dict of every metric (about 1,500 characters a line
here), and every full record appended to ``output_dir/train_log.jsonl`` as it is logged (the ``report_to``
backends get the full record too: they are separate callbacks).

    step 40/282  loss 0.5123  rewards/margins 0.412  rewards/accuracies 0.781  5.2 it/s
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from transformers.trainer_callback import PrinterCallback, ProgressCallback

LOG_FILE = "train_log.jsonl"


def _number(value) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if value == 0 or not math.isfinite(value):
        return str(value)
    return f"{value:.4g}" if abs(value) >= 1e-3 else f"{value:.2e}"


def compact_line(logs: dict, keys: tuple[str, ...], step: int, max_steps: int, rate: float | None) -> str:
    """One line for one log record: training, evaluation or the run's summary."""
    if "train_runtime" in logs:
        parts = [
            f"done: {step} steps in {logs['train_runtime']:.1f} s",
            f"train loss {_number(logs.get('train_loss'))}",
        ]
        return "  ".join(parts)
    if any(k.startswith("eval_") for k in logs):  # eval_loss, or eval_<split>_loss for a dict of eval sets
        shown = [k for k in logs if k.startswith("eval_") and (k.endswith("_loss") or k.split("_", 2)[-1] in keys)]
        return f"eval at step {step}  " + "  ".join(f"{k} {_number(logs[k])}" for k in shown)
    parts = [f"step {step}/{max_steps}"]
    if "loss" in logs:
        parts.append(f"loss {_number(logs['loss'])}")
    parts += [f"{k} {_number(logs[k])}" for k in keys if k in logs]
    if rate is not None:
        parts.append(f"{rate:.2f} it/s")
    return "  ".join(parts)


class _Compact:
    """What both console callbacks share: the keys, the log file, the rate between two logs."""

    def _setup(self, keys: tuple[str, ...], output_dir: str):
        self.keys, self.path = tuple(keys), Path(output_dir) / LOG_FILE
        self._last = None

    def _line(self, args, state, logs: dict) -> str:
        now = time.perf_counter()
        rate = None
        if self._last is not None and state.global_step > self._last[0]:
            rate = (state.global_step - self._last[0]) / max(now - self._last[1], 1e-9)
        if "loss" in logs:
            self._last = (state.global_step, now)
        return compact_line(logs, self.keys, state.global_step, state.max_steps, rate)

    def _record(self, state, logs: dict) -> None:
        if not state.is_world_process_zero:
            return
        record = {"step": state.global_step, **{k: v for k, v in logs.items() if k != "total_flos"}}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:  # one line per log; a crash loses at most the last
            f.write(json.dumps(record, default=str) + "\n")

    def _begin(self, state) -> None:
        if state.is_world_process_zero and state.global_step == 0 and self.path.exists():
            self.path.unlink()  # a new run starts a new file (a resumed one appends)
        self._last = (state.global_step, time.perf_counter())


class CompactProgress(_Compact, ProgressCallback):
    """transformers' progress bar, with one compact line per log written above it."""

    def __init__(self, keys: tuple[str, ...], output_dir: str):
        super().__init__()
        self._setup(keys, output_dir)

    def on_train_begin(self, args, state, control, **kwargs):
        self._begin(state)
        return super().on_train_begin(args, state, control, **kwargs)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        self._record(state, logs)
        if state.is_world_process_zero and self.training_bar is not None:
            self.training_bar.write(self._line(args, state, logs))


class CompactPrinter(_Compact, PrinterCallback):
    """``disable_tqdm``: the same compact line, printed."""

    def __init__(self, keys: tuple[str, ...], output_dir: str):
        super().__init__()
        self._setup(keys, output_dir)

    def on_train_begin(self, args, state, control, **kwargs):
        self._begin(state)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        self._record(state, logs)
        if state.is_local_process_zero:
            print(self._line(args, state, logs))


def use_compact_console(trainer, keys: tuple[str, ...]) -> None:
    """Swap the trainer's console callback (progress bar or printer) for its compact twin."""
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(CompactProgress(keys, trainer.args.output_dir))
    elif trainer.pop_callback(PrinterCallback) is not None:
        trainer.add_callback(CompactPrinter(keys, trainer.args.output_dir))


CPU_NOTICE = "Setting accelerator to CPU"


class _DropCpuNotice:
    """A logging filter: DeepSpeed's start-up notice that it found no GPU, on a run that uses the CPU anyway."""

    def filter(self, record) -> bool:
        return not record.getMessage().startswith(CPU_NOTICE)


def quiet_deepspeed_cpu_notice(use_cpu: bool) -> None:
    """DeepSpeed, when installed, is imported by accelerate as the Trainer starts and warns on a machine without a
    GPU "Setting accelerator to CPU. If you have GPU ... we were unable to detect it."; the banner already says the
    run is on the CPU, so on such a run (``use_cpu`` or no CUDA device) the notice is dropped. Idempotent."""
    import logging

    import torch

    if not use_cpu and torch.cuda.is_available():
        return
    ds_logger = logging.getLogger("DeepSpeed")  # the logger deepspeed.utils.logging creates; filters survive that
    if not any(isinstance(f, _DropCpuNotice) for f in ds_logger.filters):
        ds_logger.addFilter(_DropCpuNotice())
