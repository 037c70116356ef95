"""Load a causal LM and its tokenizer (one place, one error): :func:`load_model` and :func:`load_tokenizer` take
a local folder or a Hub name (a model object passes through :func:`load_model` unchanged). A name that is
neither an existing folder nor a model the Hub serves raises :class:`ModelNotFoundError` (a
``FileNotFoundError``; the CLI prints it as one line). :func:`unwrap` finds the transformers model inside
DeepSpeed / DDP / PEFT wrappers. Running a model's backbone with the fused op on its LM head: alignment.heads.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn


class ModelNotFoundError(FileNotFoundError):
    """A model or tokenizer that is neither a local folder nor a model the Hub serves."""


class RemoteCodeError(ModelNotFoundError, ValueError):
    """A model folder that ships its own Python code, loaded without ``trust_remote_code``: a ValueError as
    transformers and trl raise it (its message says "custom code"), and one line in the CLI."""


def _looks_local(name: str) -> bool:
    """A path, not a Hub name: explicit, nested, a file, or under a folder that exists here (``data/x``)."""
    parts = Path(name).parts
    return (
        name.startswith((".", "/", "~"))
        or name.count("/") > 1
        or Path(name).suffix in (".json", ".bin")
        or (len(parts) > 1 and Path(parts[0]).is_dir())
    )


def _from_pretrained(loader: Callable, name: str, what: str, **kwargs):
    """``loader(name, **kwargs)`` with the one error for a missing folder or an unknown Hub name."""
    name = str(name)
    if not Path(name).exists() and _looks_local(name):
        raise ModelNotFoundError(f"{name}: no such {what} folder")
    from safetensors import SafetensorError

    try:
        return loader(name, **kwargs)
    except (OSError, ValueError, SafetensorError) as e:  # a missing file, a bad config, truncated weights
        if isinstance(e, SafetensorError):
            raise ModelNotFoundError(f"{name}: the {what}'s weights cannot be read (a truncated or corrupt "
                                     f".safetensors file: {str(e).splitlines()[0]})") from None  # fmt: skip
        if "custom code" in str(e) and not kwargs.get("trust_remote_code"):
            raise RemoteCodeError(f"{name}: the {what} ships its own Python code (custom code); set trust_remote_code: "
                                  "true (trust_remote_code=True) to run it, if you trust it") from None  # fmt: skip
        if Path(name).exists():
            raise ModelNotFoundError(f"{name}: not a {what} folder ({str(e).splitlines()[0]})") from None
        raise ModelNotFoundError(
            f"{name}: no such {what} folder, and the Hugging Face Hub has no {what} of that name or cannot be "
            f"reached ({str(e).splitlines()[0]})"
        ) from None


#: the heads :func:`load_model` builds: a causal LM (every policy) or a one-output sequence classifier (a reward model)
HEADS = ("causal_lm", "reward")


def auto_class(head: str):
    """The transformers Auto class of ``head`` (one of :data:`HEADS`)."""
    import transformers

    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    return transformers.AutoModelForCausalLM if head == "causal_lm" else transformers.AutoModelForSequenceClassification


def load_model(
    model: str | nn.Module,
    dtype: str | torch.dtype = "float32",
    trust_remote_code: bool = False,
    init_from_config: str | None = None,
    head: str = "causal_lm",
    **from_pretrained_kwargs,
) -> nn.Module:
    """A causal LM from a folder or Hub name (a module passes through unchanged). ``dtype``: a torch dtype or
    its name, or "auto" (``torch_dtype``, the older name, too). ``init_from_config``: a JSON model config, to
    build a randomly initialised model instead (the quickstart's SFT model is trained from scratch this way).
    ``head="reward"``: the same backbone with a one-output linear head (``AutoModelForSequenceClassification``,
    ``num_labels=1``; from a causal LM's folder the head is new, the LM head is left out). Other keyword arguments
    go to ``from_pretrained`` (attn_implementation, device_map, revision, ...)."""
    from transformers import AutoConfig

    auto = auto_class(head)
    if isinstance(model, nn.Module):
        return model
    if head == "reward":
        from_pretrained_kwargs["num_labels"] = 1
    if init_from_config:
        import json

        try:
            config = AutoConfig.for_model(**json.loads(Path(init_from_config).read_text()))
        except (OSError, ValueError, TypeError) as e:
            raise ModelNotFoundError(
                f"{init_from_config}: not a JSON model config ({str(e).splitlines()[0]})"
            ) from None
        if head == "reward":
            config.num_labels = 1
        return auto.from_config(config)
    dtype = from_pretrained_kwargs.pop("torch_dtype", dtype)
    torch_dtype = getattr(torch, dtype, None) if isinstance(dtype, str) and dtype != "auto" else dtype
    if not (torch_dtype == "auto" or isinstance(torch_dtype, torch.dtype)):
        raise ValueError(f"dtype must be a torch dtype, its name or 'auto', got {dtype!r}")
    with _quiet_new_head(head):
        return _from_pretrained(
            auto.from_pretrained, model, "model", dtype=torch_dtype, trust_remote_code=trust_remote_code,
            **from_pretrained_kwargs,
        )  # fmt: skip


def _quiet_new_head(head: str):
    """A reward model loaded from a causal LM reports its new ``score`` head as missing and the unused ``lm_head``
    as unexpected: expected here (the head is what training fits), so transformers' load report is silenced."""
    import contextlib

    if head != "reward":
        return contextlib.nullcontext()
    from transformers.utils import logging as hf_logging

    @contextlib.contextmanager
    def quiet():
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            yield
        finally:
            hf_logging.set_verbosity(verbosity)

    return quiet()


def load_tokenizer(name: str, trust_remote_code: bool = False):
    """The tokenizer of a folder or Hub name, with a pad token (the EOS token when it has none)."""
    from transformers import AutoTokenizer

    tokenizer = _from_pretrained(AutoTokenizer.from_pretrained, name, "tokenizer", trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def model_name(model) -> str | None:
    """The path or Hub name a model (or its name) came from, when known."""
    if isinstance(model, str):
        return model
    return getattr(getattr(unwrap(model), "config", None), "_name_or_path", None) or None


def unwrap(model: nn.Module) -> nn.Module:
    """The transformers model inside DeepSpeed / DDP / PEFT wrappers."""
    while True:
        if hasattr(model, "get_base_model") and callable(model.get_base_model):  # PeftModel
            model = model.get_base_model()
        elif hasattr(model, "module") and isinstance(model.module, nn.Module):  # DDP, DeepSpeedEngine
            model = model.module
        else:
            return model


#: the shipped copies of the configs of the Hub models the recipes train (benchmarks/model_configs): the planner
#: needs only a model's shapes, so a machine without the Hub still plans these recipes
SHIPPED_CONFIGS = {
    "meta-llama/Meta-Llama-3-8B-Instruct": "llama-3-8b.json",
    "meta-llama/Meta-Llama-3-8B": "llama-3-8b.json",
    "meta-llama/Llama-3.1-8B-Instruct": "llama-3-8b.json",  # the same shapes (its rope scaling adds no memory)
    "meta-llama/Meta-Llama-3-70B-Instruct": "llama-3-70b.json",
    "Qwen/Qwen2.5-7B-Instruct": "qwen2.5-7b.json",
}
CONFIGS_DIR = Path(__file__).resolve().parents[1] / "benchmarks" / "model_configs"


def config_only(script, trust_remote_code: bool = False):
    """The model's config without its weights: ``init_from_config`` (JSON) or the model folder's config.json
    (a Hub name works where the Hub or its cache is reachable; for the recipes' Hub models a shipped copy is read
    when it is not, with a log line saying so)."""
    import json

    from transformers import AutoConfig

    from alignment.errors import RecipeError

    if script.init_from_config:
        return AutoConfig.for_model(**json.loads(Path(script.init_from_config).read_text()))
    try:
        return AutoConfig.from_pretrained(script.model_name_or_path, trust_remote_code=trust_remote_code)
    except OSError as e:
        shipped = SHIPPED_CONFIGS.get(str(script.model_name_or_path))
        if shipped and (CONFIGS_DIR / shipped).exists():
            import logging

            logging.getLogger(__name__).warning(
                "%s: the Hub is not reachable; planning from the shipped copy of its config (%s)",
                script.model_name_or_path,
                CONFIGS_DIR / shipped,
            )
            return AutoConfig.for_model(**json.loads((CONFIGS_DIR / shipped).read_text()))
        raise RecipeError(
            f"{script.model_name_or_path}: no model config to plan from ({str(e).splitlines()[0]}); give one with "
            "--init_from_config CONFIG.json"
        ) from None
