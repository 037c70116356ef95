"""Recipes from elsewhere: the alignment-handbook's and TRL's recipe shapes, and fields that TRL and
transformers releases renamed or removed, mapped onto ours before a recipe is parsed. Every mapping logs
one WARNING line saying what the field became (README, "Recipes from elsewhere", lists them all).

- Dataset shapes: the handbook's ``dataset_mixture: {datasets: [{id, config, split, columns, weight}],
  test_split_size, seed}``, its older ``dataset_mixer: {id: weight}`` + ``dataset_splits``, and TRL's
  ``dataset_name`` / ``dataset_config`` / ``dataset_train_split`` / ``dataset_test_split``.
- Model fields: ``torch_dtype``, ``attn_implementation``, ``model_revision``, ``load_in_4bit`` /
  ``load_in_8bit`` (bitsandbytes on a CUDA device, else one clear error).
- Renamed or removed fields (``RENAMED``, ``SPECIAL``, ``IGNORED``).

``normalize(raw)`` returns the recipe with those fields replaced; it never drops a field silently.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

logger = logging.getLogger("alignment")

#: old name -> (new name, where the old one comes from)
RENAMED: dict[str, tuple[str, str]] = {
    "torch_dtype": ("dtype", "transformers 5 / alignment-handbook"),
    "evaluation_strategy": ("eval_strategy", "transformers 4.46"),
    "preprocessing_num_workers": ("dataset_num_proc", "alignment-handbook"),
    "no_cuda": ("use_cpu", "transformers 5"),
    "push_to_hub_token": ("hub_token", "transformers 5"),
    "gradient_checkpointing": ("activation_checkpointing", "transformers 5.2"),
    "gradient_checkpointing_kwargs": ("activation_checkpointing_kwargs", "transformers 5.2"),
}

#: fields that mean nothing here any more: old name -> (what happens instead, where it comes from)
IGNORED: dict[str, tuple[str, str]] = {
    "generate_during_eval": ("ignored: use a callback (or `alignment report`) to look at generations", "TRL 0.29"),
    "ref_model_init_kwargs": ("ignored: the reference is loaded like the model (model_init_kwargs)", "TRL 0.29"),
    "model_adapter_name": ("ignored: the default adapter is trained", "TRL 0.29"),
    "ref_adapter_name": ("ignored: the reference is the adapter-disabled model (or anchors=...)", "TRL 0.29"),
    "force_use_ref_model": ("ignored: a given reference model is always used", "TRL 0.29"),
    "base_model_attribute_name": ("ignored: the backbone is found by alignment.heads.backbone", "TRL 0.29"),
    "label_pad_token_id": ("ignored: labels are never padded (completion masks are)", "TRL 0.29"),
    "use_logits_to_keep": ("ignored: the fused kernel never builds the logits", "TRL 0.29"),
    "padding_value": ("ignored: the pad token is pad_token or the tokenizer's", "TRL 0.26"),
    "is_encoder_decoder": ("ignored: causal LMs only", "TRL 0.29"),
    "tools": ("ignored: give tools per row in a 'tools' column", "TRL 0.29"),
    "logging_dir": ("ignored: logs go to output_dir", "transformers 5"),
    "save_safetensors": ("ignored: checkpoints are always safetensors", "transformers 5"),
    "use_mps_device": ("ignored: the device is chosen automatically", "transformers 5"),
    "truncation_side": ("ignored: truncation_mode decides (keep_start or keep_end)", "alignment-handbook"),
    "auto_insert_empty_system_msg": ("ignored: rows are rendered as they are", "alignment-handbook"),
    "dataset_configs": ("ignored: give config per source in dataset_mixture", "alignment-handbook"),
}


class LegacyError(ValueError):
    """A legacy field whose meaning cannot be kept (the recipe loader reports it with the file name)."""


def _number(field: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise LegacyError(f"field '{field}' must be a number, got {value!r}")
    return float(value)


def _mapping(field: str, value) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise LegacyError(f"field '{field}' must be a mapping, got {value!r}")
    return dict(value)


def _say(field: str, source: str, became: str) -> None:
    logger.warning("recipe field '%s' (%s): %s", field, source, became)


def _rename(raw: dict, old: str) -> None:
    new, source = RENAMED[old]
    value = raw.pop(old)
    if new in raw:
        _say(old, source, f"ignored: '{new}' is set too ({raw[new]!r}) and wins")
        return
    if value is None:
        _say(old, source, f"dropped (null); '{new}' keeps its default")
        return
    raw[new] = value
    _say(old, source, f"became {new}: {value!r}")


def _warmup_ratio(raw: dict) -> None:
    value = raw.pop("warmup_ratio")
    if raw.get("warmup_steps"):
        _say("warmup_ratio", "transformers 5", f"ignored: warmup_steps is set too ({raw['warmup_steps']!r})")
        return
    ratio = _number("warmup_ratio", value or 0.0)
    if not 0.0 <= ratio < 1.0:
        raise LegacyError(f"field 'warmup_ratio' must be in [0, 1), got {value!r}")
    raw["warmup_steps"] = ratio
    _say("warmup_ratio", "transformers 5", f"became warmup_steps: {ratio} (a fraction of the steps)")


def _rpo_alpha(raw: dict) -> None:
    value = raw.pop("rpo_alpha")
    if value is None:
        _say("rpo_alpha", "TRL 0.29", "dropped (null)")
        return
    if raw.get("method") not in (None, "dpo", "rpo"):
        raise LegacyError(f"rpo_alpha adds an SFT term to DPO; it does not apply to method {raw['method']!r}")
    eta = _number("rpo_alpha", value)
    raw.update(method="rpo", eta=eta, sft_normalization="token_mean")
    _say("rpo_alpha", "TRL 0.29", f"became method rpo with eta {eta} and sft_normalization token_mean")


def _reference_free(raw: dict) -> None:
    if raw.pop("reference_free"):
        raise LegacyError("reference_free: true (a uniform reference) is not supported; remove it")
    _say("reference_free", "TRL 0.29", "dropped (false)")


def _length(raw: dict, field: str) -> None:
    what = {
        "max_prompt_length": "the prompt keeps its last {} tokens before max_length cuts the completion",
        "max_completion_length": "each completion keeps its first {} tokens before max_length applies",
    }[field]
    if raw[field] is None:
        raw.pop(field)
        _say(field, "TRL 0.29", "dropped (null)")
        return
    _say(field, "TRL 0.29, kept here", what.format(raw[field]))


def _model_kwarg(raw: dict, field: str, key: str) -> None:
    value = raw.pop(field)
    if value is None:
        return
    kwargs = _mapping("model_init_kwargs", raw.get("model_init_kwargs"))
    kwargs.setdefault(key, value)
    raw["model_init_kwargs"] = kwargs
    _say(field, "alignment-handbook", f"became model_init_kwargs.{key}: {value!r}")


def _quantization(raw: dict) -> None:
    four, eight = bool(raw.pop("load_in_4bit", False)), bool(raw.pop("load_in_8bit", False))
    options = {k: raw.pop(k) for k in ("bnb_4bit_quant_type", "use_bnb_nested_quant") if k in raw}
    quant_type = options.get("bnb_4bit_quant_type") or "nf4"
    nested = bool(options.get("use_bnb_nested_quant", False))
    if not (four or eight):
        for key in options:
            _say(key, "alignment-handbook", "ignored: no load_in_4bit / load_in_8bit")
        return
    import importlib.util

    import torch

    if not torch.cuda.is_available() or importlib.util.find_spec("bitsandbytes") is None:
        raise LegacyError(
            f"load_in_{'4' if four else '8'}bit needs bitsandbytes and a CUDA device (this machine has "
            f"{'no CUDA device' if not torch.cuda.is_available() else 'no bitsandbytes'}); remove it to train "
            "unquantized"
        )
    from transformers import BitsAndBytesConfig

    dtype = raw.get("dtype") or "bfloat16"
    config = BitsAndBytesConfig(load_in_4bit=four, load_in_8bit=eight, bnb_4bit_quant_type=quant_type,
                                bnb_4bit_use_double_quant=nested,
                                bnb_4bit_compute_dtype=getattr(torch, dtype, torch.bfloat16))  # fmt: skip
    kwargs = _mapping("model_init_kwargs", raw.get("model_init_kwargs"))
    kwargs["quantization_config"] = config
    raw["model_init_kwargs"] = kwargs
    _say("load_in_4bit" if four else "load_in_8bit", "alignment-handbook", "became a bitsandbytes quantization_config")


def _handbook_mixture(raw: dict) -> None:
    """``dataset_mixture: {datasets: [...], test_split_size, seed}`` -> our list of sources."""
    mixture = raw.pop("dataset_mixture")
    unknown = set(mixture) - {"datasets", "test_split_size", "seed"}
    if unknown or not isinstance(mixture.get("datasets"), list):
        raise LegacyError(
            f"dataset_mixture: expected {{datasets: [...], test_split_size, seed}}, got keys {sorted(mixture)}"
        )
    sources = []
    for i, item in enumerate(mixture["datasets"]):
        if not isinstance(item, dict) or "id" not in item:
            raise LegacyError(f"dataset_mixture.datasets[{i}]: expected a mapping with an 'id'")
        extra = set(item) - {"id", "config", "split", "columns", "weight"}
        if extra:
            raise LegacyError(f"dataset_mixture.datasets[{i}]: unknown keys {sorted(extra)}")
        spec = {
            "path": str(item["id"]),
            "weight": _number(f"dataset_mixture.datasets[{i}].weight", item.get("weight", 1.0)),
        }
        spec.update({k: item[k] for k in ("config", "split", "columns") if item.get(k) is not None})
        sources.append(spec)
    raw["dataset_mixture"] = sources
    if mixture.get("test_split_size") is not None:
        raw.setdefault("test_split_size", mixture["test_split_size"])
    if mixture.get("seed") is not None:
        raw.setdefault("seed", mixture["seed"])
    _say("dataset_mixture", "alignment-handbook", f"{len(sources)} source(s) read from its datasets: list")


def _dataset_mixer(raw: dict) -> None:
    """The older handbook shape: ``dataset_mixer: {id: weight}`` + ``dataset_splits: [train_x, test_x]``."""
    mixer = raw.pop("dataset_mixer")
    splits = raw.pop("dataset_splits", None) or ["train", "test"]
    if not isinstance(mixer, dict):
        raise LegacyError(f"dataset_mixer: expected a mapping of dataset: weight, got {mixer!r}")
    train = [s for s in splits if "train" in s]
    test = [s for s in splits if "test" in s]
    if not isinstance(splits, list) or not all(isinstance(s, str) for s in splits):
        raise LegacyError(f"field 'dataset_splits' must be a list of split names, got {splits!r}")
    weights = {str(k): _number(f"dataset_mixer.{k}", v) for k, v in mixer.items()}
    raw["dataset_mixture"] = [{"path": k, "weight": w, "split": s} for k, w in weights.items() for s in train]
    if test:
        raw["eval_dataset"] = [{"path": str(k), "split": s} for k in mixer for s in test]
    _say("dataset_mixer", "alignment-handbook", f"became dataset_mixture (splits {train}) and eval_dataset ({test})")


def _trl_dataset(raw: dict) -> None:
    """TRL's scripts: dataset_name / dataset_config / dataset_train_split / dataset_test_split."""
    name = raw.pop("dataset_name")
    config = raw.pop("dataset_config", None)
    train = raw.pop("dataset_train_split", "train")
    test = raw.pop("dataset_test_split", None)
    spec = {"path": str(name), "split": train, **({"config": config} if config else {})}
    raw["dataset_mixture"] = [spec]
    if test and raw.get("eval_strategy", raw.get("evaluation_strategy", "no")) != "no":
        raw["eval_dataset"] = [{**spec, "split": test}]
    _say("dataset_name", "TRL scripts", f"became dataset_mixture [{name} {train}]" + (f", eval {test}" if test else ""))


SPECIAL: dict[str, Callable[[dict], None]] = {
    "warmup_ratio": _warmup_ratio,
    "rpo_alpha": _rpo_alpha,
    "reference_free": _reference_free,
    "dataset_mixer": _dataset_mixer,
    "dataset_name": _trl_dataset,
}


def normalize(raw: dict) -> dict:
    """The recipe with every legacy field mapped (one WARNING line each); raises LegacyError for one whose
    meaning cannot be kept."""
    raw = dict(raw)
    if isinstance(raw.get("dataset_mixture"), dict) and "datasets" in raw["dataset_mixture"]:
        _handbook_mixture(raw)
    for old in [k for k in raw if k in SPECIAL]:
        if old in raw:
            SPECIAL[old](raw)
    for old in [k for k in raw if k in RENAMED]:
        _rename(raw, old)
    for field in ("max_prompt_length", "max_completion_length"):
        if field in raw:
            _length(raw, field)
    for field, key in (("attn_implementation", "attn_implementation"), ("model_revision", "revision")):
        if field in raw:
            _model_kwarg(raw, field, key)
    _quantization(raw)
    for old in [k for k in raw if k in IGNORED]:
        became, source = IGNORED[old]
        value = raw.pop(old)
        if value not in (None, False, [], {}):
            _say(old, source, became)
    return raw
