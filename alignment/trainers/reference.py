"""The reference policy of a preference trainer: a separate model, the PEFT model with its adapter off,
a frozen copy of the starting policy, or log-probabilities precomputed once and cached on disk.

The cache key is a hash of the reference model (config and every parameter value), the tokenized
dataset's content and the tokenization settings, so a stale cache is never read. With several processes
the main process computes and writes the file (atomically: temp file + rename) and the others wait and
read it; every process then holds the same columns.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from alignment.models import causal_token_logps, unwrap

MODES = ("model", "adapter", "copy", "precomputed")


def model_fingerprint(model: nn.Module) -> str:
    """sha256 of the config and of every parameter's bytes (exact, and cheap for the models we cache for)."""
    inner = unwrap(model)
    digest = hashlib.sha256()
    config = getattr(inner, "config", None)
    if config is not None:
        digest.update(config.to_json_string(use_diff=False).encode())
    for name, param in sorted(inner.state_dict().items()):
        digest.update(name.encode())
        digest.update(param.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:20]


def dataset_fingerprint(dataset) -> str:
    digest = hashlib.sha256()
    for key in ("prompt_ids", "chosen_ids", "rejected_ids"):
        digest.update(json.dumps([list(x) for x in dataset[key]]).encode())
    return digest.hexdigest()[:20]


@contextmanager
def adapter_disabled(model: nn.Module):
    """The base model of a PEFT model (LoRA off) for the duration of the block."""
    inner = model
    while not hasattr(inner, "disable_adapter") and hasattr(inner, "module"):
        inner = inner.module
    with inner.disable_adapter():
        yield


def frozen_copy(model: nn.Module) -> nn.Module:
    ref = copy.deepcopy(unwrap(model))
    ref.eval()
    for param in ref.parameters():
        param.requires_grad_(False)
    return ref


def sequence_logps(model: nn.Module, batch: dict, kernel_kwargs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed completion log-probabilities [B] of the chosen and rejected halves of a collated batch."""
    with torch.no_grad():
        out = causal_token_logps(
            model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"], **kernel_kwargs
        )
    seq = out.logps.sum(dim=-1)
    half = seq.shape[0] // 2
    return seq[:half], seq[half:]


def precompute(trainer, dataset, name: str):
    """Add ref_chosen_logps / ref_rejected_logps columns to a tokenized dataset, through the disk cache."""
    args = trainer.args
    ref = trainer.ref_model if trainer.ref_model is not None else trainer.model
    key = "-".join(
        [
            model_fingerprint(ref),
            dataset_fingerprint(dataset),
            str(args.max_length),
            args.truncation_mode,
            f"{getattr(trainer, 'ref_adapter_off', False)}",
        ]
    )
    folder = Path(args.ref_cache_dir or Path(args.output_dir) / "ref_logps_cache")
    path = folder / f"{name}-{key}.pt"
    accelerator = trainer.accelerator
    if accelerator.is_main_process and not path.exists():
        values = _compute(trainer, ref, dataset)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save(values, tmp)
        os.replace(tmp, path)
    accelerator.wait_for_everyone()
    values = torch.load(path)
    trainer.ref_cache_files.append(str(path))
    dataset = dataset.add_column("ref_chosen_logps", values["chosen"].tolist())
    return dataset.add_column("ref_rejected_logps", values["rejected"].tolist())


def _compute(trainer, ref: nn.Module, dataset) -> dict[str, torch.Tensor]:
    from tqdm.auto import tqdm

    device = trainer.accelerator.device
    ref = ref.to(device)
    was_training = ref.training
    ref.eval()
    batch_size = trainer.args.per_device_eval_batch_size
    chosen, rejected = [], []
    for start in tqdm(range(0, len(dataset), batch_size), desc="Precomputing reference log-probabilities"):
        rows = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        batch = {k: v.to(device) for k, v in trainer.data_collator(rows).items()}
        if getattr(trainer, "ref_adapter_off", False):
            with adapter_disabled(ref):
                c, r = sequence_logps(ref, batch, trainer.kernel_kwargs())
        else:
            c, r = sequence_logps(ref, batch, trainer.kernel_kwargs())
        chosen.append(c.float().cpu())
        rejected.append(r.float().cpu())
    ref.train(was_training)
    return {"chosen": torch.cat(chosen), "rejected": torch.cat(rejected)}
