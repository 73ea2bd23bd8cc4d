"""Event-driven cores on the CPU: the synaptic input of a core is gathered from its input
events only, and its neurons are updated in the same pass.

A core's synaptic work on a neuromorphic chip is its events; a dense conv / matmul costs
the same at any firing rate. These numba kernels run one core for a block of steps, sample
by sample (samples in parallel), step by step:

1. events: the non-zero inputs of the step (spikes; the first core's signed Poisson spikes)
   are listed, eight channels tested at once, per input position -- for a conv with a
   folded q x q average pool (``hwsim.plan``) per pooled position (sum-pool and conv are
   both linear, so each spike under the pool window adds its own fan-out);
2. currents: a conv's output position gathers the events under its kernel window, one
   vector add of ``value x weights[ky, kx, c, :]`` (contiguous over the output channels)
   per event and kernel offset, into one row of currents that stays in L1; a dense core
   adds the weight row of each event;
3. neurons: the row's neurons are updated at once (``_update_neurons``), in float
   arithmetic on exact integers, branch-free so that the compiler vectorizes it.

Exact: currents are integer sums in float32 (float64 for cores whose bound needs it,
``CorePlan.dtype``) below the exactness bound in any summation order, and the neuron update
is ``export.fixedpoint``'s, operation by operation, on exactly representable values (see
``_update_neurons``).
"""
from __future__ import annotations

import numba
import numpy as np

from export import fixedpoint as fx

_HALF = 2 ** (fx.STATE_BITS - 1)


@numba.njit(inline="always")
def _update_neurons(acc, v, prev, out, bias, n_active, a_max, t, b, first, vth, dv, exp, conv_wrap, spiking):
    """Step ``t`` of sample ``b``'s neurons ``first`` to ``first + len(acc)`` from their
    synaptic sums ``acc`` (then cleared): the weight-exp shift (floor for negative exponents),
    the conv's wrap to signed 24 bit, ``u = wrap24(a << 6)``, decay, + the neurons' ``bias``
    (in v's units, |bias| < 2**19), reset by subtraction, clip, ``v > vth``; per neuron of the
    row, ``n_active`` counts non-zero currents and ``a_max`` keeps the largest |current|.

    Every step is exact on float values: shifts are multiplications by powers of two; the
    wraps add or subtract 2**24 to multiples of 1 (conv) or 64 (``u``) of magnitude below
    2**30, which need at most 24 significant bits; decay is ``q*m + trunc(r*m/4096)`` with
    ``v = 4096*q + r`` (every intermediate below 2**24, rounding toward zero like
    ``fixedpoint.decay``); ``v - vth*prev`` is exact and ``+ u``, ``+ bias`` are correctly
    rounded, so each is exact unless a sum lies beyond 2**24 (the bias cannot bring such a sum
    back below 2**23), where the clip gives the same result."""
    f = v.dtype.type                                   # constants in v's float type: no float64 detour
    vth_f, v_max, half, full, zero = f(vth), f(fx.V_MAX), f(_HALF), f(2 * _HALF), f(0)
    act, unity, m = f(2 ** fx.ACT_SHIFT), f(fx.DECAY_UNITY), f(fx.DECAY_UNITY - dv)
    n = acc.shape[0]
    if exp > 0:
        scale = f(2.0 ** exp)
        for i in range(n):
            acc[i] = acc[i] * scale
    elif exp < 0:
        scale = f(2.0 ** exp)
        for i in range(n):
            acc[i] = np.floor(acc[i] * scale)
    if conv_wrap:
        c_half, c_full = f(2 ** (fx.CONV_OUT_BITS - 1)), f(2 ** fx.CONV_OUT_BITS)
        for i in range(n):
            acc[i] = acc[i] - c_full * np.floor((acc[i] + c_half) / c_full)
    for i in range(n):                                 # elementwise, reduced once per block: vectorized
        n_active[i] += acc[i] != zero
        a_max[i] = max(a_max[i], abs(acc[i]))
    vr, pr, orow = v[b, first:first + n], prev[b, first:first + n], out[t, b, first:first + n]
    br = bias[first:first + n]
    if dv != 0:
        for i in range(n):
            q = np.trunc(vr[i] / unity)
            vr[i] = q * m + np.trunc((vr[i] - q * unity) * m / unity)
    if spiking:                                        # loops without branches in the body: vectorized
        for i in range(n):
            u = acc[i] * act
            u = u - full if u > half else u           # wrap24: Lava's single wrap
            u = u + full if u <= -half else u
            vv = min(max(vr[i] - vth_f * pr[i] + u + br[i], -v_max), v_max)
            vr[i] = vv
            fired = vv > vth_f
            pr[i] = fired
            orow[i] = fired
    else:
        for i in range(n):
            u = acc[i] * act
            u = u - full if u > half else u
            u = u + full if u <= -half else u
            vr[i] = min(max(vr[i] + u + br[i], -v_max), v_max)
    acc[:] = zero


@numba.njit(parallel=True, cache=True, nogil=True)
def conv_core_events(x, xw, w, geometry, v, prev, out, bias, stats, vth, dv, exp, conv_wrap, spiking):
    """One conv core over a block. x (T, B, H, W, C) int8 inputs, C a multiple of 8 (padded
    with zeros), and xw the same memory as int64 words (one per eight channels); w (KH, KW, C, O)
    weights (pooled kernel); geometry (sy, sx, py, px, fy, fx, ppy, ppx, ho, wo): the conv's stride and padding
    on the pooled input, the folded pool and the padding applied before it; v, prev (B, Ho*Wo*O)
    state in (H, W, C) order, updated in place; out (T, B, Ho*Wo*O) int8 spikes (written);
    bias (Ho*Wo*O,) per neuron, in v's units and order; stats (B, 2): non-zero currents, max |current|.

    Per step, the input's events are listed per (pooled) position; then each output position
    gathers the events under its kernel window into one row of O currents (a vector add per
    event and kernel offset, the row staying in L1) and its O neurons are updated at once."""
    tb, b_n, h, wd, c_n = x.shape
    words = c_n // 8
    kh, kw, _, o_n = w.shape
    sy, sx, py, px, fy, fx_, ppy, ppx, ho, wo = geometry
    hq, wq = (h + 2 * ppy) // fy, (wd + 2 * ppx) // fx_
    for b in numba.prange(b_n):
        ptr = np.zeros(hq * wq + 1, dtype=np.int64)          # events of pooled position q: ptr[q]:ptr[q + 1]
        chan = np.empty(h * wd * c_n, dtype=np.int64)
        val = np.empty(h * wd * c_n, dtype=w.dtype)
        row = np.zeros(o_n, dtype=w.dtype)                   # one output position's currents
        n_active = np.zeros(o_n, dtype=np.int64)
        a_max = np.zeros(o_n, dtype=w.dtype)
        for t in range(tb):
            nnz = 0
            for qy in range(hq):
                for qx in range(wq):
                    for dy in range(fy):
                        iy = qy * fy + dy - ppy
                        if iy < 0 or iy >= h:
                            continue
                        for dx in range(fx_):
                            ix = qx * fx_ + dx - ppx
                            if ix < 0 or ix >= wd:
                                continue
                            for k in range(words):              # eight channels per test
                                if xw[t, b, iy, ix, k] == 0:
                                    continue
                                for c in range(8 * k, 8 * k + 8):
                                    if x[t, b, iy, ix, c] != 0:
                                        chan[nnz] = c
                                        val[nnz] = x[t, b, iy, ix, c]
                                        nnz += 1
                    ptr[qy * wq + qx + 1] = nnz
            for oy in range(ho):
                for ox in range(wo):
                    for ky in range(kh):
                        qy = oy * sy - py + ky
                        if qy < 0 or qy >= hq:
                            continue
                        for kx in range(kw):
                            qx = ox * sx - px + kx
                            if qx < 0 or qx >= wq:
                                continue
                            q = qy * wq + qx
                            for e in range(ptr[q], ptr[q + 1]):
                                c = chan[e]
                                if val[e] == 1:                 # a spike: no multiply
                                    for o in range(o_n):
                                        row[o] += w[ky, kx, c, o]
                                else:
                                    s = val[e]
                                    for o in range(o_n):
                                        row[o] += s * w[ky, kx, c, o]
                    _update_neurons(row, v, prev, out, bias, n_active, a_max, t, b, (oy * wo + ox) * o_n,
                                    vth, dv, exp, conv_wrap, spiking)
        stats[b, 0] = n_active.sum()
        stats[b, 1] = np.int64(a_max.max())


@numba.njit(parallel=True, cache=True, nogil=True)
def dense_core_events(x, w, v, prev, out, bias, stats, vth, dv, exp, conv_wrap, spiking):
    """One dense core over a block: x (T, B, M) inputs, w (M, O) weights; the rest as for
    ``conv_core_events``."""
    tb, b_n, m_n = x.shape
    o_n = w.shape[1]
    for b in numba.prange(b_n):
        acc = np.zeros(o_n, dtype=w.dtype)
        n_active = np.zeros(o_n, dtype=np.int64)
        a_max = np.zeros(o_n, dtype=w.dtype)
        for t in range(tb):
            for i in range(m_n):
                s = x[t, b, i]
                if s == 0:
                    continue
                for o in range(o_n):
                    acc[o] += s * w[i, o]
            _update_neurons(acc, v, prev, out, bias, n_active, a_max, t, b, 0, vth, dv, exp, conv_wrap, spiking)
        stats[b, 0] = n_active.sum()
        stats[b, 1] = np.int64(a_max.max())
