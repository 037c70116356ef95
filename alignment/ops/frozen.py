"""Path 3, frozen head: W (and b) take no gradient, so dh is formed in the forward pass.

For each row, every output's gradient w.r.t. h is a fixed vector times its upstream scalar:
with d = dz/da (scale / temperature, times 1 - tanh^2 under softcap) and P = p * d,

    d logp / dh = d_y W_y - P W        d lse / dh = P W
    (StableMax: P = s'(z) / sum s(z) * d, and d_y carries the factor s'(z_y) / s(z_y) = 1 / (1 + |z_y|))
    d H / dh    = -(P * (z - E_p[z])) W                d kl / dh = P W - (q * d) W

so the forward needs the logits GEMM plus one GEMM (P W) for logp and lse, and one more for each of
entropy and kl_ref when they carry gradients: about 4*N*H*V FLOPs for log-probabilities. The backward is
a few [N, H] multiply-adds. Whole vocabulary rows per tile (the token chunk shrinks to fit the budget).
"""

from __future__ import annotations

import torch

from alignment.ops.options import KernelOptions
from alignment.ops.tiles import RowStats, Workspace, accumulate, logits_derivative, logits_tile, matmul, stat_dtype


def _derivative_at(z_y: torch.Tensor, like: torch.Tensor, opts) -> torch.Tensor:
    """dz/da at the targets' logits [n] (the linear factor, or the softcap's (1 - tanh^2) scale)."""
    if opts.softcap is None:
        return torch.full_like(like, opts.linear_factor)
    t = z_y * (opts.temperature / opts.softcap)
    return (1.0 - t * t) * (opts.logit_scale / opts.temperature)


class FrozenHeadFn(torch.autograd.Function):
    """Inputs are compacted (every target is a real token id). Returns logp, lse, entropy, kl, collapsed."""

    @staticmethod
    def forward(
        ctx, hidden, weight, bias, targets, ref_hidden, ref_weight, ref_bias, opts: KernelOptions, entropy, extras_grad
    ):
        ctx.set_materialize_grads(False)
        dtype = stat_dtype(hidden)
        n, vocab = hidden.shape[0], weight.shape[0]
        kl = ref_hidden is not None
        keep_z = entropy or kl or opts.softcap is not None or opts.stable
        tc, _ = opts.chunks(n, vocab, 1 + int(keep_z) + 2 * int(kl), torch.finfo(dtype).bits // 8, full_vocab=True)
        with_grad = hidden.requires_grad
        keys = ("logp", "lse", "ent", "kl", "col", "pw", "wy", "uent", "uq")
        parts: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
        ws, ws_ref = Workspace(tc, vocab, dtype, hidden.device), Workspace(tc, vocab, dtype, hidden.device)
        for t0 in range(0, n, tc):
            t1 = min(t0 + tc, n)
            y = targets[t0:t1]
            stats = RowStats.empty(t1 - t0, dtype, hidden.device, entropy, kl, opts.stable, opts.uses_triton(hidden))
            z = logits_tile(hidden[t0:t1], weight, bias, opts, dtype, ws.tile(t1 - t0, vocab))
            zr = (
                logits_tile(ref_hidden[t0:t1], ref_weight, ref_bias, opts, dtype, ws_ref.tile(t1 - t0, vocab))
                if kl
                else None
            )
            p = accumulate(stats, z, y, zr, keep_z=keep_z).div_(stats.s.unsqueeze(1))
            lse = stats.lse()
            parts["lse"].append(lse)
            parts["logp"].append(stats.zy - lse)
            parts["col"].append(stats.collapsed())
            if entropy:
                parts["ent"].append(lse - stats.mean_z())
            if kl:
                parts["kl"].append(stats.kl_ref())
            if not with_grad:
                continue
            zy = z.gather(1, y.unsqueeze(1)).squeeze(1)
            d_y = _derivative_at(zy, lse, opts)
            if opts.stable:  # d log s(z_y) / dz_y = 1 / (1 + |z_y|) (z is intact under StableMax)
                d_y = d_y / (1 + zy.abs())
            parts["wy"].append(weight[y].to(dtype) * d_y.unsqueeze(1))
            ent_grad, kl_grad = entropy and extras_grad, kl and extras_grad
            if stats.triton:  # p d, q d and the entropy tile in one kernel
                from alignment.ops import triton

                centered = triton.frozen_tiles(p, z, zr if kl_grad else None, stats.mean_z() if ent_grad else None,
                                               stats.lse_ref() if kl_grad else None, opts)  # fmt: skip
                if ent_grad:
                    parts["uent"].append(matmul(centered, weight, dtype).neg_())
                if kl_grad:
                    parts["uq"].append(matmul(zr, weight, dtype))
                parts["pw"].append(matmul(p, weight, dtype))
                del z, zr, p, centered
                continue
            d = logits_derivative(z, opts) if opts.softcap is not None else opts.linear_factor
            if ent_grad:
                centered = (z - stats.mean_z().unsqueeze(1)).mul_(p).mul_(d)
                parts["uent"].append(matmul(centered, weight, dtype).neg_())
            if kl_grad:
                q = zr.sub_(stats.lse_ref().unsqueeze(1)).exp_().mul_(d)
                parts["uq"].append(matmul(q, weight, dtype))
            parts["pw"].append(matmul(p.mul_(d), weight, dtype))
            del z, zr, p

        def cat(key, wanted=True, kind=dtype, width=None):
            if not wanted:
                return None
            if parts[key]:
                return torch.cat(parts[key])
            return torch.zeros((0, width) if width else 0, dtype=kind, device=hidden.device)

        grad_h = with_grad
        width = hidden.shape[1]
        ctx.save_for_backward(
            cat("pw", grad_h, width=width),
            cat("wy", grad_h, width=width),
            cat("uent", grad_h and entropy and extras_grad, width=width),
            cat("uq", grad_h and kl and extras_grad, width=width),
        )
        ctx.hidden_dtype = hidden.dtype
        col = cat("col", kind=torch.bool)
        ctx.mark_non_differentiable(col)
        return cat("logp"), cat("lse"), cat("ent", entropy), cat("kl", kl), col

    @staticmethod
    def backward(ctx, g_logp, g_lse, g_ent, g_kl, _g_col):
        pw, wy, u_ent, u_q = ctx.saved_tensors
        if not ctx.needs_input_grad[0] or pw is None:
            return (None,) * 10
        dh = torch.zeros_like(pw)
        if g_logp is not None:
            dh += g_logp.to(dh.dtype).unsqueeze(1) * (wy - pw)
        if g_lse is not None:
            dh += g_lse.to(dh.dtype).unsqueeze(1) * pw
        if g_ent is not None:
            dh += g_ent.to(dh.dtype).unsqueeze(1) * u_ent
        if g_kl is not None:
            dh += g_kl.to(dh.dtype).unsqueeze(1) * (pw - u_q)
        return (dh.to(ctx.hidden_dtype), *(None,) * 9)
