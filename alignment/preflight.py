"""Checks of a recipe's values that need more than their field (the environment, the model's config, the launch, the
file system), made before a model is loaded or a row tokenized, each a one-line error naming the field and the fix.

- :func:`check_recipe` (``load_recipe``, for ``alignment train`` and ``alignment plan`` alike): the environment's
  kernel settings, a run with no step to take, sequence parallelism, tiling and the LoRA rank against the model's
  config.
- :func:`check_launch` (``alignment train`` only): what the launch must provide (DeepSpeed for sequence
  parallelism, a device for the Triton backend) and an output folder that can be written.

The trainers raise the same errors when they are built from Python.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from alignment.errors import RecipeError, UnavailableError


def check_recipe(path, method_name: str, script, config, model_args=None) -> None:
    where = f"{path}: "
    model_config = functools.cache(lambda: _readable_model_config(script, config))  # read once, when a check asks
    try:
        _check_environment()
        check_steps(config)
        _check_long_context(method_name, config, model_config)
        if model_args is not None and model_args.use_peft:
            check_lora_rank(model_args.lora_r, model_config())
    except RecipeError as e:
        raise type(e)(where + str(e)) from None


def check_launch(config) -> None:
    """What a training launch must provide, before anything loads."""
    if getattr(config, "sequence_parallel_size", 1) > 1:
        from alignment.long_context.sequence_parallel import check_deepspeed_launch

        check_deepspeed_launch(config)
    check_triton(config)
    if getattr(config, "use_vllm", False):  # online DPO's sampler: the trainer's own check, before anything loads
        from alignment.trainers.builtin.online_vllm import check_vllm_available

        check_vllm_available()
    check_writable(config.output_dir, "output_dir")


def _check_environment() -> None:
    """The kernel's settings from the environment (or the recipe's ``env:``), read as the kernel reads them."""
    from alignment.ops.backend import requested
    from alignment.ops.options import default_budget

    default_budget()
    requested(None)


def check_steps(config) -> None:
    """A run that would take no optimizer step is refused (``max_steps 0``, or no epochs)."""
    max_steps = getattr(config, "max_steps", -1)
    if max_steps == 0:
        raise RecipeError("field 'max_steps' is 0: the run would take no step; set max_steps >= 1, or -1 to train "
                          "num_train_epochs")  # fmt: skip
    if max_steps < 0 and not getattr(config, "num_train_epochs", 1) > 0:
        raise RecipeError(f"field 'num_train_epochs' is {config.num_train_epochs}: the run would take no step; set "
                          "num_train_epochs > 0 or max_steps >= 1")  # fmt: skip


def _check_long_context(method_name: str, config, read_model_config) -> None:
    size = getattr(config, "sequence_parallel_size", 1)
    tiled = getattr(config, "tiled_mlp", False) or getattr(config, "tiled_norms", False)
    if size <= 1 and not tiled:
        return
    from alignment.long_context.sequence_parallel import check_method
    from alignment.trainers import get_method

    check_method(get_method(method_name).trainer.supports_sequence_parallel, method_name, size)
    model_config = read_model_config()
    if model_config is None:  # a Hub model offline: the trainer checks it once the model is there
        return
    if size > 1:
        from alignment.long_context.sequence_parallel import check_heads

        check_heads(model_config, size)
    if tiled:
        check_tileable(model_config, config)


def check_lora_rank(rank: int, model_config) -> None:
    """A LoRA rank above the model's hidden size adds nothing (the update of a layer has rank <= min(in, out)) and
    allocates rank x width matrices per layer: lora_r 1e12 ended in torch's allocator after the model loaded."""
    hidden = getattr(model_config, "hidden_size", None) if model_config is not None else None
    if isinstance(hidden, int) and rank > hidden:
        raise RecipeError(f"field 'lora_r' is {rank}, above the model's hidden size {hidden}: a layer's update has "
                          f"rank <= min(in, out); use lora_r <= {hidden} (8 to 256 is usual)")  # fmt: skip


def _readable_model_config(script, config):
    try:
        from alignment.models import config_only

        return config_only(script, getattr(config, "trust_remote_code", False))
    except Exception:  # unreadable here (no network): left to the trainer
        return None


def check_tileable(model_config, config) -> None:
    """tiled_mlp / tiled_norms: DeepSpeed's TiledMLP is installed and the model has modules to tile (the model built
    on the meta device: no memory)."""
    import importlib.util

    import torch

    from alignment.long_context.tiling import MLP, NORMS, mlp_modules
    from alignment.models import auto_class

    if importlib.util.find_spec("deepspeed") is None:
        raise UnavailableError("tiled_mlp / tiled_norms use DeepSpeed's TiledMLP: pip install 'alignment[deepspeed]'")
    kinds = (MLP if config.tiled_mlp else ()) + (NORMS if config.tiled_norms else ())
    try:
        with torch.device("meta"):
            model = auto_class("causal_lm").from_config(model_config)
    except Exception:  # a model class this check cannot build: the trainer checks the real one
        return
    if not mlp_modules(model, kinds):
        names = " or ".join(f"*{k}" for k in kinds)
        raise RecipeError(f"tiled_mlp / tiled_norms: {type(model).__name__} has no {names} to tile; set them false")


def check_triton(config) -> None:
    """kernel_backend triton (the recipe's or ALIGNMENT_KERNEL_BACKEND) where Triton cannot run: the kernel's own
    check (alignment.ops.backend.resolve), for the device the run will use."""
    import torch

    from alignment.ops.backend import resolve

    chosen = getattr(config, "kernel_backend", "auto")
    on_gpu = not getattr(config, "use_cpu", False) and torch.cuda.is_available()
    resolve(None if chosen == "auto" else chosen, torch.device("cuda" if on_gpu else "cpu"))  # as the trainer asks


def check_writable(folder, field: str) -> None:
    """``folder`` can be created and written: a file is made and removed in it, or in its nearest existing parent."""
    import tempfile

    target = Path(folder).expanduser().absolute()
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise RecipeError(f"{field} {existing} is a file, not a folder: choose another --{field}")
    try:
        handle, name = tempfile.mkstemp(dir=existing, prefix=".alignment-write-check-")
        os.close(handle)
        os.unlink(name)
    except OSError as e:
        raise RecipeError(f"field '{field}': {folder} cannot be written ({e.strerror} in {existing}): choose a "
                          "writable folder") from None  # fmt: skip
