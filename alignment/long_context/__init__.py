"""Long sequences on one device and across devices (docs/long-context.md): the activation checkpoints offloaded to
CPU memory (trl's OffloadActivations), the MLP computed in sequence tiles (DeepSpeed's TiledMLP, from Arctic Long
Sequence Training, arXiv 2506.13996) and DeepSpeed Ulysses sequence parallelism through accelerate."""

from alignment.long_context.offload import keep_on_device, offload_context
from alignment.long_context.tiling import tile_mlps, untile_mlps

__all__ = ["keep_on_device", "offload_context", "tile_mlps", "untile_mlps"]
