"""Precomputing anchors once into dataset columns, through a disk cache whose key covers every setting that
can change the values (tests/reliability/test_cache_key.py)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import torch

from alignment.errors import DiskFullError
from alignment.io import is_write_failure
from alignment.models import unwrap
from alignment.trainers.anchors.evaluation import anchor_logps
from alignment.trainers.anchors.fingerprints import dataset_fingerprint
from alignment.trainers.anchors.kinds import Anchor
from alignment.trainers.packing import batch_packing

logger = logging.getLogger("alignment")

#: the config fields that can change an anchor's log-probabilities beyond its weights (and its model config:
#: softcapping, logit scale, ...) and the token ids, which the key hashes itself: how rows become tokens, batches
#: and packed rows, the op's options and the precision. tests/reliability/test_cache_key.py fails when the anchors'
#: pass reads a field that is neither here nor in NEUTRAL_FIELDS.
VALUE_FIELDS = (
    "max_length", "truncation_mode", "tokenization", "max_prompt_length", "max_completion_length", "chat_template",
    "pad_token",
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
            "Cannot compute reference log-probs for a dataset passed to `evaluate()` after training has started "
            f"(trl's words): the {split} dataset needs anchor {anchor.name!r}'s log-probabilities, but its frozen copy "
            "was released after they were precomputed (precompute_ref_logps): pass this dataset as eval_dataset when "
            f"the trainer is built, add {anchor.columns[0]}/{anchor.columns[1]} columns, or pass the reference as "
            "ref_model"
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
            packing = batch_packing(trainer, batch)  # a packed batch: the model is checked before anything is cached
            values = anchor_logps(policy, batch, trainer.kernel_kwargs(), tokens, packing)
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
