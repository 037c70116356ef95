"""alignment: preference alignment for Hugging Face language models."""

__version__ = "0.1.0"

_LAZY = {
    "AlignmentTrainer": "alignment.trainers",
    "PreferenceTrainer": "alignment.trainers",
    "RunInfo": "alignment.trainers",
    "AlignmentConfig": "alignment.configs",
    "PreferenceConfig": "alignment.configs",
    "register": "alignment.trainers.registry",
    "methods": "alignment.trainers.registry",
    "get_method": "alignment.trainers.registry",
    "token_logps": "alignment.ops",
    "pair_fused_loss": "alignment.ops",
    "RegretLearner": "alignment.learners.regret_learner",
}


def _method_exports() -> dict:
    from alignment.trainers.registry import exported

    return exported()


def __getattr__(name):
    """Lazy top-level exports so that ``import alignment`` stays light: the library's own names, and every
    registered method's trainer and config (``alignment.DPOTrainer``, ``alignment.DPOConfig``, ...)."""
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name == "__all__":
        return [*_LAZY, *_method_exports(), "__version__"]
    if not name.startswith("__"):
        found = _method_exports().get(name)
        if found is not None:
            return found
    raise AttributeError(f"module 'alignment' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_LAZY, *_method_exports()])
