"""The public entry points of the fused log-softmax op: ``token_logps`` and ``pair_fused_loss``."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from alignment.ops.frozen import FrozenHeadFn
from alignment.ops.general import GeneralFn
from alignment.ops.options import KernelOptions
from alignment.ops.pair_fused import LossFn, PairFusedFn
from alignment.ops.tiles import stat_dtype

PATHS = ("auto", "general", "frozen")


@dataclass
class TokenLogps:
    """Per-token outputs of :func:`token_logps`, shaped like ``targets`` (0 / False at ignored positions).

    logps: log p(y_n) (float32; float64 for float64 inputs). lse: logsumexp of the logits. entropy and
    kl_ref: when asked. collapsed: bool flags (softmax collapse), when asked. path: the path that ran.
    """

    logps: torch.Tensor
    lse: torch.Tensor
    entropy: torch.Tensor | None = None
    kl_ref: torch.Tensor | None = None
    collapsed: torch.Tensor | None = None
    path: str = "general"
    mask: torch.Tensor | None = field(default=None, repr=False)


def _check(hidden, weight, targets, bias, name="hidden"):
    if hidden.shape[:-1] != targets.shape:
        raise ValueError(
            f"{name} {tuple(hidden.shape)} and targets {tuple(targets.shape)} disagree: want [..., H] and [...]"
        )
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[-1]:
        raise ValueError(f"weight must be [V, H] with H = {hidden.shape[-1]}, got {tuple(weight.shape)}")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"bias must be [V] = [{weight.shape[0]}], got {tuple(bias.shape)}")
    if targets.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"targets must be integer token ids, got {targets.dtype}")


@dataclass
class _Compacted:
    """The scored positions only: hidden [n, H], targets [n], the reference's hidden [n, H] and head."""

    mask: torch.Tensor
    flat: torch.Tensor
    hidden: torch.Tensor
    targets: torch.Tensor
    ref_hidden: torch.Tensor | None
    ref_weight: torch.Tensor | None
    ref_bias: torch.Tensor | None


def _compact(hidden, weight, targets, ref_hidden, ref_weight, ref_bias, ignore_index) -> _Compacted:
    """Drop the ``ignore_index`` positions before any matmul; check target ids; detach the reference."""
    mask = targets != ignore_index
    flat = mask.reshape(-1).nonzero().squeeze(1)  # positions, not a boolean mask: the planner's fake hidden
    h = hidden.reshape(-1, hidden.shape[-1])[flat]  # states are indexed by real positions (alignment.planning)
    y = targets.reshape(-1)[flat].long()
    if y.numel() and (y.min() < 0 or y.max() >= weight.shape[0]):
        raise ValueError(f"targets must be in [0, {weight.shape[0]}) or {ignore_index}")
    rh = rw = rb = None
    if ref_hidden is not None:
        rw = (ref_weight if ref_weight is not None else weight).detach()
        _check(ref_hidden, rw, targets, ref_bias, "ref_hidden")
        rh = ref_hidden.detach().reshape(-1, ref_hidden.shape[-1])[flat]
        rb = None if ref_bias is None else ref_bias.detach()
    return _Compacted(mask, flat, h, y, rh, rw, rb)


def _scatter(values: torch.Tensor | None, mask: torch.Tensor, fill=0.0) -> torch.Tensor | None:
    """Put compacted per-token values back at the mask's positions (zeros elsewhere), differentiably."""
    if values is None:
        return None
    out = torch.full(mask.shape, fill, dtype=values.dtype, device=values.device)
    return out.masked_scatter(mask, values)


def token_logps(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    temperature: float = 1.0,
    logit_scale: float = 1.0,
    softcap: float | None = None,
    entropy: bool = False,
    ref_hidden: torch.Tensor | None = None,
    ref_weight: torch.Tensor | None = None,
    ref_bias: torch.Tensor | None = None,
    collapsed: bool = False,
    extras_grad: bool = True,
    path: str = "auto",
    token_chunk: int | None = None,
    vocab_chunk: int | None = None,
    memory_budget: int | None = None,
    ignore_index: int = -100,
    normalizer: str = "softmax",
    backend: str | None = None,
    options: KernelOptions | None = None,
) -> TokenLogps:
    """Per-token log-probabilities of ``targets`` under logits z = softcap((h W^T + b) * scale) / T,
    without materializing the [N, V] logits.

    Shapes: hidden [..., H], weight [V, H], targets [...] (``ignore_index`` = not scored), bias [V].
    Positions with ``ignore_index`` are dropped before the matmul and get 0 outputs and 0 gradients.

    - ``entropy``: also return -sum_v p_v log p_v per token.
    - ``ref_hidden`` (+ ``ref_weight``, default ``weight``, and ``ref_bias``): also return
      kl_ref = KL(pi_ref || pi_theta) per token, with the reference under no grad.
    - ``collapsed``: return the softmax-collapse flags (sum_v exp(z_v - max z) == 1 in float32;
      arXiv 2501.04697).
    - ``normalizer="stablemax"``: StableMax (arXiv 2501.04697) in place of the softmax: log p = log s(z_y) -
      log sum_v s(z_v), lse = log sum_v s(z_v) (entropy and kl_ref are not implemented for it yet).
    - ``backend``: who does the per-tile work: "torch", "triton" (Triton kernels; a CUDA device or
      TRITON_INTERPRET=1) or "auto" (Triton on CUDA when installed; default, or ALIGNMENT_KERNEL_BACKEND).
    - ``extras_grad=False``: entropy and kl_ref are for logging only (no gradient; saves a GEMM in the
      frozen-head path).
    - ``path``: "general" (recompute in backward, any downstream use), "frozen" (weight and bias take no
      gradient; dh formed in the forward), or "auto" (frozen when neither weight nor bias requires grad).
    - ``options``: the logit and chunking options as one :class:`KernelOptions` (temperature, logit_scale,
      softcap, token_chunk, vocab_chunk, memory_budget, normalizer, backend), in place of those keywords.

    Example::

        out = token_logps(h, lm_head.weight, labels, entropy=True)
        seq_logps = out.logps.sum(-1)          # [B] for h [B, T, H], labels [B, T]
    """
    _check(hidden, weight, targets, bias)
    if path == "triton":
        raise ValueError(
            "Triton is a backend of every path, not a path: pass backend='triton' (or kernel_backend: triton in a "
            "recipe) with path 'general', 'frozen' or 'auto'"
        )
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    frozen_ok = not weight.requires_grad and (bias is None or not bias.requires_grad)
    if path == "frozen" and not frozen_ok:
        raise ValueError("path='frozen' needs a head without gradient: weight (and bias) must not require grad")
    chosen = "frozen" if (path == "frozen" or (path == "auto" and frozen_ok)) else "general"
    opts = _options(options, temperature, logit_scale, softcap, token_chunk, vocab_chunk, memory_budget, normalizer,
                    backend)  # fmt: skip
    c = _compact(hidden, weight, targets, ref_hidden, ref_weight, ref_bias, ignore_index)
    mask = c.mask
    fn = FrozenHeadFn if chosen == "frozen" else GeneralFn
    logp, lse, ent, kl, col = fn.apply(
        c.hidden, weight, bias, c.targets, c.ref_hidden, c.ref_weight, c.ref_bias, opts, entropy, extras_grad
    )
    if not extras_grad:
        ent = None if ent is None else ent.detach()
        kl = None if kl is None else kl.detach()
    return TokenLogps(
        logps=_scatter(logp, mask),
        lse=_scatter(lse, mask),
        entropy=_scatter(ent, mask),
        kl_ref=_scatter(kl, mask),
        collapsed=_scatter(col, mask, False) if collapsed else None,
        path=chosen,
        mask=mask,
    )


def _stack_inputs(token_inputs, targets, flat, hidden) -> tuple[tuple[str, ...], torch.Tensor | None]:
    """The caller's per-token tensors at the scored positions, stacked into [n, K] (differentiably)."""
    if not token_inputs:
        return (), None
    for name, value in token_inputs.items():
        if not isinstance(value, torch.Tensor) or value.shape != targets.shape:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(
                f"token_inputs[{name!r}] must be a tensor shaped like targets {tuple(targets.shape)}, got {shape}"
            )
    dtype = stat_dtype(hidden)
    columns = [value.reshape(-1)[flat].to(dtype) for value in token_inputs.values()]
    return tuple(token_inputs), torch.stack(columns, dim=1)


@dataclass
class PairFusedOutput:
    """loss (scalar, differentiable); per-pair metrics from the loss function; per-token values [2B, T]
    (detached, for logging), the per-sequence sums [2B] and the softmax-collapse flags [2B, T] (bool,
    False at unscored positions; free: the op has the softmax denominators anyway)."""

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor]
    token_logps: torch.Tensor
    token_entropy: torch.Tensor | None
    token_kl: torch.Tensor | None
    seq_logps: torch.Tensor
    collapsed: torch.Tensor | None = None
    mask: torch.Tensor | None = None


def pair_fused_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    loss_fn: LossFn,
    *,
    bias: torch.Tensor | None = None,
    temperature: float = 1.0,
    logit_scale: float = 1.0,
    softcap: float | None = None,
    entropy: bool = False,
    ref_hidden: torch.Tensor | None = None,
    ref_weight: torch.Tensor | None = None,
    ref_bias: torch.Tensor | None = None,
    extras_grad: bool = True,
    token_inputs: dict[str, torch.Tensor] | None = None,
    token_chunk: int | None = None,
    memory_budget: int | None = None,
    ignore_index: int = -100,
    normalizer: str = "softmax",
    sequence_ids: torch.Tensor | None = None,
    backend: str | None = None,
    options: KernelOptions | None = None,
) -> PairFusedOutput:
    """Evaluate a pairwise preference loss through the pair-fused path (gradients formed in the forward).

    Shapes: hidden [2B, T, H] with rows 0..B-1 the chosen and B..2B-1 the rejected sequences of B pairs
    (the collator's layout), targets [2B, T] (``ignore_index`` = prompt/padding), weight [V, H].
    ``loss_fn(chunk: PairChunk) -> (contribution, metrics)`` is called per chunk of whole pairs; the
    contributions are summed into ``loss`` (see alignment.ops.pair_fused for the contract).

    ``token_inputs``: extra per-token tensors, each shaped like ``targets`` ([2B, T], e.g. a token-mask
    network's outputs or an anchor's per-token log-probabilities). Their scored positions are compacted with
    the hidden states and reach the loss as ``chunk.token_inputs[name]`` ([n], the chunk's tokens); those
    that require grad receive d loss / d input in backward (0 at unscored positions). They are carried in
    the op's statistics dtype (float32, float64 for float64 inputs).

    ``sequence_ids`` (shaped like ``targets``): packed rows (padding-free batches) where one row holds several
    sequences; each position names its sequence, 0..B-1 the chosen and B..2B-1 the rejected ones (-1 for
    padding). Row indices are the sequences otherwise. ``seq_logps`` is then [2B] in sequence order.

    ``options``: the logit and chunking options as one :class:`KernelOptions`, in place of those keywords
    (its ``vocab_chunk`` is unused: this path forms whole vocabulary rows).
    """
    _check(hidden, weight, targets, bias)
    if sequence_ids is None:
        if hidden.dim() != 3 or hidden.shape[0] % 2:
            raise ValueError(f"hidden must be [2B, T, H] (chosen rows then rejected rows), got {tuple(hidden.shape)}")
        sequence_ids = torch.arange(hidden.shape[0], device=hidden.device).unsqueeze(1).expand_as(targets)
    elif sequence_ids.shape != targets.shape:
        raise ValueError(
            f"sequence_ids must be shaped like targets {tuple(targets.shape)}, got {tuple(sequence_ids.shape)}"
        )
    n_sequences = int(sequence_ids.max()) + 1
    if n_sequences % 2:
        raise ValueError(f"sequence_ids must name 2B sequences (B chosen, then B rejected), got {n_sequences}")
    n_pairs = n_sequences // 2
    opts = _options(options, temperature, logit_scale, softcap, token_chunk, None, memory_budget, normalizer, backend)
    c = _compact(hidden, weight, targets, ref_hidden, ref_weight, ref_bias, ignore_index)
    mask = c.mask
    seq = sequence_ids.reshape(-1)[c.flat]
    metrics: dict[str, torch.Tensor] = {}
    names, stacked = _stack_inputs(token_inputs, targets, c.flat, hidden)
    loss, logp, ent, kl, col = PairFusedFn.apply(
        c.hidden, weight, bias, c.targets, seq, c.ref_hidden, c.ref_weight, c.ref_bias,
        n_pairs, loss_fn, opts, entropy, extras_grad, metrics, stacked, names,
    )  # fmt: skip
    token_logps = _scatter(logp, mask)
    seq_logps = torch.zeros(n_sequences, dtype=logp.dtype, device=logp.device).index_add_(0, seq, logp.detach())
    return PairFusedOutput(
        loss=loss,
        metrics=metrics,
        token_logps=token_logps,
        token_entropy=_scatter(ent, mask) if entropy else None,
        token_kl=_scatter(kl, mask) if ref_hidden is not None else None,
        seq_logps=seq_logps,
        collapsed=_scatter(col, mask, False),
        mask=mask,
    )


_DEFAULTS = (1.0, 1.0, None, None, None, None, "softmax", None)


def _options(options: KernelOptions | None, *keywords) -> KernelOptions:
    """One KernelOptions from ``options=`` or from the keywords (temperature, logit_scale, softcap, token_chunk,
    vocab_chunk, memory_budget, normalizer, backend), not both."""
    if options is None:
        return KernelOptions(*keywords)
    if not isinstance(options, KernelOptions):
        raise TypeError(f"options must be an alignment.ops.KernelOptions, got {type(options).__name__}")
    if tuple(keywords) != _DEFAULTS:
        raise ValueError("pass the kernel's options either as options=KernelOptions(...) or as keywords, not both")
    return options
