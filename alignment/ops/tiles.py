"""The math on one [n, v] tile of logits, shared by the three paths.

Notation for one token row: z the final logits (after scale, softcap and temperature), m = max z,
e = exp(z - m), s = sum e, lse = m + log s, p = e / s, y the target.

- logp      = z_y - lse                           d/dz = onehot(y) - p
- lse                                              d/dz = p
- entropy   = lse - E_p[z]                         d/dz = -p * (z - E_p[z])
- kl_ref    = sum q (log q - log p), q = softmax(z_ref)   d/dz = p - q
- collapsed = (s == 1 in float32)                  no gradient

A tile covers a slice [v0, v1) of the vocabulary. Partial statistics of the slices are merged with the
online (running max, rescaled sum) rule, so a whole row never needs to be in memory at once.
"""

from __future__ import annotations

import torch

from alignment.ops.backend import on_cuda
from alignment.ops.options import KernelOptions
from alignment.ops.rows import RowGrads, RowStats, stablemax


def stat_dtype(x: torch.Tensor) -> torch.dtype:
    """float64 for float64 inputs (gradcheck), float32 otherwise (bf16/fp16 inputs accumulate in float32)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


_MM_OUT_DTYPE = [True]  # whether torch.mm(..., out_dtype=) works on this GPU build (checked once)


def _gpu_mm(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype, out: torch.Tensor | None) -> torch.Tensor:
    """Low-precision GEMM with float32 output where torch supports it (no bf16 rounding of the logits:
    measured on an H200, bf16-rounded logits put the entropy 1.2% off the float64 reference), written
    straight into ``out`` (no second tile)."""
    if _MM_OUT_DTYPE[0]:
        try:
            return torch.mm(a, b, out_dtype=dtype, out=out) if out is not None else torch.mm(a, b, out_dtype=dtype)
        except (TypeError, RuntimeError, NotImplementedError):
            _MM_OUT_DTYPE[0] = False
    result = torch.mm(a, b).to(dtype)
    return out.copy_(result) if out is not None else result


def _low(a: torch.Tensor, b: torch.Tensor) -> torch.dtype:
    """The lower precision of two GEMM operands (a float32 gradient tile meets bf16 weights: the tile is cast,
    not the [V, H] weight)."""
    return a.dtype if a.element_size() < b.element_size() else b.dtype


def matmul(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype, out: torch.Tensor | None = None) -> torch.Tensor:
    """a @ b with the result in ``dtype``: low-precision inputs use the device's fast matmul on GPU (both
    operands in the lower precision of the two, float32 output where supported) and are upcast on CPU (where
    bf16 GEMMs are slow and round their output)."""
    if a.dtype == dtype and b.dtype == dtype:
        return torch.mm(a, b, out=out)
    if on_cuda(a.device):
        low = _low(a, b)
        return _gpu_mm(a.to(low), b.to(low), dtype, out)
    result = torch.mm(a.to(dtype), b.to(dtype))
    if out is not None:
        out.copy_(result)
        return out
    return result


def gemm_operand(da: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The gradient tile as both backward GEMMs read it: on GPU in the weight's lower precision, cast once (not
    once per GEMM); unchanged on CPU."""
    if on_cuda(da.device) and weight.element_size() < da.element_size():
        return da.to(weight.dtype)
    return da


def addmm_(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """acc += a @ b for a float32 (float64) accumulator, as ``matmul`` forms products: on GPU in the lower
    precision of the operands with float32 accumulation (no float32 copy of a bf16 operand)."""
    if a.dtype == acc.dtype and b.dtype == acc.dtype:
        return acc.addmm_(a, b)
    if on_cuda(a.device):
        low = _low(a, b)
        if _MM_OUT_DTYPE[0]:
            try:
                return torch.addmm(acc, a.to(low), b.to(low), out_dtype=acc.dtype, out=acc)
            except (TypeError, RuntimeError, NotImplementedError):
                _MM_OUT_DTYPE[0] = False
        return acc.add_(torch.mm(a.to(low), b.to(low)))
    return acc.addmm_(a.to(acc.dtype), b.to(acc.dtype))


class Workspace:
    """One reusable buffer for the [n, v] logits tiles of a call, so that a new tile never coexists with
    the previous one (the peak stays at one tile per role)."""

    def __init__(self, rows: int, cols: int, dtype: torch.dtype, device: torch.device):
        self.numel, self.dtype, self.device = rows * cols, dtype, device
        self.buffer: torch.Tensor | None = None

    def tile(self, n: int, v: int) -> torch.Tensor:
        if self.buffer is None:
            self.buffer = torch.empty(self.numel, dtype=self.dtype, device=self.device)
        return self.buffer[: n * v].view(n, v)


def logits_tile(
    h: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    opts: KernelOptions,
    dtype: torch.dtype,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """z = softcap((h W^T + b) * scale) / T for a [n, H] block of h and a [v, H] slice of W -> [n, v]."""
    z = matmul(h, weight.t(), dtype, out=out)
    if bias is not None:
        z.add_(bias.to(dtype))
    if opts.softcap is None:
        if opts.linear_factor != 1.0:
            z.mul_(opts.linear_factor)
    else:
        z.mul_(opts.logit_scale / opts.softcap).tanh_().mul_(opts.softcap / opts.temperature)
    return z


def logits_derivative(z: torch.Tensor, opts: KernelOptions) -> torch.Tensor | float:
    """dz/da (elementwise) where a = h W^T + b, recovered from z itself."""
    if opts.softcap is None:
        return opts.linear_factor
    t = z * (opts.temperature / opts.softcap)
    return (1.0 - t * t).mul_(opts.logit_scale / opts.temperature)


#: columns per block where a whole-tile temporary would exceed the tiles the budget counts (row_dot, StableMax)
COLUMN_BLOCK = 8192


def stablemax_slope(x: torch.Tensor) -> torch.Tensor:
    """s'(x): 1 for x >= 0, 1 / (1 - x)^2 for x < 0."""
    return torch.where(x >= 0, torch.ones_like(x), (1 - x.clamp(max=0)).pow(-2))


def stablemax_tile_sum(z: torch.Tensor, block: int = COLUMN_BLOCK) -> torch.Tensor:
    """sum_v s(z[n, v]) -> [n], by column blocks: s's temporaries are [n, block], never whole tiles."""
    out = stablemax(z[:, :block]).sum(dim=1)
    for v0 in range(block, z.shape[1], block):
        out = out + stablemax(z[:, v0 : v0 + block]).sum(dim=1)
    return out


def stablemax_slope_tile(z: torch.Tensor, block: int = COLUMN_BLOCK) -> torch.Tensor:
    """s'(z) for a whole tile: one new [n, v] tile (the one the budget counts), filled by column blocks."""
    out = torch.empty_like(z)
    for v0 in range(0, z.shape[1], block):
        out[:, v0 : v0 + block] = stablemax_slope(z[:, v0 : v0 + block])
    return out


def grad_probabilities(z: torch.Tensor, lse: torch.Tensor, opts, keep_z: bool) -> torch.Tensor:
    """The tile whose rows the gradient is built from: softmax p = exp(z - lse) (in place on z unless
    ``keep_z``); StableMax q = s'(z) / sum s(z) = s'(z) exp(-lse) (a new tile; z is kept)."""
    if opts.uses_triton(z):
        from alignment.ops import triton

        return triton.grad_probabilities(z, lse, opts, keep_z)
    if opts.stable:
        return stablemax_slope_tile(z).mul_(torch.exp(-lse).unsqueeze(1))
    return torch.exp(z - lse.unsqueeze(1)) if keep_z else z.sub_(lse.unsqueeze(1)).exp_()


def row_dot(a: torch.Tensor, b: torch.Tensor, block: int = COLUMN_BLOCK) -> torch.Tensor:
    """sum_v a[n, v] * b[n, v] -> [n], by column blocks: the product temporary is [n, block], never a
    whole [n, v] tile beyond the ones the budget counts. (A bmm of rows would avoid the temporary but sums
    the long rows sequentially in float32: 20x less accurate at V = 1000.)"""
    out = torch.linalg.vecdot(a[:, :block], b[:, :block], dim=1)
    for v0 in range(block, a.shape[1], block):
        out = out + torch.linalg.vecdot(a[:, v0 : v0 + block], b[:, v0 : v0 + block], dim=1)
    return out


def _rescale(running_max: torch.Tensor, tile_max: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(new max, factor for the old sums): exp(old max - new max), 0 where the old max was -inf."""
    new = torch.maximum(running_max, tile_max)
    factor = torch.exp(running_max - new)
    return new, torch.nan_to_num(factor, nan=0.0)


def accumulate(
    stats: RowStats,
    z: torch.Tensor,
    y_local: torch.Tensor,
    zr: torch.Tensor | None = None,
    keep_z: bool = False,
) -> torch.Tensor:
    """Fold tile z [n, v] (and the reference tile zr) into ``stats``; return e = exp(z - m_new).

    Without ``keep_z`` (and without entropy or kl) z is overwritten in place by e; otherwise e is a new
    tensor and z is left intact. ``y_local`` [n] is the target's column in this tile, -1 when it lies in
    another tile.
    """
    if stats.triton:
        from alignment.ops import triton

        return triton.accumulate(stats, z, y_local, zr, keep_z)
    in_tile = y_local >= 0
    if in_tile.any():
        picked = z.gather(1, y_local.clamp(min=0).unsqueeze(1)).squeeze(1)
        stats.zy = torch.where(in_tile, torch.log(stablemax(picked)) if stats.stable else picked, stats.zy)
    if stats.stable:  # StableMax: plain sums (z left intact); the returned tile is s'(z), for the gradient
        stats.m = torch.maximum(stats.m, z.amax(dim=1))
        stats.s = stats.s + stablemax_tile_sum(z)
        return stablemax_slope_tile(z)
    new_m, factor = _rescale(stats.m, z.amax(dim=1))
    need_z = keep_z or stats.sz is not None or stats.szrz is not None
    # one new tile at most (exp in place on the difference): the peak stays at the tiles the budget counts
    e = (z - new_m.unsqueeze(1)).exp_() if need_z else z.sub_(new_m.unsqueeze(1)).exp_()
    stats.s = stats.s * factor + e.sum(dim=1)
    if stats.sz is not None:
        stats.sz = stats.sz * factor + row_dot(e, z)
    stats.m = new_m
    if stats.szrz is not None:
        new_mr, factor_r = _rescale(stats.mr, zr.amax(dim=1))
        er = (zr - new_mr.unsqueeze(1)).exp_()
        stats.sr = stats.sr * factor_r + er.sum(dim=1)
        stats.szr = stats.szr * factor_r + row_dot(er, zr)
        stats.szrz = stats.szrz * factor_r + row_dot(er, z)
        stats.mr = new_mr
    return e


def grad_tile(
    p: torch.Tensor,
    z: torch.Tensor | None,
    q: torch.Tensor | None,
    y_local: torch.Tensor,
    grads: RowGrads,
    mean_z: torch.Tensor | None,
    opts: KernelOptions,
) -> torch.Tensor:
    """Turn the probability tile p [n, v] into dL/da (a = h W^T + b) IN PLACE and return it.

    dL/dz = p * (g_lse - g_logp + g_kl - g_ent * (z - E_p[z])) - g_kl * q + g_logp * onehot(y)
    (StableMax: p is q = s'(z) / sum s(z), the onehot term is scaled by s'(z_y) / s(z_y); z is needed.)
    then times dz/da (scale / temperature, and 1 - tanh^2 under softcap). ``z`` is needed for the
    entropy term and for softcap; ``q`` (reference probabilities) for kl.
    """
    if opts.uses_triton(p):
        from alignment.ops import triton

        return triton.grad_tile(p, z, q, y_local, grads, mean_z, opts)
    coef = torch.zeros_like(p[:, 0])
    for g, sign in ((grads.lse, 1.0), (grads.logp, -1.0), (grads.kl, 1.0)):
        if g is not None:
            coef = coef + sign * g.to(coef.dtype)
    if grads.entropy is not None:
        centered = z - mean_z.unsqueeze(1)
        p.mul_(coef.unsqueeze(1) - grads.entropy.to(p.dtype).unsqueeze(1) * centered)
    else:
        p.mul_(coef.unsqueeze(1))
    if grads.kl is not None:  # fused, broadcast over the row: no [n, v] temporary (the budget counts none)
        p.addcmul_(grads.kl.to(p.dtype).unsqueeze(1), q, value=-1.0)
    if grads.logp is not None:
        rows = torch.nonzero(y_local >= 0).squeeze(1)
        if rows.numel():
            values = grads.logp.to(p.dtype)[rows]
            if opts.stable:  # d log s(z_y) / dz_y = s'(z_y) / s(z_y) = 1 / (1 + |z_y|)
                values = values / (1 + z[rows, y_local[rows]].abs())
            p.index_put_((rows, y_local[rows]), values, accumulate=True)
    derivative = logits_derivative(z, opts) if opts.softcap is not None else opts.linear_factor
    if isinstance(derivative, torch.Tensor) or derivative != 1.0:
        p.mul_(derivative)
    return p
