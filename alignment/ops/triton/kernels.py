"""The Triton kernels: one program per token row of a [n, v] tile, looping over the row in BLOCK columns.

- ``fold_softmax``: the online-softmax fold of a tile into the row statistics (alignment.ops.tiles.RowStats):
  tile max, rescaled sum of exp(z - m), the target logit, sum exp(z - m) z (entropy), and for a reference tile
  its max, sum, sum q z_ref and sum q z (KL to the reference); writes e = exp(z - m_new) (in place or into
  another tile). Two reads of the tile and one write, where the PyTorch tiles make five passes.
- ``fold_stablemax``: StableMax's fold (sum s(z), max z, log s(z_y)) and its slope tile s'(z).
- ``probabilities``: p = exp(z - lse) (softmax, in place allowed) or s'(z) exp(-lse) (StableMax).
- ``grad_tile``: dL/da in place on the probability tile: p (coef - g_ent (z - E_p z)) - g_kl q + g_logp onehot(y)
  (StableMax: the onehot term times 1 / (1 + |z_y|)), times dz/da (the linear factor, or the softcap's
  (1 - tanh^2) scale);
- ``frozen_tiles``: the frozen-head path's tiles for dh (p d, the entropy tile (z - E_p z) p d, q d).

Computation happens in the tile's dtype (float32, or float64 for the gradient checks); the Triton
interpreter (TRITON_INTERPRET=1) runs them on CPU tensors.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def fold_softmax(
    z_ptr, zr_ptr, e_ptr, y_ptr, m_ptr, s_ptr, zy_ptr, sz_ptr, mr_ptr, sr_ptr, szr_ptr, szrz_ptr,
    V, stride_z, stride_zr, stride_e,
    HAS_SZ: tl.constexpr, HAS_REF: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0).to(tl.int64)  # row * stride passes 2^31 on [16k, 128k] tiles
    y = tl.load(y_ptr + row)
    z_row = z_ptr + row * stride_z
    zr_row = zr_ptr + row * stride_zr
    cols = tl.arange(0, BLOCK)
    # pass 1: the tile's maxima and its target logit
    mask = cols < V
    z = tl.load(z_row + cols, mask=mask, other=float("-inf"))
    vmax = z
    vzy = tl.where(cols == y, z, 0.0)
    if HAS_REF:
        vmax_r = tl.load(zr_row + cols, mask=mask, other=float("-inf"))
    for v0 in range(BLOCK, V, BLOCK):
        c = v0 + cols
        mask = c < V
        z = tl.load(z_row + c, mask=mask, other=float("-inf"))
        vmax = tl.maximum(vmax, z)
        vzy += tl.where(c == y, z, 0.0)
        if HAS_REF:
            vmax_r = tl.maximum(vmax_r, tl.load(zr_row + c, mask=mask, other=float("-inf")))
    m_old = tl.load(m_ptr + row)
    m_new = tl.maximum(m_old, tl.max(vmax, 0))
    factor = tl.where(m_old == float("-inf"), 0.0, tl.exp(m_old - m_new))
    if HAS_REF:
        mr_old = tl.load(mr_ptr + row)
        mr_new = tl.maximum(mr_old, tl.max(vmax_r, 0))
        factor_r = tl.where(mr_old == float("-inf"), 0.0, tl.exp(mr_old - mr_new))
    # pass 2: the sums, and e written out
    vs = tl.zeros([BLOCK], dtype=vmax.dtype)
    vsz = tl.zeros([BLOCK], dtype=vmax.dtype)
    vsr = tl.zeros([BLOCK], dtype=vmax.dtype)
    vszr = tl.zeros([BLOCK], dtype=vmax.dtype)
    vszrz = tl.zeros([BLOCK], dtype=vmax.dtype)
    for v0 in range(0, V, BLOCK):
        c = v0 + cols
        mask = c < V
        z = tl.load(z_row + c, mask=mask, other=float("-inf"))
        e = tl.exp(z - m_new)  # 0 past the row's end
        vs += e
        z0 = tl.where(mask, z, 0.0)  # finite past the end: 0 * -inf would be NaN
        if HAS_SZ:
            vsz += e * z0
        if HAS_REF:
            zr = tl.load(zr_row + c, mask=mask, other=float("-inf"))
            er = tl.exp(zr - mr_new)
            vsr += er
            vszr += er * tl.where(mask, zr, 0.0)
            vszrz += er * z0
        tl.store(e_ptr + row * stride_e + c, e, mask=mask)
    tl.store(m_ptr + row, m_new)
    tl.store(s_ptr + row, tl.load(s_ptr + row) * factor + tl.sum(vs, 0))
    tl.store(zy_ptr + row, tl.where(y >= 0, tl.sum(vzy, 0), tl.load(zy_ptr + row)))
    if HAS_SZ:
        tl.store(sz_ptr + row, tl.load(sz_ptr + row) * factor + tl.sum(vsz, 0))
    if HAS_REF:
        tl.store(mr_ptr + row, mr_new)
        tl.store(sr_ptr + row, tl.load(sr_ptr + row) * factor_r + tl.sum(vsr, 0))
        tl.store(szr_ptr + row, tl.load(szr_ptr + row) * factor_r + tl.sum(vszr, 0))
        tl.store(szrz_ptr + row, tl.load(szrz_ptr + row) * factor_r + tl.sum(vszrz, 0))


@triton.jit
def _softcap_slope(z, softcap_in, softcap_out):
    """dz/da under softcap: z = c tanh(a s / c) / T, so dz/da = (1 - (z T / c)^2) s / T."""
    t = z * softcap_in
    return (1 - t * t) * softcap_out


@triton.jit
def _stablemax(x):
    return tl.where(x >= 0, x + 1, 1 / (1 - tl.minimum(x, 0)))


@triton.jit
def _stablemax_slope(x):
    below = 1 - tl.minimum(x, 0)
    return tl.where(x >= 0, 1.0, 1 / (below * below))


@triton.jit
def fold_stablemax(z_ptr, out_ptr, y_ptr, m_ptr, s_ptr, zy_ptr, V, stride_z, stride_out, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)  # row * stride passes 2^31 on [16k, 128k] tiles
    y = tl.load(y_ptr + row)
    cols = tl.arange(0, BLOCK)
    mask = cols < V
    z = tl.load(z_ptr + row * stride_z + cols, mask=mask, other=0.0)
    vmax = tl.where(mask, z, float("-inf"))
    vs = tl.where(mask, _stablemax(z), 0.0)
    vzy = tl.where(cols == y, z, 0.0)
    tl.store(out_ptr + row * stride_out + cols, _stablemax_slope(z), mask=mask)
    for v0 in range(BLOCK, V, BLOCK):
        c = v0 + cols
        mask = c < V
        z = tl.load(z_ptr + row * stride_z + c, mask=mask, other=0.0)
        vmax = tl.maximum(vmax, tl.where(mask, z, float("-inf")))
        vs += tl.where(mask, _stablemax(z), 0.0)
        vzy += tl.where(c == y, z, 0.0)
        tl.store(out_ptr + row * stride_out + c, _stablemax_slope(z), mask=mask)
    tl.store(m_ptr + row, tl.maximum(tl.load(m_ptr + row), tl.max(vmax, 0)))
    tl.store(s_ptr + row, tl.load(s_ptr + row) + tl.sum(vs, 0))
    tl.store(zy_ptr + row, tl.where(y >= 0, tl.log(_stablemax(tl.sum(vzy, 0))), tl.load(zy_ptr + row)))


@triton.jit
def probabilities(z_ptr, out_ptr, lse_ptr, V, stride_z, stride_out, STABLE: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)  # row * stride passes 2^31 on [16k, 128k] tiles
    lse = tl.load(lse_ptr + row)
    cols = tl.arange(0, BLOCK)
    for v0 in range(0, V, BLOCK):
        c = v0 + cols
        mask = c < V
        z = tl.load(z_ptr + row * stride_z + c, mask=mask, other=0.0)
        if STABLE:  # noqa: SIM108 (a constexpr branch)
            p = _stablemax_slope(z) * tl.exp(-lse)
        else:
            p = tl.exp(z - lse)
        tl.store(out_ptr + row * stride_out + c, p, mask=mask)


@triton.jit
def grad_tile(
    p_ptr, z_ptr, q_ptr, y_ptr, coef_ptr, gent_ptr, mz_ptr, gkl_ptr, glogp_ptr,
    V, stride_p, stride_z, stride_q, linear_factor, softcap_in, softcap_out,
    HAS_ENT: tl.constexpr, HAS_KL: tl.constexpr, HAS_LOGP: tl.constexpr, STABLE: tl.constexpr,
    SOFTCAP: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0).to(tl.int64)  # row * stride passes 2^31 on [16k, 128k] tiles
    y = tl.load(y_ptr + row)
    coef = tl.load(coef_ptr + row)
    if HAS_ENT:
        gent = tl.load(gent_ptr + row)
        mz = tl.load(mz_ptr + row)
    if HAS_KL:
        gkl = tl.load(gkl_ptr + row)
    if HAS_LOGP:
        glogp = tl.load(glogp_ptr + row)
    cols = tl.arange(0, BLOCK)
    for v0 in range(0, V, BLOCK):
        c = v0 + cols
        mask = c < V
        p = tl.load(p_ptr + row * stride_p + c, mask=mask, other=0.0)
        if HAS_ENT or SOFTCAP or (STABLE and HAS_LOGP):
            z = tl.load(z_ptr + row * stride_z + c, mask=mask, other=0.0)
        if HAS_ENT:  # noqa: SIM108 (a constexpr branch)
            da = p * (coef - gent * (z - mz))
        else:
            da = p * coef
        if HAS_KL:
            da -= gkl * tl.load(q_ptr + row * stride_q + c, mask=mask, other=0.0)
        if HAS_LOGP:
            if STABLE:
                da += tl.where(c == y, glogp / (1 + tl.abs(z)), 0.0)
            else:
                da += tl.where(c == y, glogp, 0.0)
        if SOFTCAP:  # noqa: SIM108 (a constexpr branch: z exists only then)
            da = da * _softcap_slope(z, softcap_in, softcap_out)
        else:
            da = da * linear_factor
        tl.store(p_ptr + row * stride_p + c, da, mask=mask)


@triton.jit
def frozen_tiles(
    p_ptr, z_ptr, zr_ptr, cen_ptr, mz_ptr, lser_ptr, V, stride_p, stride_z, stride_zr, stride_cen, linear_factor,
    softcap_in, softcap_out, HAS_ENT: tl.constexpr, HAS_KL: tl.constexpr, SOFTCAP: tl.constexpr,
    BLOCK: tl.constexpr,
):  # fmt: skip
    """The frozen-head path's tiles for dh, times dz/da: the entropy tile (z - E_p z) p d (into ``cen``), the
    reference probabilities q d (in place on zr) and p d (in place on p)."""
    row = tl.program_id(0).to(tl.int64)  # row * stride passes 2^31 on [16k, 128k] tiles
    if HAS_ENT:
        mz = tl.load(mz_ptr + row)
    if HAS_KL:
        lser = tl.load(lser_ptr + row)
    cols = tl.arange(0, BLOCK)
    for v0 in range(0, V, BLOCK):
        c = v0 + cols
        mask = c < V
        p = tl.load(p_ptr + row * stride_p + c, mask=mask, other=0.0)
        if SOFTCAP or HAS_ENT:
            z = tl.load(z_ptr + row * stride_z + c, mask=mask, other=0.0)
        if SOFTCAP:  # noqa: SIM108 (a constexpr branch: z exists only then)
            d = _softcap_slope(z, softcap_in, softcap_out)
        else:
            d = linear_factor
        if HAS_ENT:
            tl.store(cen_ptr + row * stride_cen + c, (z - mz) * p * d, mask=mask)
        if HAS_KL:
            zr = tl.load(zr_ptr + row * stride_zr + c, mask=mask, other=0.0)
            tl.store(zr_ptr + row * stride_zr + c, tl.exp(zr - lser) * d, mask=mask)
        tl.store(p_ptr + row * stride_p + c, p * d, mask=mask)
