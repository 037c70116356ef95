"""Each rank's share of a step under DeepSpeed ZeRO-3 on N devices, from one simulated device's step.

ZeRO-3 (arXiv 1910.02054) partitions every parameter, gradient and optimizer state over the N ranks; a rank holds
in full only its own activations and temporaries, the parameters gathered for the module running now and the
next one (prefetch), and a gradient until it is reduce-scattered. With bf16 and Adam a trained parameter costs
16 bytes in all (bf16 weight 2, bf16 gradient 2, float32 master weight, exp_avg and exp_avg_sq 4 each), a frozen
one (the reference model, a LoRA base) its own size; both divided by N.

    peak per rank = (16 * trained + frozen bytes) / N + transient + gathered + reduce bucket

``transient`` is the simulated step's peak of everything but the parameters' gradients (activations, the fused
op's tiles and formed gradients, the backward's temporaries) up to the end of the backward; ``gathered`` is
the largest module's parameters plus one prefetch bucket (0.9 * hidden^2 parameters, transformers' ``auto``),
at most ``stage3_max_live_parameters`` (1e9); the reduce bucket is hidden^2 bf16 values. This is a model of
DeepSpeed's partitioning, not a run of it: expect a real rank within about 1-2 GB of it (DeepSpeed's own
buffers, fragmentation of the partitioned flat tensors).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

TRAINED_BYTES = 16
MAX_LIVE_PARAMETERS = 10**9


@dataclass
class Share:
    devices: int
    partitioned_bytes: int
    transient_bytes: int
    gathered_bytes: int
    bucket_bytes: int

    @property
    def peak_bytes(self) -> int:
        return self.partitioned_bytes + self.transient_bytes + self.gathered_bytes + self.bucket_bytes

    def breakdown(self) -> dict[str, int]:
        return {"partitioned_states": self.partitioned_bytes, "activations_and_workspace": self.transient_bytes,
                "gathered_parameters": self.gathered_bytes, "reduce_bucket": self.bucket_bytes}  # fmt: skip


def share(model: torch.nn.Module, anchors: list[torch.nn.Module], transient: int, devices: int, hidden: int) -> Share:
    """The per-rank share of ``model`` (trained), ``anchors`` (frozen copies) and one step's ``transient``."""
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() * p.element_size() for p in model.parameters() if not p.requires_grad)
    frozen += sum(p.numel() * p.element_size() for m in anchors for p in m.parameters())
    partitioned = (TRAINED_BYTES * trained + frozen) // devices
    element = next(model.parameters()).element_size()
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    gathered = min(largest + int(0.9 * hidden * hidden), MAX_LIVE_PARAMETERS) * element
    return Share(devices, partitioned, transient, gathered, hidden * hidden * 2)
