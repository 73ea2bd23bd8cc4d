"""Event-driven cores on the CPU: the synaptic input of a core is gathered from its input
events only, and its neurons are updated in the same pass.

A core's synaptic work on a neuromorphic chip is its events; a dense conv / matmul costs
the same at any firing rate. These numba kernels run one core for a block of steps, sample
by sample (samples in parallel), step by step:

1. events: the non-zero inputs of the step (spikes; the first core's signed Poisson spikes)
   are listed, eight channels tested at once and the non-zero ones of them found by their
   bits (trailing zeros of a byte mask), per input position -- for a conv with a
   folded q x q average pool (``hwsim.plan``) per pooled position (sum-pool and conv are
   both linear, so each spike under the pool window adds its own fan-out); spikes apart
   from other values, in position order, so that the events of a kernel window's row are
   one contiguous range (one lookup per kernel row, not per kernel position: at 2 % firing
   the lookups had cost more than the sums);
2. currents: a conv's output position gathers the events under its kernel window into
   one row of currents that stays in L1: the rows ``weights[ky, kx, c, :]`` (contiguous
   over the output channels) of its spikes, four per pass (``_gather``; int8 rows summed in
   int16 lanes, 256 at a time, then in int32), and ``value x`` the row of any other value;
   a dense core adds the weight row of each event; a core with shortcuts adds their current,
   computed densely by the caller;
3. neurons: the row's neurons are updated at once (``_update_neurons``), in float
   arithmetic on exact integers, in branch-free loops that the compiler vectorizes; a
   position without events whose neurons are at rest (no leak, no bias, no spike at the
   last step) keeps its state and is skipped, so that this cost too falls with the rate.

Exact: currents are integer sums in int32 (int8 weights; int16 partial sums of at most 256
rows cannot overflow) or float32 (float64 for cores whose bound needs it, ``CorePlan.dtype``)
below the exactness bound in any summation order, and the neuron update
is ``export.fixedpoint``'s, operation by operation, on exactly representable values (see
``_update_neurons``).
"""
from __future__ import annotations

import numba
import numpy as np
from numba.cpython.unsafe.numbers import trailing_zeros

from export import fixedpoint as fx

_HALF = 2 ** (fx.STATE_BITS - 1)
_ROW = 1024                          # neurons per update row of ``neuron_block``


@numba.njit(inline="always")
def _update_neurons(acc, v, prev, out, counts, bias, extra, a_max, t, b, first, vth, dv, exp, conv_wrap, spiking,
                    wrap):
    """Step ``t`` of sample ``b``'s neurons ``first`` to ``first + len(acc)`` from their
    synaptic sums ``acc`` (scratch: overwritten): the weight-exp shift
    (floor for negative exponents), the conv's wrap to signed 24 bit, + the shortcuts'
    current ``extra[t, b]`` (when it is not empty), ``u = wrap24(a << 6)`` (``wrap``: only
    where the core's bound says it can matter), decay, + the neurons' ``bias`` (in v's
    units, |bias| < 2**19; empty: none), reset by subtraction, clip, ``v > vth``; the spikes
    are written to ``out`` and added to ``counts``; ``a_max`` keeps the largest |current| per
    row element. Returns the number of non-zero currents and of spikes.

    Every step is exact on float values: shifts are multiplications by powers of two; the
    wraps add or subtract 2**24 to multiples of 1 (conv) or 64 (``u``) of magnitude below
    2**30, which need at most 24 significant bits; decay is ``q*m + trunc(r*m/4096)`` with
    ``v = 4096*q + r`` (every intermediate below 2**24, rounding toward zero like
    ``fixedpoint.decay``); ``v - vth*prev`` and ``u + bias`` are exact (|u| < 2**23 after the
    wrap or where none is needed), and their sum is correctly rounded, so exact unless it lies
    beyond 2**24, where the clip gives the same result.

    Speed: each loop writes at most two arrays and reduces only integers, so that the
    compiler vectorizes every one of them (one fused loop did not vectorize: 4x slower)."""
    f = v.dtype.type                                   # constants in v's float type: no float64 detour
    vth_f, v_max, half, full, zero = f(vth), f(fx.V_MAX), f(_HALF), f(2 * _HALF), f(0)
    act, unity, m = f(2 ** fx.ACT_SHIFT), f(fx.DECAY_UNITY), f(fx.DECAY_UNITY - dv)
    n = acc.shape[0]
    if exp != 0:
        scale = f(2.0 ** exp)
        for i in range(n):
            acc[i] = np.floor(acc[i] * scale) if exp < 0 else acc[i] * scale
    if conv_wrap:
        c_half, c_full = f(2 ** (fx.CONV_OUT_BITS - 1)), f(2 ** fx.CONV_OUT_BITS)
        for i in range(n):
            acc[i] = acc[i] - c_full * np.floor((acc[i] + c_half) / c_full)
    if extra.shape[0] > 0:
        er = extra[t, b, first:first + n]
        for i in range(n):
            acc[i] += er[i]
    nz = 0
    for i in range(n):
        x = acc[i]
        nz += x != zero
        a_max[i] = max(a_max[i], abs(x))
    vr, pr = v[b, first:first + n], prev[b, first:first + n]
    if bias.shape[0] > 0:                              # the bias joins the current (both in v's units)
        br = bias[first:first + n]
    if dv != 0:
        for i in range(n):
            q = np.trunc(vr[i] / unity)
            vr[i] = q * m + np.trunc((vr[i] - q * unity) * m / unity)
    if wrap:                                           # Lava's single wrap, in place
        for i in range(n):
            u = acc[i] * act
            u = u - full if u > half else u
            acc[i] = u + full if u <= -half else u
        if bias.shape[0] > 0:
            for i in range(n):
                acc[i] += br[i]
    elif bias.shape[0] > 0:
        for i in range(n):
            acc[i] = acc[i] * act + br[i]
    else:
        for i in range(n):
            acc[i] = acc[i] * act
    if not spiking:
        for i in range(n):
            vr[i] = min(max(vr[i] + acc[i], -v_max), v_max)
        return nz, 0
    for i in range(n):
        vv = min(max(vr[i] - vth_f * pr[i] + acc[i], -v_max), v_max)
        vr[i] = vv
        pr[i] = vv > vth_f
    orow, cr = out[t, b, first:first + n], counts[b, first:first + n]
    k = 0
    for i in range(n):
        s = pr[i]
        orow[i] = s
        cr[i] += s
        k += s != zero
    return nz, k


@numba.njit(inline="always")
def _nonzero_bytes(word):
    """A mask with bit 0 of each byte of the int64 ``word`` set where that byte is not zero:
    its set bits, lowest first (``trailing_zeros(m) >> 3``, then ``m &= m - 1``), are the
    word's non-zero inputs without a branch per input."""
    m = np.uint64(word)
    m |= m >> np.uint64(4)
    m |= m >> np.uint64(2)
    m |= m >> np.uint64(1)
    return m & np.uint64(0x0101010101010101)


@numba.njit(inline="always")
def _any_fired(prev, b, first, n):
    """Whether any of sample ``b``'s neurons ``first`` to ``first + n`` fired at the last step."""
    k = 0
    for i in range(n):
        k += prev[b, first + i] != 0
    return k > 0


@numba.njit(inline="always")
def _gather(row, part, span, w, ones, n1, others, scales, nv):
    """row += the sum of w's rows ``ones[:n1]`` and of ``scales[j] * w[others[j]]``, j < nv.

    The rows are summed into ``part`` (zeros; left zero), ``span`` rows at a time, four rows
    per pass, then added to ``row``: int8 weights sum in int16 lanes (twice the lanes of
    int32; 256 int8 rows cannot leave int16's range, so ``span`` is 256), into int32 sums (a
    quarter of the weight traffic of float32 rows); float weights sum in their own type
    (``span`` unbounded). Integer sums below the exactness bound: any order is exact."""
    f, g = row.dtype.type, part.dtype.type
    e = 0
    while e < n1:
        stop = min(n1, e + span)
        while e + 4 <= stop:
            i0, i1, i2, i3 = ones[e], ones[e + 1], ones[e + 2], ones[e + 3]
            for o in range(part.shape[0]):
                part[o] += (g(w[i0, o]) + g(w[i1, o])) + (g(w[i2, o]) + g(w[i3, o]))
            e += 4
        while e < stop:
            i = ones[e]
            for o in range(part.shape[0]):
                part[o] += g(w[i, o])
            e += 1
        for o in range(part.shape[0]):
            row[o] += f(part[o])
            part[o] = 0
    for j in range(nv):
        i, s = others[j], scales[j]
        for o in range(row.shape[0]):
            row[o] += s * f(w[i, o])


@numba.njit(inline="always")
def _to_current(cur, row, scale):
    """cur <- row * scale in cur's float type (the weights' power of two: exact), row <- 0."""
    f = cur.dtype.type
    sc = f(scale)
    for o in range(row.shape[0]):
        cur[o] = f(row[o]) * sc
    row[:] = 0


@numba.njit(parallel=True, cache=True, nogil=True)
def conv_core_events(x, xw, w, w_scale, sum_type, part_type, span, geometry, v, prev, out, counts, bias, extra,
                     stats, vth, dv, exp, conv_wrap, spiking, wrap, quiet):
    """One conv core over a block. x (T, B, H, W, C) int8 inputs, C a multiple of 8 (padded with
    zeros), and xw the same memory as int64 words (one per eight channels); w (KH, KW, C, O)
    weights (pooled kernel) times ``w_scale`` are the core's (int8 weights times a power of two,
    or the floats themselves and 1), summed in ``sum_type``'s type (an empty array: int32 for
    int8 weights, else v's float type) from partial sums of ``span`` rows in ``part_type``'s
    (int16, 256, for int8 weights; see ``_gather``); geometry (sy, sx, py, px, fy, fx, ppy, ppx,
    ho, wo): the conv's stride and padding on the pooled input, the folded pool and the padding
    applied before it; v, prev (B, Ho*Wo*O) state in (H, W, C) order, updated in place; out (T,
    B, Ho*Wo*O) int8 spikes (written); counts (B, Ho*Wo*O) spikes per neuron (added to); bias
    (Ho*Wo*O,) per neuron, in v's units and order; extra (T, B, Ho*Wo*O) the shortcuts' currents
    (or empty: none); stats (B, 3): non-zero currents, max |current|, spikes (written).

    Per step, the input's events are listed per (pooled) position; then each output position
    gathers the events under its kernel window into one row of O currents (a vector add per
    event and kernel offset, the row staying in L1) and its O neurons are updated at once.
    ``quiet`` (no leak, no bias, no shortcut): a position that no event reaches and whose neurons did not
    fire at the last step keeps its state and stays silent, so only its spikes are written."""
    tb, b_n, h, wd, c_n = x.shape
    words = c_n // 8
    kh, kw, _, o_n = w.shape
    w2 = w.reshape(kh * kw * c_n, o_n)                       # one row per (ky, kx, c)
    sy, sx, py, px, fy, fx_, ppy, ppx, ho, wo = geometry
    hq, wq = (h + 2 * ppy) // fy, (wd + 2 * ppx) // fx_
    for b in numba.prange(b_n):
        # the step's events, listed by pooled position q = qy * wq + qx, spikes (value 1) apart from
        # other values: those of q are spike[ptr[q]:ptr[q + 1]] and other[ptr_v[q]:ptr_v[q + 1]] (with
        # value[...]), each as qx * C + c, so that a window's kw positions of one row are one range
        ptr = np.zeros(hq * wq + 1, dtype=np.int64)
        ptr_v = np.zeros(hq * wq + 1, dtype=np.int64)
        spike = np.empty(h * wd * c_n, dtype=np.int64)
        other = np.empty(h * wd * c_n, dtype=np.int64)
        value = np.empty(h * wd * c_n, dtype=sum_type.dtype)
        row = np.zeros(o_n, dtype=sum_type.dtype)            # one output position's synaptic sums
        part = np.zeros(o_n, dtype=part_type.dtype)          # ... and their partial sums
        cur = np.empty(o_n, dtype=v.dtype)                   # ... as currents
        window = kh * kw * c_n * fy * fx_                    # the most events under one window (a folded pool:
        ones = np.empty(window, dtype=np.int64)              # one per spike under it); rows of w2 to add (a spike),
        others = np.empty(window, dtype=np.int64)            # and to scale and add
        scales = np.empty(window, dtype=sum_type.dtype)
        fired = np.empty(ho * wo, dtype=np.bool_)            # per output position: a spike at the last step
        for pos in range(ho * wo):
            fired[pos] = _any_fired(prev, b, pos * o_n, o_n)
        nz, spikes = 0, 0
        a_max = np.zeros(o_n, dtype=v.dtype)                 # the largest |current| per channel
        for t in range(tb):
            n_s, n_v = 0, 0
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
                                m = _nonzero_bytes(xw[t, b, iy, ix, k])
                                while m != 0:                         # the lowest such byte, then the next
                                    c = 8 * k + (trailing_zeros(m) >> 3)
                                    s = x[t, b, iy, ix, c]
                                    if s == 1:
                                        spike[n_s] = qx * c_n + c
                                        n_s += 1
                                    else:
                                        other[n_v] = qx * c_n + c
                                        value[n_v] = s
                                        n_v += 1
                                    m &= m - np.uint64(1)
                    ptr[qy * wq + qx + 1] = n_s
                    ptr_v[qy * wq + qx + 1] = n_v
            for oy in range(ho):
                for ox in range(wo):
                    pos = oy * wo + ox
                    n1, nv = 0, 0                           # the window's events: spikes, other values
                    qx0 = ox * sx - px                      # the window's first column (may lie outside)
                    lo, hi = max(qx0, 0), min(qx0 + kw, wq)
                    for ky in range(kh):
                        qy = oy * sy - py + ky
                        if qy < 0 or qy >= hq or lo >= hi:
                            continue
                        # row (ky, qx - qx0, c) of w2 for an event qx * C + c of this window row
                        base = (ky * kw - qx0) * c_n
                        a, z = ptr[qy * wq + lo], ptr[qy * wq + hi]
                        for e in range(a, z):
                            ones[n1 + e - a] = base + spike[e]
                        n1 += z - a
                        a, z = ptr_v[qy * wq + lo], ptr_v[qy * wq + hi]
                        for e in range(a, z):
                            others[nv + e - a] = base + other[e]
                            scales[nv + e - a] = value[e]
                        nv += z - a
                    _gather(row, part, span, w2, ones, n1, others, scales, nv)
                    hits = n1 + nv
                    if quiet and hits == 0 and not fired[pos]:
                        out[t, b, pos * o_n:(pos + 1) * o_n] = 0
                        continue
                    _to_current(cur, row, w_scale)
                    nzr, k = _update_neurons(cur, v, prev, out, counts, bias, extra, a_max, t, b, pos * o_n,
                                             vth, dv, exp, conv_wrap, spiking, wrap)
                    nz += nzr
                    spikes += k
                    fired[pos] = k > 0
        stats[b, 0] = nz
        stats[b, 1] = np.int64(a_max.max())
        stats[b, 2] = spikes


@numba.njit(parallel=True, cache=True, nogil=True)
def dense_core_events(x, xw, w, w_scale, sum_type, v, prev, out, counts, bias, extra, stats, vth, dv, exp, conv_wrap,
                      spiking, wrap, quiet):
    """One dense core over a block: x (T, B, M) int8 inputs, M a multiple of 8 (padded with
    zeros), xw the same memory as int64 words, w (M, O) weights (times ``w_scale``, summed in
    ``sum_type``'s type, as for ``conv_core_events``); the rest as for
    ``conv_core_events`` (a core without input events whose neurons did not fire is skipped
    when ``quiet``)."""
    tb, b_n, m_n = x.shape
    o_n = w.shape[1]
    for b in numba.prange(b_n):
        acc = np.zeros(o_n, dtype=sum_type.dtype)
        cur = np.empty(o_n, dtype=v.dtype)
        f = acc.dtype.type
        fired = _any_fired(prev, b, 0, o_n)
        nz, spikes = 0, 0
        a_max = np.zeros(o_n, dtype=v.dtype)
        for t in range(tb):
            hits = 0
            xr, wr = x[t, b], xw[t, b]
            for k0 in range(0, wr.shape[0], 8):                  # 64 inputs per test, then 8
                k1 = min(k0 + 8, wr.shape[0])
                any_ = 0
                for k in range(k0, k1):
                    any_ |= wr[k]
                if any_ == 0:
                    continue
                for k in range(k0, k1):
                    if wr[k] == 0:
                        continue
                    m = _nonzero_bytes(wr[k])
                    while m != 0:
                        i = 8 * k + (trailing_zeros(m) >> 3)
                        m &= m - np.uint64(1)
                        s = xr[i]
                        hits += 1
                        if s == 1:
                            for o in range(o_n):
                                acc[o] += f(w[i, o])
                        else:
                            sv = f(s)
                            for o in range(o_n):
                                acc[o] += sv * f(w[i, o])
            if quiet and hits == 0 and not fired:
                out[t, b, :] = 0
                continue
            _to_current(cur, acc, w_scale)
            nzr, k = _update_neurons(cur, v, prev, out, counts, bias, extra, a_max, t, b, 0, vth, dv, exp, conv_wrap,
                                     spiking, wrap)
            nz += nzr
            spikes += k
            fired = k > 0
        stats[b, 0] = nz
        stats[b, 1] = np.int64(a_max.max())
        stats[b, 2] = spikes


@numba.njit(parallel=True, cache=True, nogil=True)
def neuron_block(a, v, prev, out, counts, bias, extra, stats, vth, dv, exp, conv_wrap, spiking, wrap):
    """The neurons of one core over a block, from synaptic sums computed beforehand (the
    int8 path, ``hwsim.int8_products``): a (T, B, N) float sums in v's order (used as
    scratch: overwritten); the rest as for ``conv_core_events``. The same update
    (``_update_neurons``) as the event kernels, a row of ``_ROW`` neurons at a time through
    all the block's steps, so that only the currents and spikes stream through memory."""
    tb, b_n, n_n = a.shape
    for b in numba.prange(b_n):
        nz, spikes = 0, 0
        a_max = np.zeros(min(_ROW, n_n), dtype=a.dtype)
        for first in range(0, n_n, _ROW):             # neurons are independent: each row through all
            for t in range(tb):                          # steps while its state stays in L1
                row = a[t, b, first:min(first + _ROW, n_n)]
                nzr, k = _update_neurons(row, v, prev, out, counts, bias, extra, a_max, t, b, first, vth, dv, exp,
                                         conv_wrap, spiking, wrap)
                nz += nzr
                spikes += k
        stats[b, 0] = nz
        stats[b, 1] = np.int64(a_max.max()) if n_n else 0
        stats[b, 2] = spikes
