"""Event-driven synaptic input on the CPU: each input spike adds its fan-out, nothing else runs.

A core's work on a neuromorphic chip is its events; a dense conv / matmul costs the same at
any firing rate. These numba kernels visit every input once, and for each non-zero one
(a spike, or a small count after a folded pool's sum-pool) add ``value x weights`` to the
outputs it reaches; the weight vector of one (input channel, kernel offset) is contiguous
over the output channels, so the inner loop is a vector add. Samples run in parallel.

Exact for the same reason as the dense path (``hwsim.plan``): integer products summed in
float32 (float64 for cores whose bound needs it), every partial sum bounded by sum |w| over
the fan-in, so any order of summation gives the same integer.
"""
from __future__ import annotations

import numba
import numpy as np


@numba.njit(parallel=True, cache=True, nogil=True)
def conv_events(x, w, sy, sx, py, px, ho, wo):
    """x (B, H, W, C) inputs, w (KH, KW, C, O) weights -> (B, Ho, Wo, O) = conv2d(x, w), stride/padding."""
    b_n, h, wd, c_n = x.shape
    kh, kw, _, o_n = w.shape
    out = np.zeros((b_n, ho, wo, o_n), dtype=w.dtype)
    for b in numba.prange(b_n):
        for iy in range(h):
            for ix in range(wd):
                for c in range(c_n):
                    s = x[b, iy, ix, c]
                    if s == 0:
                        continue
                    for ky in range(kh):
                        ty = iy + py - ky
                        if ty < 0 or ty % sy != 0 or ty // sy >= ho:
                            continue
                        oy = ty // sy
                        for kx in range(kw):
                            tx = ix + px - kx
                            if tx < 0 or tx % sx != 0 or tx // sx >= wo:
                                continue
                            ox = tx // sx
                            for o in range(o_n):
                                out[b, oy, ox, o] += s * w[ky, kx, c, o]
    return out


@numba.njit(parallel=True, cache=True, nogil=True)
def dense_events(x, w):
    """x (B, M) inputs, w (M, O) weights -> (B, O) = x @ w, visiting the non-zero inputs only."""
    b_n, m_n = x.shape
    o_n = w.shape[1]
    out = np.zeros((b_n, o_n), dtype=w.dtype)
    for b in numba.prange(b_n):
        for i in range(m_n):
            s = x[b, i]
            if s == 0:
                continue
            for o in range(o_n):
                out[b, o] += s * w[i, o]
    return out
