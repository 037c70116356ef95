"""Options of the fused log-softmax op and the chunk sizes derived from a memory budget."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from alignment.ops.backend import requested, resolve

#: Default working-memory budget of one op call (the logits tiles), in bytes. Override per call with
#: ``memory_budget=`` or for the process with the environment variable ALIGNMENT_KERNEL_BUDGET_MB.
DEFAULT_BUDGET = 512 * 2**20
MIN_TOKEN_CHUNK = 16
#: how a row of logits becomes probabilities: softmax (exp) or StableMax (arXiv 2501.04697: s(x) = x + 1
#: for x >= 0, 1 / (1 - x) for x < 0, in place of exp; p = s(z) / sum s(z))
NORMALIZERS = ("softmax", "stablemax")


def default_budget() -> int:
    value = os.environ.get("ALIGNMENT_KERNEL_BUDGET_MB")
    if not value:
        return DEFAULT_BUDGET
    try:
        megabytes = float(value)
    except ValueError:
        megabytes = float("nan")
    if not 0 < megabytes < float("inf"):
        from alignment.errors import RecipeError

        raise RecipeError(f"ALIGNMENT_KERNEL_BUDGET_MB {value!r} must be a positive number of MiB, e.g. 512")
    return int(megabytes * 2**20)


@dataclass(frozen=True)
class KernelOptions:
    """How logits are formed and how the work is chunked.

    Logits: z = softcap(((h W^T + b) * logit_scale)) / temperature with softcap(a) = c * tanh(a / c) when
    ``softcap`` = c is set (Gemma-2's final_logit_softcapping).

    Normalizer: ``softmax`` or ``stablemax`` (then lse is log sum_v s(z_v) and log p = log s(z_y) - lse).

    Chunking: ``token_chunk`` rows of h and ``vocab_chunk`` rows of W per tile. Unset, they come from
    ``memory_budget`` (bytes): full-vocabulary tiles while at least ``MIN_TOKEN_CHUNK`` tokens fit,
    vocabulary tiles (online logsumexp) beyond that (general path only).
    """

    temperature: float = 1.0
    logit_scale: float = 1.0
    softcap: float | None = None
    token_chunk: int | None = None
    vocab_chunk: int | None = None
    memory_budget: int | None = None
    normalizer: str = "softmax"
    backend: str | None = None  # the per-tile work: auto | torch | triton (alignment.ops.backend); None: env/auto

    def __post_init__(self):
        if self.backend is not None:
            requested(self.backend)  # a name check; whether it can run is decided per device
        if self.normalizer not in NORMALIZERS:
            raise ValueError(f"normalizer must be one of {list(NORMALIZERS)}, got {self.normalizer!r}")
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise ValueError(f"temperature must be a positive finite number, got {self.temperature}")
        if not math.isfinite(self.logit_scale) or self.logit_scale == 0:
            raise ValueError(f"logit_scale must be a finite non-zero number, got {self.logit_scale}")
        if self.softcap is not None and not self.softcap > 0:
            raise ValueError(f"softcap must be positive or None, got {self.softcap}")
        for name in ("token_chunk", "vocab_chunk", "memory_budget"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be a positive integer or None, got {value}")

    def uses_triton(self, t) -> bool:
        """Whether the Triton kernels do the per-tile work for tensors like ``t`` (one clear error when
        ``triton`` is asked for where it cannot run)."""
        return resolve(self.backend, t.device) == "triton"

    @property
    def stable(self) -> bool:
        return self.normalizer == "stablemax"

    @property
    def linear_factor(self) -> float:
        """z = linear_factor * a when there is no softcap."""
        return self.logit_scale / self.temperature

    def budget(self) -> int:
        return self.memory_budget or default_budget()

    def chunks(self, n_tokens: int, vocab: int, buffers: int, element_size: int = 4, full_vocab: bool = False):
        """(token_chunk, vocab_chunk) for ``buffers`` live [tokens, vocab] tiles within the budget.

        ``full_vocab`` forces vocab_chunk = vocab (the paths that form gradients in the forward need whole
        rows); the token chunk then shrinks to fit, down to 1.
        """
        budget = self.budget()
        per_row = max(1, buffers * element_size)
        vocab_chunk = vocab if full_vocab else (self.vocab_chunk or vocab)
        vocab_chunk = min(vocab_chunk, vocab)
        if not full_vocab and self.vocab_chunk is None:
            fits = budget // (per_row * vocab)
            if fits < MIN_TOKEN_CHUNK:  # too few whole rows fit: tile the vocabulary as well
                vocab_chunk = max(1024, budget // (per_row * MIN_TOKEN_CHUNK))
                vocab_chunk = min(vocab_chunk, vocab)
        token_chunk = self.token_chunk or max(1, budget // (per_row * vocab_chunk))
        return max(1, min(token_chunk, max(n_tokens, 1))), vocab_chunk
