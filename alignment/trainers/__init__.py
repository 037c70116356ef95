"""Trainers: AlignmentTrainer (transformers.Trainer), PreferenceTrainer, and one registered module per method.

``alignment.trainers.DPOTrainer`` and the other method classes resolve through the method registry
(alignment.trainers.registry), so adding a method never edits this file.
"""

from alignment.trainers.base import AlignmentTrainer, RunInfo
from alignment.trainers.preference import PreferenceTrainer
from alignment.trainers.registry import Method, get_method, methods, register


def __getattr__(name):
    if name.startswith("__"):  # import machinery probes (__path__, ...): never the registry
        raise AttributeError(name)
    from alignment.trainers.registry import exported

    if name == "TRAINERS":  # {method name: trainer class}
        return {n: m.trainer for n, m in methods().items()}
    found = exported().get(name)
    if found is None:
        raise AttributeError(f"module 'alignment.trainers' has no attribute {name!r}")
    return found


__all__ = ["AlignmentTrainer", "Method", "PreferenceTrainer", "RunInfo", "get_method", "methods", "register"]
