"""Named anchors: the frozen policies a preference loss compares against (DPO's reference ``ref``; INPO's
``ref`` and ``prev`` = pi_t).

Each anchor is one of

- ``model``: a separate frozen model (passed as ``ref_model=`` or ``anchors={"prev": model_or_path}``);
- ``copy``: a frozen copy of the starting policy (the default without PEFT; anchors that default to it
  share one copy);
- ``adapter``: the PEFT policy with its adapters disabled (the default ``ref`` under PEFT: the base model);
- ``adapter state``: the PEFT policy with saved adapter weights swapped in for the pass (the default for
  other anchors under PEFT: the starting adapter, e.g. pi_t; or ``anchors={"prev": state_dict}``);
- ``columns``: log-probabilities that come with the data: ``<name>_chosen_logps`` and
  ``<name>_rejected_logps`` (sums, [B]) and optionally ``<name>_chosen_token_logps`` /
  ``<name>_rejected_token_logps`` (one value per completion token).

With ``precompute_ref_logps`` every anchor that is not already ``columns`` is evaluated once before
training and added to the dataset as columns, through a disk cache. The cache key is a hash of the anchor's
policy (config and every parameter value, plus the swapped adapter state), the tokenized dataset's content and
every setting that can change the values (:func:`cache_settings`: tokenization, batching and packing, the op's
normalizer and options, dtypes, attention), so a stale cache is never read. With
several processes the main process computes and writes the file (atomically: temp file + rename) and the
others wait and read it; every process then holds the same columns.

Per-token values: a trainer with ``anchor_token_logps = True`` gets each anchor's per-token
log-probabilities as well as its sums (live: [2B, T-1] from the same no-grad pass; precomputed: the token
columns), passed to the loss as ``chunk.token_inputs["<name>_token_logps"]``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from alignment.data.packing import Packing
from alignment.errors import DiskFullError
from alignment.heads import ReferenceStates, causal_token_logps, reference_states
from alignment.io import is_write_failure
from alignment.models import load_model, unwrap
from alignment.trainers.packing import batch_packing

KINDS = ("model", "copy", "adapter", "adapter state", "columns")

logger = logging.getLogger("alignment")


@dataclass
class AnchorLogps:
    """An anchor's log-probabilities for B pairs: sums chosen [B], rejected [B]; per-token [2B, T-1] (the
    collator's [chosen; rejected] rows, 0 off the completion) when asked for."""

    chosen: torch.Tensor
    rejected: torch.Tensor
    tokens: torch.Tensor | None = None
    states: ReferenceStates | None = None  # hidden states and head, for methods that need them (SparsePO)


@dataclass
class Anchor:
    """One named anchor (see the module docstring for the kinds)."""

    name: str
    kind: str
    model: nn.Module | None = None
    adapter_state: dict[str, torch.Tensor] | None = field(default=None, repr=False)
    precomputed: bool = False
    freed: bool = False  # a ``copy`` released after its values were precomputed

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"anchor {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")

    @property
    def columns(self) -> tuple[str, str]:
        return f"{self.name}_chosen_logps", f"{self.name}_rejected_logps"

    @property
    def token_columns(self) -> tuple[str, str]:
        return f"{self.name}_chosen_token_logps", f"{self.name}_rejected_token_logps"

    def describe(self) -> str:
        return f"precomputed ({self.kind})" if self.precomputed else self.kind

    def policy(self, trainer_model: nn.Module):
        """A context giving the module whose forward is this anchor (the trainer's model for the adapter
        kinds, with the adapters off or the saved state swapped in)."""
        if self.kind == "adapter":
            return _yielding(trainer_model, adapter_disabled(trainer_model))
        if self.kind == "adapter state":
            return _yielding(trainer_model, adapter_swapped(trainer_model, self.adapter_state))
        return _yielding(self.model, nullcontext())

    def fingerprint(self, trainer_model: nn.Module) -> str:
        model = self.model if self.model is not None else trainer_model
        parts = [model_fingerprint(model), self.kind]
        if self.adapter_state is not None:
            parts.append(tensors_fingerprint(self.adapter_state))
        return "-".join(parts)


@contextmanager
def _yielding(module, context):
    with context:
        yield module


def build_anchors(
    names: tuple[str, ...], model: nn.Module, sources: dict, load_kwargs: dict, columns: set[str]
) -> dict[str, Anchor]:
    """The anchors a method declares, from explicit ``sources`` (a model, a path, an adapter state dict),
    the dataset's precomputed ``columns``, or the defaults (module docstring)."""
    unknown = set(sources) - set(names)
    if unknown:
        raise ValueError(f"anchors {sorted(unknown)} are not used by this method (it uses {list(names) or 'none'})")
    anchors, shared_copy = {}, None
    for name in names:
        source = sources.get(name)
        if source is None and {f"{name}_chosen_logps", f"{name}_rejected_logps"} <= columns:
            anchors[name] = Anchor(name, "columns", precomputed=True)
        elif isinstance(source, dict):
            anchors[name] = Anchor(name, "adapter state", adapter_state=_detached(source))
        elif source is not None:
            anchors[name] = Anchor(name, "model", model=frozen_copy(load_model(source, **load_kwargs)))
        elif is_peft(model):
            if name == "ref":
                anchors[name] = Anchor(name, "adapter")
            else:
                anchors[name] = Anchor(name, "adapter state", adapter_state=adapter_snapshot(model))
        else:
            shared_copy = shared_copy if shared_copy is not None else frozen_copy(model)
            anchors[name] = Anchor(name, "copy", model=shared_copy)
    return anchors


# ----- PEFT ------------------------------------------------------------------------------------------------
def is_peft(model) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "disable_adapter")


def unwrap_peft(model):
    while not hasattr(model, "peft_config") and hasattr(model, "module"):
        model = model.module
    return model


@contextmanager
def adapter_disabled(model: nn.Module):
    """The base model of a PEFT model (LoRA off) for the duration of the block."""
    with unwrap_peft(model).disable_adapter():
        yield


def adapter_snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the PEFT model's trainable (adapter) parameters: the starting adapter as an anchor."""
    return {n: p.detach().clone() for n, p in unwrap_peft(model).named_parameters() if p.requires_grad}


@contextmanager
def adapter_swapped(model: nn.Module, state: dict[str, torch.Tensor]):
    """The PEFT model with the parameters named in ``state`` set to its values, restored afterwards."""
    params = dict(unwrap_peft(model).named_parameters())
    missing = [n for n in state if n not in params]
    if missing:
        raise ValueError(f"the adapter state names parameters the model does not have: {missing[:3]}")
    saved = {}
    with torch.no_grad():
        for name, value in state.items():
            if hasattr(params[name], "ds_id"):
                raise NotImplementedError(
                    "adapter-state anchors are not supported under DeepSpeed ZeRO-3 (partitioned adapter weights); "
                    "pass the anchor as a model or as precomputed <name>_chosen_logps/<name>_rejected_logps columns"
                )
            saved[name] = params[name].detach().clone()
            params[name].copy_(value.to(params[name].device, params[name].dtype))
    try:
        yield
    finally:
        with torch.no_grad():
            for name, value in saved.items():
                params[name].copy_(value)


def _detached(state: dict) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(v).detach().clone() for k, v in state.items()}


# ----- models ---------------------------------------------------------------------------------------------
def frozen_copy(model: nn.Module) -> nn.Module:
    ref = copy.deepcopy(unwrap(model))
    ref.eval()
    for param in ref.parameters():
        param.requires_grad_(False)
    return ref


def tensors_fingerprint(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name, value in sorted(tensors.items()):
        digest.update(name.encode())
        digest.update(value.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:20]


def model_fingerprint(model: nn.Module) -> str:
    """sha256 of the config and of every parameter's bytes (exact, and cheap for the models we cache for)."""
    inner = unwrap(model)
    digest = hashlib.sha256()
    config = getattr(inner, "config", None)
    if config is not None:
        digest.update(config.to_json_string(use_diff=False).encode())
    digest.update(tensors_fingerprint(inner.state_dict()).encode())
    return digest.hexdigest()[:20]


def dataset_fingerprint(dataset) -> str:
    digest = hashlib.sha256()
    for key in ("prompt_ids", "chosen_ids", "rejected_ids"):
        digest.update(json.dumps([list(x) for x in dataset[key]]).encode())
    return digest.hexdigest()[:20]


# ----- evaluation -----------------------------------------------------------------------------------------
def anchor_logps(model: nn.Module, batch: dict, kernel_kwargs: dict, tokens: bool = False) -> AnchorLogps:
    """An anchor's summed completion log-probabilities (and per-token ones) on a collated batch, no grad."""
    with torch.no_grad():
        out = causal_token_logps(
            model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"],
            packing=Packing.from_batch(batch), **kernel_kwargs,
        )  # fmt: skip
    seq = out.logps.sum(dim=-1)
    half = seq.shape[0] // 2
    return AnchorLogps(seq[:half], seq[half:], out.logps if tokens else None)


def anchor_states(model: nn.Module, batch: dict, kernel_kwargs: dict, all_layers: bool) -> AnchorLogps:
    """An anchor's per-token log-probabilities with its hidden states (every layer's when ``all_layers``)
    and LM head, from one no-grad pass (alignment.heads.reference_states)."""
    states = reference_states(
        model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"], all_layers,
        packing=Packing.from_batch(batch), **kernel_kwargs,
    )  # fmt: skip
    seq = states.token_logps.sum(dim=-1)
    half = seq.shape[0] // 2
    return AnchorLogps(seq[:half], seq[half:], states.token_logps, states)


def from_batch(anchor: Anchor, batch: dict, tokens: bool) -> AnchorLogps:
    """Precomputed values carried by a collated batch (``<name>_token_logps`` is [2B, T]: shifted here)."""
    chosen, rejected = (batch[c] for c in anchor.columns)
    per_token = batch.get(f"{anchor.name}_token_logps")
    if tokens and per_token is None:
        raise ValueError(
            f"the loss needs per-token values of anchor {anchor.name!r} but the data only has "
            f"{anchor.columns[0]}/{anchor.columns[1]}: add {anchor.token_columns[0]}/{anchor.token_columns[1]} or "
            "let the trainer compute them"
        )
    return AnchorLogps(chosen, rejected, per_token[:, 1:] if tokens else None)


#: the config fields that can change an anchor's log-probabilities beyond its weights (and its model config:
#: softcapping, logit scale, ...) and the token ids, which the key hashes itself: how rows become tokens, batches
#: and packed rows, the op's options and the precision. tests/reliability/test_cache_key.py fails when the anchors'
#: pass reads a field that is neither here nor in NEUTRAL_FIELDS.
VALUE_FIELDS = (
    "max_length", "truncation_mode", "max_prompt_length", "max_completion_length", "chat_template", "pad_token",
    "pad_to_multiple_of", "padding_free", "normalizer", "kernel_memory_mb", "kernel_backend", "bf16", "fp16",
    "precompute_ref_batch_size", "per_device_eval_batch_size",
)  # fmt: skip
#: fields the anchors' pass reads that cannot change a value: where the cache lives, which device runs it
NEUTRAL_FIELDS = (
    "output_dir", "ref_cache_dir", "precompute_ref_logps", "use_cpu", "device", "n_gpu", "world_size",
    "process_index", "local_process_index", "parallel_mode", "distributed_state", "_n_gpu", "diagnostics",
    "dataset_num_proc",
)  # fmt: skip


def cache_settings(trainer, anchor: Anchor, tokens: bool) -> dict:
    """Everything but the weights and the token ids that decides an anchor's cached values: the VALUE_FIELDS,
    the op's options as the trainer passes them (a method's own kernel options included), the anchor model's
    dtypes and attention implementation, and whether per-token values are kept."""
    model = anchor.model if anchor.model is not None else trainer.model
    config = getattr(unwrap(model), "config", None)
    return {
        **{name: str(getattr(trainer.args, name, None)) for name in VALUE_FIELDS},
        "kernel": {k: str(v) for k, v in sorted(trainer.kernel_kwargs().items())},
        "dtypes": sorted({str(p.dtype) for p in model.parameters()}),
        "attention": str(getattr(config, "_attn_implementation", None)),
        "values": "tokens" if tokens else "sums",
    }


def cache_key(trainer, anchor: Anchor, dataset, tokens: bool) -> str:
    """The cache file's key: a hash of the anchor's policy, the dataset's token ids and :func:`cache_settings`."""
    settings = json.dumps(cache_settings(trainer, anchor, tokens), sort_keys=True)
    text = "-".join([anchor.fingerprint(trainer.model), dataset_fingerprint(dataset), settings])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def refuse_freed(anchor: Anchor, split: str) -> None:
    """A dataset that needs an anchor's values after its frozen copy was released (precompute_ref_logps) is an
    error naming the fix, as in TRL."""
    if anchor.freed:
        raise ValueError(
            f"the {split} dataset needs anchor {anchor.name!r}'s log-probabilities, but its frozen copy was released "
            "after they were precomputed (precompute_ref_logps): pass this dataset as eval_dataset when the trainer "
            f"is built, add {anchor.columns[0]}/{anchor.columns[1]} columns, or pass the reference as ref_model"
        )


def precompute(trainer, anchor: Anchor, dataset, split: str, tokens: bool):
    """Add the anchor's columns (sums, and per-token lists when ``tokens``) to a tokenized dataset, through
    the disk cache."""
    args = trainer.args
    key = cache_key(trainer, anchor, dataset, tokens)
    folder = Path(args.ref_cache_dir or Path(args.output_dir) / "_ref_logps_cache")  # "_*": never pushed
    path = folder / f"{split}-{anchor.name}-{key}.pt"
    accelerator = trainer.accelerator
    cached = _cached(path, len(dataset), tokens)
    accelerator.wait_for_everyone()  # every process decides on the same view of the cache
    # under ZeRO-3 an anchor's forward gathers its partitioned weights from every process: all of them run
    # it (on the same batches), the main process alone writes; otherwise the main process computes alone
    zero3 = trainer.is_deepspeed_enabled and trainer._zero_stage() == "3"
    if not cached and (accelerator.is_main_process or zero3):
        values = _compute(trainer, anchor, dataset, tokens)
        if accelerator.is_main_process:
            folder.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            try:
                torch.save(values, tmp)
                os.replace(tmp, path)
            except Exception as e:
                tmp.unlink(missing_ok=True)
                if not is_write_failure(e):
                    raise
                raise DiskFullError(f"could not write the reference cache {path} (is the disk full?)") from None
    accelerator.wait_for_everyone()
    values = torch.load(path, weights_only=True)
    trainer.ref_cache_files.append(str(path))
    chosen_col, rejected_col = anchor.columns
    dataset = dataset.add_column(chosen_col, values["chosen"].tolist())
    dataset = dataset.add_column(rejected_col, values["rejected"].tolist())
    if tokens:
        for column, rows in zip(anchor.token_columns, (values["chosen_tokens"], values["rejected_tokens"])):
            dataset = dataset.add_column(column, rows)
    return dataset


def _cached(path: Path, rows: int, tokens: bool) -> bool:
    """True for a readable cache file with a value per row; a truncated or corrupt one is named in a warning
    and recomputed (its file is replaced atomically)."""
    if not path.exists():
        return False
    try:
        values = torch.load(path, weights_only=True)
        keys = ("chosen", "rejected", *(("chosen_tokens", "rejected_tokens") if tokens else ()))
        if not all(len(values[k]) == rows for k in keys):
            raise ValueError(f"expected {rows} rows")
    except Exception as e:
        logger.warning("%s: unreadable reference cache (%s); recomputing it", path, str(e).splitlines()[0][:120])
        return False
    logger.info("reference cache hit: %s", path)
    return True


def _compute(trainer, anchor: Anchor, dataset, tokens: bool) -> dict:
    from tqdm.auto import tqdm

    device = trainer.accelerator.device
    batch_size = getattr(trainer.args, "precompute_ref_batch_size", None) or trainer.args.per_device_eval_batch_size
    out: dict[str, list] = {"chosen": [], "rejected": [], "chosen_tokens": [], "rejected_tokens": []}
    with anchor.policy(trainer.model) as policy:
        policy = policy.to(device)
        was_training = policy.training
        policy.eval()
        desc = f"Precomputing anchor '{anchor.name}' log-probabilities"
        for start in tqdm(range(0, len(dataset), batch_size), desc=desc):
            rows = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
            batch = {k: v.to(device) for k, v in trainer.data_collator(rows).items()}
            batch_packing(trainer, batch)  # a packed batch: the model is checked before anything is cached
            values = anchor_logps(policy, batch, trainer.kernel_kwargs(), tokens)
            out["chosen"].append(values.chosen.float().cpu())
            out["rejected"].append(values.rejected.float().cpu())
            if tokens:
                mask = batch["completion_mask"][:, 1:].bool()
                per_token = [values.tokens[i][mask[i]].float().cpu().tolist() for i in range(mask.shape[0])]
                half = len(per_token) // 2
                out["chosen_tokens"] += per_token[:half]
                out["rejected_tokens"] += per_token[half:]
        policy.train(was_training)
    out["chosen"], out["rejected"] = torch.cat(out["chosen"]), torch.cat(out["rejected"])
    return out
