"""Path 2, pair-fused: the loss is evaluated inside the op, chunk by chunk of whole (chosen, rejected)
pairs, and dh, dW are formed in the forward pass (gradient-in-forward, as Liger-Kernel's chunked losses).

Preference losses (DPO, RPO, IPO, SparsePO, INPO) are sums over pairs, so the total loss is the sum of
each chunk's contribution and a chunk's gradients depend only on its own pairs. Per chunk: logits tile
(GEMM 1), statistics, the loss function on the chunk's sequence log-probabilities (a tiny autograd graph
gives dL/dlogp per token), then dh = dA W (GEMM 2) and dW += dA^T h (GEMM 3): about 6*N*H*V FLOPs.

A chunk never holds more than ``token_chunk`` x V logits. A pair longer than that (Liger-Kernel issue
#439) is processed in token sub-chunks in two passes: statistics first, then, once the loss gives the
per-sequence gradients, a recomputation of each sub-chunk's logits (4 GEMMs for those pairs only).

The loss is a callable ``loss_fn(chunk: PairChunk) -> (contribution, metrics)``: ``contribution`` is
that chunk's share of the total loss (e.g. the sum of its per-pair losses divided by the total number of
pairs), ``metrics`` a dict of per-pair tensors [k]. It is the pure function from alignment/losses, bound to
its parameters and reference values by the caller.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from alignment.ops.tiles import (
    RowGrads,
    RowStats,
    Workspace,
    accumulate,
    addmm_,
    gemm_operand,
    grad_probabilities,
    grad_tile,
    logits_tile,
    matmul,
    stat_dtype,
)


@dataclass
class PairChunk:
    """What a loss function sees for k pairs (all per-token tensors are over the chunk's scored tokens).

    pair_index [k]: global pair ids (index per-pair inputs such as reference log-probabilities with it).
    chosen_logps, rejected_logps [k]: summed log-probabilities of each response (differentiable).
    chosen_tokens, rejected_tokens [k]: scored token counts.
    token_logps [n], token_pair [n] (0..k-1), token_chosen [n] bool; token_entropy, token_kl [n] or None;
    token_lse [n]: each token's logsumexp of the logits (differentiable: a z-loss c * lse^2 gets its gradient).
    token_inputs: the caller's extra per-token tensors (``pair_fused_loss(token_inputs=...)``), each [n] over
    the same tokens in the same order (differentiable: their gradient flows back to the caller's tensors).

    The order of the n tokens is the op's (pair by pair); a loss reduces them with ``token_pair`` and
    ``token_chosen`` (e.g. ``index_add``), never by position.
    """

    pair_index: torch.Tensor
    chosen_logps: torch.Tensor
    rejected_logps: torch.Tensor
    chosen_tokens: torch.Tensor
    rejected_tokens: torch.Tensor
    token_logps: torch.Tensor
    token_pair: torch.Tensor
    token_chosen: torch.Tensor
    token_entropy: torch.Tensor | None = None
    token_kl: torch.Tensor | None = None
    token_inputs: dict[str, torch.Tensor] = field(default_factory=dict)
    token_lse: torch.Tensor | None = None

    #: sequence parallelism: the sum of a per-sequence tensor over the ranks holding the other positions (None:
    #: this rank holds whole sequences); applied to every per-sequence sum and count
    sequence_sum: Callable | None = None

    @classmethod
    def build(
        cls, pair_index, token_pair, token_chosen, logp, entropy=None, kl=None, token_inputs=None, lse=None,
        sequence_sum=None,
    ) -> PairChunk:  # fmt: skip
        k = pair_index.numel()
        reduce = sequence_sum or (lambda t: t)
        sums = reduce(side_sums(logp, token_pair, token_chosen, k))
        counts = reduce(torch.bincount(_slots(token_pair, token_chosen, k), minlength=2 * k))
        return cls(
            pair_index, sums[:k], sums[k:], counts[:k], counts[k:], logp, token_pair, token_chosen, entropy, kl,
            dict(token_inputs or {}), lse, sequence_sum,
        )  # fmt: skip

    def token_sums(self, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-pair sums of a per-token tensor [n] over the chosen and the rejected tokens: ([k], [k])."""
        k = self.pair_index.numel()
        sums = side_sums(values, self.token_pair, self.token_chosen, k)
        if self.sequence_sum is not None:
            sums = self.sequence_sum(sums)
        return sums[:k], sums[k:]


def _slots(token_pair, token_chosen, k: int) -> torch.Tensor:
    """Each token's sequence: chosen sequences 0..k-1, rejected k..2k-1."""
    return token_pair + k * (~token_chosen).long()


def side_sums(values, token_pair, token_chosen, k: int) -> torch.Tensor:
    """Sums of per-token ``values`` [n] per sequence: [2k] (the k chosen sequences, then the k rejected)."""
    slots = _slots(token_pair, token_chosen, k)
    return torch.zeros(2 * k, dtype=values.dtype, device=values.device).index_add(0, slots, values)


LossFn = Callable[[PairChunk], tuple[torch.Tensor, dict[str, torch.Tensor]]]
"""A loss function may carry ``whole_batch = True``: it couples the pairs (e.g. AOT sorts them), so it is
called once on every pair of the batch; the logits are still formed tile by tile (two passes, 4 GEMMs). It may
carry ``sequence_sum`` (sequence parallelism: alignment.long_context.sequence_parallel.group_sum): the chunk's
per-sequence sums and counts are summed over the ranks holding the sequences' other positions, in one chunk."""


def plan_chunks(tokens_per_pair: list[int], token_chunk: int) -> list[tuple[int, int]]:
    """Greedy runs of consecutive pairs whose tokens fit ``token_chunk`` (a pair too long stands alone)."""
    chunks, start, total = [], 0, 0
    for i, n in enumerate(tokens_per_pair):
        if i > start and total + n > token_chunk:
            chunks.append((start, i))
            start, total = i, 0
        total += n
    if tokens_per_pair:
        chunks.append((start, len(tokens_per_pair)))
    return chunks


class _Work:
    """Per-call state: inputs, options, gradient accumulators."""

    def __init__(self, hidden, weight, bias, targets, ref, opts, entropy, extras_grad, needs, inputs, input_names):
        self.hidden, self.weight, self.bias, self.targets = hidden, weight, bias, targets
        self.inputs, self.input_names = inputs, input_names  # the caller's token inputs [n, K] (or None)
        self.ref_hidden, self.ref_weight, self.ref_bias = ref
        self.kl = self.ref_hidden is not None
        self.opts, self.entropy, self.extras_grad = opts, entropy, extras_grad
        self.dtype = stat_dtype(hidden)
        dev = hidden.device
        # each token's dh row is written once, so it is kept in the hidden states' dtype: the cast the backward
        # made before scaling it (PairFusedFn.backward) is made as it is written, and a bf16 dh is half the size
        self.dh = torch.zeros(hidden.shape, dtype=hidden.dtype, device=dev) if needs[0] else None
        self.dw = torch.zeros(weight.shape, dtype=self.dtype, device=dev) if needs[1] else None
        self.db = torch.zeros(bias.shape, dtype=self.dtype, device=dev) if needs[2] else None
        self.dinputs = torch.zeros_like(inputs) if inputs is not None and needs[3] else None
        self.keep_z = entropy or self.kl or opts.softcap is not None or opts.stable
        self.ws = self.ws_ref = None

    def workspaces(self, token_chunk: int):
        vocab = self.weight.shape[0]
        self.ws = Workspace(token_chunk, vocab, self.dtype, self.hidden.device)
        self.ws_ref = Workspace(token_chunk, vocab, self.dtype, self.hidden.device)

    def tiles(self, idx):
        h = self.hidden[idx]
        n, vocab = idx.numel(), self.weight.shape[0]
        z = logits_tile(h, self.weight, self.bias, self.opts, self.dtype, self.ws.tile(n, vocab))
        zr = None
        if self.kl:
            zr = logits_tile(
                self.ref_hidden[idx], self.ref_weight, self.ref_bias, self.opts, self.dtype, self.ws_ref.tile(n, vocab)
            )
        return h, z, zr

    def backprop(self, idx, h, da):
        da = gemm_operand(da, self.weight)
        if self.dh is not None:
            self.dh[idx] = matmul(da, self.weight, self.dtype).to(self.dh.dtype)
        if self.dw is not None:
            addmm_(self.dw, da.t(), h)
        if self.db is not None:
            self.db += da.sum(dim=0)

    def outputs(self, stats: RowStats):
        lse = stats.lse()
        ent = lse - stats.mean_z() if self.entropy else None
        kl = stats.kl_ref() if self.kl else None
        return stats.zy - lse, lse, ent, kl


def _loss_grads(work: _Work, idx, pair_index, token_pair, token_chosen, logp, ent, kl, loss_fn, lse=None):
    """Evaluate the loss on detached leaves; return (contribution, metrics, RowGrads for the tokens). The
    gradient of the caller's token inputs is written into ``work.dinputs`` at ``idx``; the per-token lse is
    a leaf too (its gradient is None, and costs nothing, unless the loss reads it)."""
    with torch.enable_grad():
        leaves = [logp.detach().requires_grad_()]
        lse_in = None if lse is None else lse.detach().requires_grad_()
        ent_in = kl_in = inputs = None
        if ent is not None:
            ent_in = ent.detach().requires_grad_(work.extras_grad)
        if kl is not None:
            kl_in = kl.detach().requires_grad_(work.extras_grad)
        leaves += [x for x in (ent_in, kl_in) if x is not None and x.requires_grad]
        named = {}
        if work.inputs is not None:
            inputs = work.inputs[idx].detach().requires_grad_(work.dinputs is not None)
            named = {name: inputs[:, j] for j, name in enumerate(work.input_names)}
        chunk = PairChunk.build(pair_index, token_pair, token_chosen, leaves[0], ent_in, kl_in, named, lse_in,
                                getattr(loss_fn, "sequence_sum", None))  # fmt: skip
        contribution, metrics = loss_fn(chunk)
        if not isinstance(contribution, torch.Tensor) or contribution.dim() != 0:
            raise ValueError("a pair-fused loss function must return a scalar tensor as its contribution")
        targets = leaves + ([inputs] if work.dinputs is not None else []) + ([lse_in] if lse_in is not None else [])
        grads = torch.autograd.grad(contribution, targets, allow_unused=True) if contribution.requires_grad else []
    grads = list(grads) + [None] * (len(targets) - len(grads))
    g_lse = grads.pop() if lse_in is not None else None
    if work.dinputs is not None and grads[-1] is not None:
        work.dinputs[idx] = grads[-1].to(work.dinputs.dtype)
    g = dict(
        zip(["logp"] + [n for n, x in (("ent", ent_in), ("kl", kl_in)) if x is not None and x.requires_grad], grads)
    )
    metrics = {k: v.detach() for k, v in metrics.items()}
    return contribution.detach(), metrics, RowGrads(logp=g.get("logp"), lse=g_lse, entropy=g.get("ent"), kl=g.get("kl"))


def _one_pass(work: _Work, idx, y, pair_index, token_pair, token_chosen, loss_fn):
    """A chunk whose tokens fit: logits once, loss, gradients in place (3 GEMMs)."""
    h, z, zr = work.tiles(idx)
    stats = RowStats.empty(
        idx.numel(), work.dtype, z.device, work.entropy, work.kl, work.opts.stable, work.opts.uses_triton(z)
    )
    p = accumulate(stats, z, y, zr, keep_z=work.keep_z).div_(stats.s.unsqueeze(1))
    logp, lse, ent, kl = work.outputs(stats)
    contribution, metrics, grads = _loss_grads(
        work, idx, pair_index, token_pair, token_chosen, logp, ent, kl, loss_fn, lse
    )
    q = zr.sub_(stats.lse_ref().unsqueeze(1)).exp_() if grads.kl is not None else None
    mean_z = stats.mean_z() if work.entropy else None
    if grads.any():
        work.backprop(idx, h, grad_tile(p, z if work.keep_z else None, q, y, grads, mean_z, work.opts))
    return contribution, metrics, (logp, ent, kl, stats.collapsed())


def _two_pass(work: _Work, idx, y, pair_index, token_pair, token_chosen, loss_fn, token_chunk):
    """A pair longer than the token chunk: statistics by sub-chunks, loss, then recompute (4 GEMMs)."""
    saved = []
    for s0 in range(0, idx.numel(), token_chunk):
        sub = slice(s0, s0 + token_chunk)
        _, z, zr = work.tiles(idx[sub])
        stats = RowStats.empty(
            z.shape[0], work.dtype, z.device, work.entropy, work.kl, work.opts.stable, work.opts.uses_triton(z)
        )
        accumulate(stats, z, y[sub], zr)
        saved.append((stats, *work.outputs(stats)))
    logp = torch.cat([s[1] for s in saved])
    lse_all = torch.cat([s[2] for s in saved])
    ent = torch.cat([s[3] for s in saved]) if work.entropy else None
    kl = torch.cat([s[4] for s in saved]) if work.kl else None
    contribution, metrics, grads = _loss_grads(
        work, idx, pair_index, token_pair, token_chosen, logp, ent, kl, loss_fn, lse_all
    )
    if grads.any():
        for s0, (stats, _, lse, _, _) in zip(range(0, idx.numel(), token_chunk), saved):
            sub = slice(s0, s0 + token_chunk)
            h, z, zr = work.tiles(idx[sub])
            p = grad_probabilities(z, lse, work.opts, work.keep_z)
            q = zr.sub_(stats.lse_ref().unsqueeze(1)).exp_() if grads.kl is not None else None
            sub_grads = RowGrads(
                *(None if g is None else g[sub] for g in (grads.logp, grads.lse, grads.entropy, grads.kl))
            )
            mean_z = stats.mean_z() if work.entropy else None
            da = grad_tile(p, z if work.keep_z else None, q, y[sub], sub_grads, mean_z, work.opts)
            work.backprop(idx[sub], h, da)
    collapsed = torch.cat([s[0].collapsed() for s in saved])
    return contribution, metrics, (logp, ent, kl, collapsed)


class PairFusedFn(torch.autograd.Function):
    """Returns (loss, token logps, token entropy, token kl, token collapsed flags); metrics go to
    ``out_metrics`` (a dict). ``inputs`` [n, K] (or None): the caller's per-token tensors, stacked, named
    by ``input_names``; their gradient is formed in the forward like dh."""

    @staticmethod
    def forward(
        ctx,
        hidden,
        weight,
        bias,
        targets,
        seq,
        ref_hidden,
        ref_weight,
        ref_bias,
        n_pairs,
        loss_fn,
        opts,
        entropy,
        extras_grad,
        out_metrics,
        inputs,
        input_names,
    ):
        needs = (*ctx.needs_input_grad[:3], ctx.needs_input_grad[14])
        ref = (ref_hidden, ref_weight, ref_bias)
        work = _Work(hidden, weight, bias, targets, ref, opts, entropy, extras_grad, needs, inputs, input_names)
        n, vocab = hidden.shape[0], weight.shape[0]
        buffers = 1 + int(work.keep_z) + 2 * int(work.kl)
        token_chunk, _ = opts.chunks(n, vocab, buffers, torch.finfo(work.dtype).bits // 8, full_vocab=True)
        work.workspaces(token_chunk)
        pair = seq % n_pairs
        order = torch.argsort(pair, stable=True)
        counts = torch.bincount(pair, minlength=n_pairs).tolist()
        bounds = [0]
        for c in counts:
            bounds.append(bounds[-1] + c)
        total = torch.zeros((), dtype=work.dtype, device=hidden.device)
        token_out = [torch.zeros(n, dtype=work.dtype, device=hidden.device) for _ in range(3)]
        token_out.append(torch.zeros(n, dtype=torch.bool, device=hidden.device))
        metric_parts: dict[str, list] = {}
        # a loss coupling the pairs, or sums over ranks (one collective per call whatever a rank holds): one chunk
        whole = getattr(loss_fn, "whole_batch", False) or getattr(loss_fn, "sequence_sum", None) is not None
        plan = [(0, n_pairs)] if whole else plan_chunks(counts, token_chunk)
        for p0, p1 in plan:
            idx = order[bounds[p0] : bounds[p1]]
            pair_index = torch.arange(p0, p1, device=hidden.device)
            token_pair = pair[idx] - p0
            token_chosen = seq[idx] < n_pairs
            y = targets[idx]
            args = (work, idx, y, pair_index, token_pair, token_chosen, loss_fn)
            if idx.numel() <= token_chunk:
                contribution, metrics, outs = _one_pass(*args)
            else:
                contribution, metrics, outs = _two_pass(*args, token_chunk)
            total += contribution
            for buf, val in zip(token_out, outs):
                if val is not None:
                    buf[idx] = val.detach().to(buf.dtype)
            for key, val in metrics.items():
                metric_parts.setdefault(key, []).append(val)
        out_metrics.update({k: torch.cat([v.reshape(-1) for v in vals]) for k, vals in metric_parts.items()})
        ctx.save_for_backward(work.dh, work.dw, work.db, work.dinputs)
        ctx.dtypes = (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
        logp, ent, kl, collapsed = token_out
        ctx.mark_non_differentiable(logp, ent, kl, collapsed)
        return total, logp, ent, kl, collapsed

    @staticmethod
    def backward(ctx, g_loss, *_):
        def scaled(g, dtype):  # a lower-precision result is cast first and scaled in place (no second float32 [V, H])
            if g is None or g_loss is None:
                return None
            return g * g_loss if g.dtype == dtype else g.to(dtype).mul_(g_loss.to(dtype))

        dh, dw, db, dinputs = ctx.saved_tensors
        grads = [scaled(g, dtype) for g, dtype in zip((dh, dw, db), ctx.dtypes)]
        return *grads, *(None,) * 11, None if dinputs is None else scaled(dinputs, dinputs.dtype), None
