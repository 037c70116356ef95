"""The text a trainer shows about itself: the banner of its active configuration (method, kernel path, anchors,
distribution, PEFT, precision, packing, normalizer, checkpoints, diagnostics) and why a diagnostic is off."""

from __future__ import annotations

import logging
from contextlib import contextmanager

from alignment.trainers import packing
from alignment.trainers.anchors import is_peft, unwrap_peft

logger = logging.getLogger("alignment")


def active_summary(trainer) -> dict[str, str]:
    args = trainer.args
    if trainer.is_deepspeed_enabled:
        engine = f"DeepSpeed ZeRO-{zero_stage(trainer)}"
    elif trainer.is_fsdp_enabled:
        engine = "FSDP"
    else:
        engine = "DDP" if args.world_size > 1 else "single process"
    peft = "none"
    if is_peft(trainer.model):
        cfg = next(iter(unwrap_peft(trainer.model).peft_config.values()))
        peft = f"{type(cfg).__name__} r={getattr(cfg, 'r', '?')}"
    return {
        "method": trainer.method.describe(),
        "kernel path": trainer.kernel_path(),
        **trainer.anchor_summary(),
        "distributed": f"{engine}, {args.world_size} process(es), {args.device}",
        "peft": peft,
        "precision": "bf16" if args.bf16 else ("fp16" if args.fp16 else "float32"),
        "padding-free": packing.summary(trainer),
        "long context": long_context_summary(args),
        "normalizer": args.normalizer + (f", z_loss {args.z_loss:g}" if args.z_loss else ""),
        "checkpoints": checkpoint_summary(args),
        "diagnostics": diagnostics_summary(trainer),
    }


def long_context_summary(args) -> str:
    """What of docs/long-context.md is on: activation offloading, tiling, sequence parallelism."""
    parts = [name for name, on in (("activation offload to CPU", args.activation_offloading),
                                   ("tiled MLP", args.tiled_mlp), ("tiled norms", args.tiled_norms)) if on]  # fmt: skip
    if args.sequence_parallel_size > 1:
        parts.append(f"sequence parallel over {args.sequence_parallel_size} ranks (DeepSpeed Ulysses)")
    from alignment.long_context.allocator import allocator_summary

    allocator = allocator_summary(args)
    if allocator:
        parts.append(f"allocator {allocator}")
    return ", ".join(parts) or "off"


def checkpoint_summary(args) -> str:
    strategy = str(getattr(args.save_strategy, "value", args.save_strategy))
    if strategy == "no":
        return "off (TRL saves every 500 steps by default; --save_steps N turns them on)"
    return f"every {args.save_steps:g} steps" if strategy == "steps" else f"every {strategy}"


def probe_status(trainer) -> str:
    """'on', or why the probe-set diagnostics (entanglement, displacement) cannot run here."""
    if trainer.probe_dataset() is None:
        return f"off: {trainer.method.name.upper()} rows have no (chosen, rejected) pairs to probe"
    if trainer.args.normalizer != "softmax":
        return f"off: the probes measure softmax log-probabilities (normalizer {trainer.args.normalizer})"
    if trainer.is_deepspeed_enabled and zero_stage(trainer) == "3":
        return "off: DeepSpeed ZeRO-3 partitions the parameters (per-pair gradients need them whole)"
    if trainer.is_fsdp_enabled:
        return "off: FSDP shards the parameters (per-pair gradients need them whole)"
    if trainer.args.sequence_parallel_size > 1:
        return "off: sequence parallelism splits each pair across ranks (the probes run whole pairs)"
    return "on"


def diagnostics_summary(trainer) -> str:
    args = trainer.args
    if not args.diagnostics:
        return "off"
    if not trainer.vocabulary_softmax:
        return f"none: {trainer.method.name} has no vocabulary softmax to watch (its own metrics are logged)"
    if trainer.probe_status != "on":
        return f"softmax collapse every step; probes {trainer.probe_status}"
    params = f", params ~ /{args.diagnostics_params}/" if args.diagnostics_params else ""
    first = ", first-order check" if args.diagnostics_first_order else ""
    return (
        f"softmax collapse every step; entanglement + displacement on {args.diagnostics_probe_pairs} probe "
        f"pairs every {args.diagnostics_steps} steps{params}{first}"
    )


def zero_stage(trainer) -> str:
    plugin = trainer.accelerator.state.deepspeed_plugin
    return str(plugin.zero_stage) if plugin is not None else "?"


_SILENCED = [0]


@contextmanager
def silenced():
    """No banner from the trainers built inside (the self-play loop shows its first iteration's only)."""
    _SILENCED[0] += 1
    try:
        yield
    finally:
        _SILENCED[0] -= 1


def log_banner(trainer) -> None:
    if _SILENCED[0]:
        return
    lines = [f"  {k:<22}{v}" for k, v in trainer.active_summary().items()]
    if trainer.accelerator.is_main_process:
        logger.warning("alignment %s trainer, active configuration:\n%s", trainer.method.name, "\n".join(lines))
