"""Trainers: PreferenceTrainer (transformers.Trainer) and one thin subclass per method."""

from alignment.trainers.base import PreferenceTrainer
from alignment.trainers.dpo import DPOTrainer
from alignment.trainers.rpo import RPOTrainer
from alignment.trainers.sft import SFTTrainer

TRAINERS = {"sft": SFTTrainer, "dpo": DPOTrainer, "rpo": RPOTrainer}

__all__ = ["TRAINERS", "DPOTrainer", "PreferenceTrainer", "RPOTrainer", "SFTTrainer"]
