"""Triton kernels for the fused op's per-tile work (``backend: triton``; alignment.ops.backend). Imported only
when that backend is chosen. The contracts are those of alignment.ops.tiles: :func:`accumulate`,
:func:`grad_probabilities` and :func:`grad_tile` here replace the PyTorch ones tile for tile."""

from alignment.ops.triton.tiles import accumulate, frozen_tiles, grad_probabilities, grad_tile

__all__ = ["accumulate", "frozen_tiles", "grad_probabilities", "grad_tile"]
