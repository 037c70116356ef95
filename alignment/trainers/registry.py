"""The method registry: a method is one module that registers itself once.

A method module (``alignment/trainers/<name>.py``, or any module named by an ``alignment.methods`` entry
point of an installed package) defines its config class and its trainer class and decorates the trainer::

    @register(
        "dpo",
        config=DPOConfig,
        loss=dpo_loss,
        paper="Direct Preference Optimization (Rafailov et al. 2023)",
        arxiv="2305.18290",
        anchors=("ref",),
        recipe="quickstart/dpo.yaml",
    )
    class DPOTrainer(PreferenceTrainer):
        def pair_losses(self, chunk, anchors, token_scale): ...

Everything else reads the registry: the CLI's method list and the recipe's ``method:`` field, the top-level
exports (``alignment.DPOTrainer``, ``alignment.DPOConfig``), the model card (method, paper, the config's own
hyperparameters), the banner, and the trainer test matrix. ``anchors`` declares the frozen policies the
loss compares against (``()``: none, as SFT; ``("ref",)``: the reference policy; INPO adds ``"prev"``);
it is never inferred from the config's fields.

Built-in methods are the modules of this package: :func:`methods` imports each of them once (importing a
module that registers nothing is harmless), then the ``alignment.methods`` entry points.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass

ENTRY_POINT_GROUP = "alignment.methods"


@dataclass(frozen=True)
class Method:
    """What a registered method declares.

    name: the recipe's ``method:`` value and the CLI's name. trainer / config: its classes. loss: the pure
    loss function it calls (alignment.losses). paper / arxiv: shown in the banner and the model card.
    anchors: the named frozen policies its loss needs. recipe: its quickstart recipe, relative to the
    repository's ``recipes/`` folder. summary: one line for ``alignment methods``.

    Hooks of ``alignment train`` (None: the default): build(script, model_args, config, run_info) -> trainer,
    for a method that makes its own model or data (the default loads the recipe's model and datasets);
    after_training(trainer, output_dir) -> dict, an evaluation of the saved run for its summary (the default
    is the recipe's ``eval_task``).
    """

    name: str
    trainer: type
    config: type
    loss: Callable | None
    paper: str
    arxiv: str | None
    anchors: tuple[str, ...]
    recipe: str | None
    summary: str
    build: Callable | None = None
    after_training: Callable | None = None

    @property
    def needs_reference(self) -> bool:
        return bool(self.anchors)

    def describe(self) -> str:
        """'dpo (Direct Preference Optimization (Rafailov et al. 2023), arXiv 2305.18290)'."""
        return f"{self.name} ({self.paper}" + (f", arXiv {self.arxiv})" if self.arxiv else ")")


_REGISTRY: dict[str, Method] = {}
_discovered = False


def register(
    name: str,
    *,
    config: type,
    paper: str,
    loss: Callable | None = None,
    arxiv: str | None = None,
    anchors: tuple[str, ...] = (),
    recipe: str | None = None,
    summary: str = "",
    build: Callable | None = None,
    after_training: Callable | None = None,
):
    """Class decorator: register the decorated trainer as method ``name`` and set ``trainer.method``."""
    from alignment.configs import AlignmentConfig

    if not name or not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"a method name is letters, digits, '-' and '_', got {name!r}")
    if not (isinstance(config, type) and issubclass(config, AlignmentConfig)):
        raise TypeError(f"method {name!r}: config must be a subclass of AlignmentConfig, got {config!r}")

    def decorate(trainer: type) -> type:
        existing = _REGISTRY.get(name)
        if existing is not None and existing.trainer.__qualname__ != trainer.__qualname__:
            raise ValueError(f"method {name!r} is already registered by {existing.trainer.__qualname__}")
        method = Method(name, trainer, config, loss, paper, arxiv, tuple(anchors), recipe, summary or paper, build,
                        after_training)  # fmt: skip
        _REGISTRY[name] = method
        trainer.method = method
        return trainer

    return decorate


def unregister(name: str) -> None:
    """Remove a method (tests that register a toy method clean up with this)."""
    _REGISTRY.pop(name, None)


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    import alignment.trainers.builtin as package

    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{info.name}")
    from importlib.metadata import entry_points

    for entry in entry_points(group=ENTRY_POINT_GROUP):
        entry.load()


def methods() -> dict[str, Method]:
    """Every registered method by name (built-in ones first, in module order)."""
    _discover()
    return dict(_REGISTRY)


def get_method(name: str) -> Method:
    """The method registered as ``name``; a ValueError lists the known ones."""
    known = methods()
    if name not in known:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(known)}")
    return known[name]


def exported() -> dict[str, type]:
    """Every method's trainer and config class by class name (the lazy top-level exports)."""
    out: dict[str, type] = {}
    for method in methods().values():
        out[method.trainer.__name__] = method.trainer
        out[method.config.__name__] = method.config
    return out
