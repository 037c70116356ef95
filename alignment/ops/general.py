"""Path 1, general: chunked forward with online logsumexp; the backward recomputes each tile.

Cost: 4 GEMMs (logits forward; logits again, dh and dW backward), about 8*N*H*V FLOPs. Saves only O(N)
statistics (lse, E_p[z], the reference lse), so any downstream function of the outputs works.
"""

from __future__ import annotations

import torch

from alignment.ops.backend import on_cuda
from alignment.ops.options import KernelOptions
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


def local_targets(targets: torch.Tensor, v0: int, v1: int) -> torch.Tensor:
    """Target columns inside the vocabulary slice [v0, v1), -1 elsewhere."""
    inside = (targets >= v0) & (targets < v1)
    return torch.where(inside, targets - v0, torch.full_like(targets, -1))


def _slice(t: torch.Tensor | None, v0: int, v1: int) -> torch.Tensor | None:
    return None if t is None else t[v0:v1]


class GeneralFn(torch.autograd.Function):
    """Inputs are compacted (every target is a real token id). Returns logp, lse, entropy, kl, collapsed."""

    @staticmethod
    def forward(
        ctx, hidden, weight, bias, targets, ref_hidden, ref_weight, ref_bias, opts: KernelOptions, entropy, extras_grad
    ):
        ctx.set_materialize_grads(False)
        dtype = stat_dtype(hidden)
        n, vocab = hidden.shape[0], weight.shape[0]
        kl = ref_hidden is not None
        buffers = 1 + int(entropy) + 3 * int(kl)
        tc, vc = opts.chunks(n, vocab, buffers, torch.finfo(dtype).bits // 8)
        parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("logp", "lse", "ent", "kl", "col", "mz", "lser")}
        ws, ws_ref = Workspace(tc, vc, dtype, hidden.device), Workspace(tc, vc, dtype, hidden.device)
        for t0 in range(0, n, tc):
            t1 = min(t0 + tc, n)
            h = hidden[t0:t1]
            stats = RowStats.empty(t1 - t0, dtype, hidden.device, entropy, kl, opts.stable, opts.uses_triton(hidden))
            for v0 in range(0, vocab, vc):
                v1 = min(v0 + vc, vocab)
                z = logits_tile(h, weight[v0:v1], _slice(bias, v0, v1), opts, dtype, ws.tile(t1 - t0, v1 - v0))
                zr = None
                if kl:
                    zr = logits_tile(
                        ref_hidden[t0:t1],
                        ref_weight[v0:v1],
                        _slice(ref_bias, v0, v1),
                        opts,
                        dtype,
                        ws_ref.tile(t1 - t0, v1 - v0),
                    )
                accumulate(stats, z, local_targets(targets[t0:t1], v0, v1), zr)
            lse = stats.lse()
            parts["lse"].append(lse)
            parts["logp"].append(stats.zy - lse)
            parts["col"].append(stats.collapsed())
            if entropy:
                parts["mz"].append(stats.mean_z())
                parts["ent"].append(lse - parts["mz"][-1])
            if kl:
                parts["lser"].append(stats.lse_ref())
                parts["kl"].append(stats.kl_ref())

        def cat(key, wanted=True, kind=dtype):
            if not wanted:
                return None
            return torch.cat(parts[key]) if parts[key] else torch.zeros(0, dtype=kind, device=hidden.device)

        logp, lse, ent, kl_out = cat("logp"), cat("lse"), cat("ent", entropy), cat("kl", kl)
        col = cat("col", kind=torch.bool)
        ctx.save_for_backward(
            hidden, weight, bias, targets, ref_hidden, ref_weight, ref_bias, lse, cat("mz"), cat("lser")
        )
        ctx.opts, ctx.chunks = opts, (tc, vc)
        ctx.mark_non_differentiable(col)
        return logp, lse, ent, kl_out, col

    @staticmethod
    def backward(ctx, g_logp, g_lse, g_ent, g_kl, _g_col):
        hidden, weight, bias, targets, ref_hidden, ref_weight, ref_bias, lse, mean_z, lse_ref = ctx.saved_tensors
        opts, (tc, vc) = ctx.opts, ctx.chunks
        grads_all = RowGrads(g_logp, g_lse, g_ent, g_kl)
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        if not grads_all.any() or not (need_h or need_w or need_b):
            return (None,) * 10
        dtype = stat_dtype(hidden)
        n, vocab = hidden.shape[0], weight.shape[0]
        dh = torch.zeros(hidden.shape, dtype=dtype, device=hidden.device) if need_h else None
        dw = torch.zeros(weight.shape, dtype=dtype, device=weight.device) if need_w else None
        db = torch.zeros(bias.shape, dtype=dtype, device=bias.device) if need_b else None
        keep_z = g_ent is not None or opts.softcap is not None or opts.stable
        ws, ws_ref = Workspace(tc, vc, dtype, hidden.device), Workspace(tc, vc, dtype, hidden.device)
        for t0 in range(0, n, tc):
            t1 = min(t0 + tc, n)
            rows = slice(t0, t1)
            h = hidden[rows]
            h_mm = h if h.dtype == dtype or on_cuda(h.device) else h.to(dtype)  # CPU: upcast once per chunk
            grads = RowGrads(*(None if g is None else g[rows] for g in (g_logp, g_lse, g_ent, g_kl)))
            for v0 in range(0, vocab, vc):
                v1 = min(v0 + vc, vocab)
                z = logits_tile(h, weight[v0:v1], _slice(bias, v0, v1), opts, dtype, ws.tile(t1 - t0, v1 - v0))
                p = grad_probabilities(z, lse[rows], opts, keep_z)
                q = None
                if g_kl is not None:
                    zr = logits_tile(
                        ref_hidden[rows],
                        ref_weight[v0:v1],
                        _slice(ref_bias, v0, v1),
                        opts,
                        dtype,
                        ws_ref.tile(t1 - t0, v1 - v0),
                    )
                    q = zr.sub_(lse_ref[rows].unsqueeze(1)).exp_()
                mz = None if mean_z is None else mean_z[rows]
                da = grad_tile(p, z if keep_z else None, q, local_targets(targets[rows], v0, v1), grads, mz, opts)
                da = gemm_operand(da, weight)
                if need_h:
                    dh[rows] += matmul(da, weight[v0:v1], dtype)
                if need_w:
                    addmm_(dw[v0:v1], da.t(), h_mm)
                if need_b:
                    db[v0:v1] += da.sum(dim=0)
                del z, p, q, da
        cast = [None if g is None else g.to(x.dtype) for g, x in ((dh, hidden), (dw, weight), (db, bias))]
        return (*cast, *(None,) * 7)
