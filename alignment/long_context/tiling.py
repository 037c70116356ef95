"""The MLP of every decoder layer computed in sequence tiles, forward and backward: at Llama-3-8B the MLP's
intermediate tensors are [T, 14336] each (gate, up, their product: 3.5x the hidden states, in the layer's
recomputation too), the largest per-token temporaries of a step; in tiles of ``hidden_size`` tokens they are
[hidden_size, 14336] whatever T is.

The work is DeepSpeed's ``TiledMLP`` (``deepspeed.runtime.sequence_parallel.ulysses_sp``, from Arctic Long Sequence
Training, arXiv 2506.13996): an autograd function that runs the MLP on each tile under no-grad in the forward, saves
only its input, and in the backward recomputes each tile's MLP with grad and backpropagates it, writing the input's
gradient tile by tile (under ZeRO it tells DeepSpeed to reduce the weights' gradients once, after the last tile).
The MLP is per-token, so the result equals the untiled one up to float rounding (tests/long_context: <= 1e-6 in
float32). The cost: one more MLP forward per step (the backward's recomputation).

Which modules: every module whose class name ends in ``MLP`` (LlamaMLP, Qwen2MLP, MistralMLP, GemmaMLP, Phi3MLP,
GPT2MLP, ...); a mixture of experts' sparse block is not one (its routing is not per-token independent of the
batch's load balance) and is left as it is. LoRA adapters inside the MLP run inside the tiles as usual.
"""

from __future__ import annotations

import math
import types

import torch

MLP = ("MLP",)
NORMS = ("RMSNorm", "LayerNorm")


def mlp_modules(model: torch.nn.Module, kinds: tuple[str, ...] = MLP) -> list[torch.nn.Module]:
    """The modules ``tile_mlps`` tiles: those whose class name ends in one of ``kinds`` (MLP; with NORMS the
    per-token normalizations, RMSNorm and LayerNorm), not nested inside another one."""
    found, inside = [], set()
    for module in model.modules():
        if id(module) in inside:
            continue
        if type(module).__name__.endswith(kinds):
            found.append(module)
            inside.update(id(m) for m in module.modules())
    return found


def tile_mlps(model: torch.nn.Module, shards: int | None = None, kinds: tuple[str, ...] = MLP) -> int:
    """Replace the forward of every MLP of ``model`` (every module of ``kinds``: ``MLP + NORMS`` tiles the
    RMSNorms' float32 temporaries too) by DeepSpeed's TiledMLP over ``shards`` sequence tiles (None: ceil(T /
    hidden_size), ALST's rule); returns how many were tiled. Idempotent; ``untile_mlps`` undoes it. TiledMLP needs
    only a per-token ``forward(x)``, which a normalization over the hidden dimension is as much as an MLP."""
    try:
        from deepspeed.runtime.sequence_parallel.ulysses_sp import TiledMLP
    except ImportError as e:
        raise ImportError(
            "tiled_mlp uses DeepSpeed's TiledMLP: pip install 'alignment[deepspeed]' (deepspeed>=0.18)"
        ) from e
    if shards is not None and shards < 1:
        from alignment.errors import RecipeError

        raise RecipeError(f"tiled_mlp_shards must be a positive number of tiles, got {shards}")
    modules = mlp_modules(model, kinds)
    for module in modules:
        if "_alignment_untiled_forward" not in module.__dict__:
            module._alignment_untiled_forward = module.__dict__.get("forward")  # None: the class's own
            module.forward = types.MethodType(_tiled_forward(module.forward, shards, TiledMLP), module)
    return len(modules)


def untile_mlps(model: torch.nn.Module) -> None:
    for module in mlp_modules(model, MLP + NORMS):
        if "_alignment_untiled_forward" not in module.__dict__:
            continue
        original = module.__dict__.pop("_alignment_untiled_forward")
        if original is None:
            del module.forward
        else:
            module.forward = original


def tile_count(tokens: int, hidden: int, shards: int | None) -> int:
    """Tiles for a sequence of ``tokens``: ``shards``, or ceil(tokens / hidden), at most one per token."""
    return max(1, min(tokens, shards or math.ceil(tokens / hidden)))


def _tiled_forward(original, shards: int | None, tiled_mlp):
    def forward(self, x, *args, **kwargs):
        if args or kwargs or x.dim() < 2 or (_trained(self) and not x.requires_grad and torch.is_grad_enabled()):
            return original(x, *args, **kwargs)  # TiledMLP's weights reach the graph only through its input
        n = _agreed(tile_count(x.shape[-2], x.shape[-1], shards), x.device)
        if n <= 1:
            return original(x)
        return tiled_mlp.apply(lambda _module, tile: original(tile), self, x, n, list(self.parameters()))

    return forward


def _trained(module: torch.nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters())


def _agreed(n: int, device: torch.device) -> int:
    """Every rank runs the same number of tiles (the largest): under ZeRO-3 each tile's MLP gathers its weights
    in a collective, which all ranks must call as often."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return n
    count = torch.tensor(n, device=device)
    dist.all_reduce(count, op=dist.ReduceOp.MAX)
    return int(count.item())
