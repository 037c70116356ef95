"""Runs trl's DPO test file (tests/test_dpo_trainer.py, not in this repository: see README.md) against trl's
DPOTrainer or, with ALIGNMENT_TRL_SUITE=alignment, against alignment's, on the local stand-ins of build_standins.py."""

import os
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
for key, value in {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "OMP_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HOME": str(HERE / "runs" / "hf_home"),
}.items():
    os.environ.setdefault(key, value)

if not (HERE / "trl-internal-testing").is_dir():
    raise SystemExit(f"{HERE}: run `python build_standins.py` first (it writes the local stand-ins)")

import torch  # noqa: E402
import trl  # noqa: E402


def on_this_machine(config_class):
    """trl's DPOConfig defaults to bf16, which TrainingArguments refuses without a GPU unless use_cpu is set (trl's
    CI has GPUs). Without CUDA both trainers get use_cpu=True and bf16=False, nothing else changed."""

    class Config(config_class):
        def __post_init__(self):
            if not torch.cuda.is_available():
                self.use_cpu, self.bf16 = True, False
            super().__post_init__()

    Config.__name__ = Config.__qualname__ = config_class.__name__
    return Config


if os.environ.get("ALIGNMENT_TRL_SUITE") == "alignment":
    import alignment

    DPOConfig = on_this_machine(alignment.DPOConfig)  # a module attribute, so that saved arguments unpickle
    trl.DPOConfig, trl.DPOTrainer = DPOConfig, alignment.DPOTrainer
else:
    import trl.trainer.dpo_trainer

    DPOConfig = on_this_machine(trl.DPOConfig)
    trl.DPOConfig = trl.trainer.dpo_trainer.DPOConfig = DPOConfig  # the second: the trainer's default arguments


@pytest.fixture(autouse=True)
def _in_the_stand_in_folder(monkeypatch):
    """The test file names models and datasets by Hub id; relative to this folder each id is a local stand-in."""
    monkeypatch.chdir(HERE)
