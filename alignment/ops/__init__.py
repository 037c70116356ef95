"""The fused log-softmax op: per-token log-probabilities (and entropy, logsumexp, KL to a reference,
softmax-collapse flags) from hidden states and an LM head, without materializing the [N, V] logits.

Three paths (README, "The fused log-softmax op"): general (recompute in backward), pair-fused (the preference
loss evaluated inside the op, gradients formed in the forward), frozen-head (no gradient to W: dh formed in the
forward).
This package imports torch only.
"""

from alignment.ops.api import PairFusedOutput, TokenLogps, pair_fused_loss, token_logps
from alignment.ops.options import KernelOptions
from alignment.ops.pair_fused import PairChunk

__all__ = ["KernelOptions", "PairChunk", "PairFusedOutput", "TokenLogps", "pair_fused_loss", "token_logps"]
