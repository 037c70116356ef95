"""alignment.ops.tiles' per-tile functions on Triton kernels (alignment.ops.triton.kernels), same contracts:
the three paths call these instead of the PyTorch ones when the backend is ``triton``."""

from __future__ import annotations

import torch

from alignment.ops.rows import RowGrads, RowStats
from alignment.ops.triton import kernels

MAX_BLOCK = 1024


def _block(v: int) -> int:
    return min(MAX_BLOCK, max(16, 1 << (max(v, 1) - 1).bit_length()))


def _rows(t: torch.Tensor) -> torch.Tensor:
    """A tile with unit column stride (the workspace tiles are contiguous already)."""
    return t if t.stride(1) == 1 else t.contiguous()


def accumulate(stats: RowStats, z: torch.Tensor, y_local: torch.Tensor, zr: torch.Tensor | None = None,
               keep_z: bool = False) -> torch.Tensor:  # fmt: skip
    """Fold tile z [n, v] (and the reference tile zr) into ``stats`` in one kernel; return e = exp(z - m_new)
    (StableMax: the slope tile s'(z)). z is overwritten by e unless ``keep_z`` or the entropy/KL sums need it."""
    z = _rows(z)
    n, v = z.shape
    if n == 0:
        return z if stats.stable else torch.empty_like(z)
    y = y_local.to(torch.int64).contiguous()
    if stats.stable:
        out = torch.empty_like(z)
        kernels.fold_stablemax[(n,)](z, out, y, stats.m, stats.s, stats.zy, v, z.stride(0), out.stride(0),
                                     BLOCK=_block(v))  # fmt: skip
        return out
    need_z = keep_z or stats.sz is not None or stats.szrz is not None
    e = torch.empty_like(z) if need_z else z
    ref = zr is not None and stats.szrz is not None
    zr = _rows(zr) if ref else z
    dummy = stats.s
    kernels.fold_softmax[(n,)](
        z, zr, e, y, stats.m, stats.s, stats.zy,
        stats.sz if stats.sz is not None else dummy,
        stats.mr if ref else dummy, stats.sr if ref else dummy, stats.szr if ref else dummy,
        stats.szrz if ref else dummy,
        v, z.stride(0), zr.stride(0), e.stride(0),
        HAS_SZ=stats.sz is not None, HAS_REF=ref, BLOCK=_block(v),
    )  # fmt: skip
    return e


def grad_probabilities(z: torch.Tensor, lse: torch.Tensor, opts, keep_z: bool) -> torch.Tensor:
    """Softmax p = exp(z - lse) (in place on z unless ``keep_z``); StableMax s'(z) exp(-lse) (a new tile)."""
    z = _rows(z)
    n, v = z.shape
    out = torch.empty_like(z) if (keep_z or opts.stable) else z
    if n:
        kernels.probabilities[(n,)](z, out, lse.to(z.dtype).contiguous(), v, z.stride(0), out.stride(0),
                                    STABLE=opts.stable, BLOCK=_block(v))  # fmt: skip
    return out


def grad_tile(p: torch.Tensor, z: torch.Tensor | None, q: torch.Tensor | None, y_local: torch.Tensor,
              grads: RowGrads, mean_z: torch.Tensor | None, opts) -> torch.Tensor:  # fmt: skip
    """dL/da in place on the probability tile p [n, v] (alignment.ops.tiles.grad_tile's formula)."""
    n, v = p.shape
    if n == 0:
        return p
    assert p.stride(1) == 1, "the probability tile is a workspace tile (unit column stride)"
    dtype = p.dtype
    coef = torch.zeros(n, dtype=dtype, device=p.device)
    for g, sign in ((grads.lse, 1.0), (grads.logp, -1.0), (grads.kl, 1.0)):
        if g is not None:
            coef = coef + sign * g.to(dtype)

    def row(values):
        return values.to(dtype).contiguous() if values is not None else coef

    has_z = z is not None
    z = _rows(z) if has_z else p
    q = _rows(q) if q is not None else p
    softcap = opts.softcap is not None
    kernels.grad_tile[(n,)](
        p, z, q, y_local.to(torch.int64).contiguous(), coef, row(grads.entropy), row(mean_z), row(grads.kl),
        row(grads.logp), v, p.stride(0), z.stride(0), q.stride(0), float(opts.linear_factor),
        float(opts.temperature / opts.softcap) if softcap else 1.0,
        float(opts.logit_scale / opts.temperature),
        HAS_ENT=grads.entropy is not None, HAS_KL=grads.kl is not None, HAS_LOGP=grads.logp is not None,
        STABLE=opts.stable, SOFTCAP=softcap, BLOCK=_block(v),
    )  # fmt: skip
    return p


def frozen_tiles(p: torch.Tensor, z: torch.Tensor, zr: torch.Tensor | None, mean_z: torch.Tensor | None,
                 lse_ref: torch.Tensor | None, opts) -> torch.Tensor | None:  # fmt: skip
    """The frozen-head path's per-tile work for dh in one kernel: p <- p d and zr <- exp(zr - lse_ref) d in
    place, and the entropy tile (z - E_p z) p d returned (None without entropy); d = dz/da."""
    n, v = p.shape
    entropy, kl = mean_z is not None, zr is not None
    centered = torch.empty_like(p) if entropy else None
    if n == 0:
        return centered
    softcap = opts.softcap is not None
    dummy_row = torch.zeros(1, dtype=p.dtype, device=p.device)
    kernels.frozen_tiles[(n,)](
        p, z, zr if kl else p, centered if entropy else p,
        mean_z.to(p.dtype).contiguous() if entropy else dummy_row,
        lse_ref.to(p.dtype).contiguous() if kl else dummy_row,
        v, p.stride(0), z.stride(0), zr.stride(0) if kl else p.stride(0),
        centered.stride(0) if entropy else p.stride(0),
        float(opts.linear_factor), float(opts.temperature / opts.softcap) if softcap else 1.0,
        float(opts.logit_scale / opts.temperature), HAS_ENT=entropy, HAS_KL=kl, SOFTCAP=softcap, BLOCK=_block(v),
    )  # fmt: skip
    return centered
