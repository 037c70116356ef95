"""alignment: preference alignment for Hugging Face language models."""

__version__ = "0.1.0"

_LAZY = {
    "DPOTrainer": "alignment.trainers",
    "RPOTrainer": "alignment.trainers",
    "SFTTrainer": "alignment.trainers",
    "PreferenceTrainer": "alignment.trainers",
    "DPOConfig": "alignment.configs",
    "RPOConfig": "alignment.configs",
    "SFTConfig": "alignment.configs",
    "AlignmentConfig": "alignment.configs",
    "token_logps": "alignment.ops",
    "pair_fused_loss": "alignment.ops",
}


def __getattr__(name):
    """Lazy top-level exports (``alignment.DPOTrainer``) so that ``import alignment`` stays light."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'alignment' has no attribute {name!r}")


__all__ = [*_LAZY, "__version__"]
