"""The "numba" LIF backend: the CPU's counterpart of the fused Triton kernels (trainer.lif_fused).

The equations are trainer.lif's. The multistep backend runs each step as several torch
operations over the whole layer, so every neuron-step's potential, spike and age pass through
memory several times; here one compiled loop per layer walks a block of ``BLOCK`` neurons
through all the window's steps while its state stays in the core's cache, threads taking
blocks. Forward reads the currents once and writes the spikes and one byte per neuron-step
(the linear and exp surrogates also keep the fp32 potentials); backward is two passes per
block, forward in time to rebuild the spike ages from the bytes and write each step's slope
g_t / theta (a table look-up for STDB), then backward in time to form dL/du_t = dL/do_t * g_t
/ theta + c_t * dL/du_{t+1} (c_t = leak - g_t through the reset, leak with it detached). The
arithmetic and its order are the reference's and numba does not contract a*b+c into one
rounding, so the spikes are bit-exact; gradients agree within rounding (the order of the
scan's two products differs).
"""
from __future__ import annotations

import numba
import numpy as np
import torch

from trainer.lif import NeuronState, Surrogate

BLOCK = 2048                 # neurons per block: a block's window of steps stays in L2
KINDS = {"stdb": 0, "linear": 1, "exp": 2}


@numba.njit(parallel=True, cache=True, nogil=True)
def _forward_kernel(cur, u0, o0, last0, spikes, fired, potentials, u, o, last, t0, theta, leak, save_bytes,
                    save_potential):
    """cur (T, N) float32 currents; u0, o0 (N,) float32, last0 (N,) int32 the state before the
    window; writes spikes (T, N) float32, fired (T, N) uint8 where ``save_bytes``, potentials
    (T, N) where ``save_potential``, and the state after the window u, o, last."""
    steps, n = cur.shape
    f = cur.dtype.type
    th, lk = f(theta), f(leak)
    for blk in numba.prange((n + BLOCK - 1) // BLOCK):
        a = blk * BLOCK
        e = min(n, a + BLOCK)
        uu = u0[a:e].copy()
        oo = o0[a:e].copy()
        ll = last0[a:e].copy()
        for k in range(steps):
            c, s = cur[k, a:e], spikes[k, a:e]
            for i in range(e - a):
                x = uu[i] * lk if leak != 1.0 else uu[i]
                x = (x + c[i]) - th * oo[i]
                uu[i] = x
                oo[i] = f(1.0) if x > th else f(0.0)
                s[i] = oo[i]
            for i in range(e - a):
                if oo[i] != 0:
                    ll[i] = t0 + k
            if save_bytes:
                b = fired[k, a:e]
                for i in range(e - a):
                    b[i] = np.uint8(oo[i] != 0)
            if save_potential:
                p = potentials[k, a:e]
                for i in range(e - a):
                    p[i] = uu[i]
        u[a:e] = uu
        o[a:e] = oo
        last[a:e] = ll


@numba.njit(parallel=True, cache=True, nogil=True)
def _backward_kernel(grad, fired, last0, potentials, table, out, t0, theta, leak, alpha, beta, kind,
                     through_reset):
    """grad (T, N) dL/d spikes; fired (T, N) uint8 (stdb), last0 (N,) int32 the last spike
    before the window, potentials (T, N) (linear, exp), table the STDB slopes
    alpha*exp(-beta*dt) / theta; writes out (T, N) = dL/d current."""
    steps, n = grad.shape
    f = grad.dtype.type
    th, lk, al, be = f(theta), f(leak), f(alpha), f(beta)
    inv = f(1.0) / th                                # x / theta as x * (1 / theta): gradients within an ulp
    size = table.shape[0]
    for blk in numba.prange((n + BLOCK - 1) // BLOCK):
        a = blk * BLOCK
        e = min(n, a + BLOCK)
        ll = last0[a:e].copy()
        for k in range(steps):                       # forward in time: each step's slope g_t / theta
            r = out[k, a:e]
            if kind == 0:
                b = fired[k, a:e]
                for i in range(e - a):
                    if b[i] != 0:
                        ll[i] = t0 + k
                    age = t0 + k - ll[i]
                    r[i] = table[age] if ll[i] >= 0 and age < size else f(0.0)
            else:
                p = potentials[k, a:e]
                for i in range(e - a):
                    z = abs(p[i] * inv - f(1.0))
                    g = al * max(f(1.0) - z, f(0.0)) if kind == 1 else al * np.exp(-be * z)
                    r[i] = g * inv
        for j in range(steps):                       # backward in time: + c_t * dL/du_{t+1}
            k = steps - 1 - j
            r, gr = out[k, a:e], grad[k, a:e]
            if k == steps - 1:
                for i in range(e - a):
                    r[i] = gr[i] * r[i]
            else:
                nxt = out[k + 1, a:e]
                for i in range(e - a):
                    s = r[i]
                    carry = lk - th * s if through_reset else lk
                    r[i] = gr[i] * s + carry * nxt[i]


def _flat(x: torch.Tensor) -> torch.Tensor:
    """(T, ...) -> (T, N) float32, contiguous (a copy only where needed)."""
    return x.detach().float().reshape(x.shape[0], -1).contiguous()


def _forward(current, state: NeuronState, theta: float, leak: float, t0: int, save_bytes: bool,
             save_potential: bool):
    cur = _flat(current)
    steps, n = cur.shape
    spikes = torch.empty_like(cur)
    fired = torch.empty((steps, n) if save_bytes else (0, 0), dtype=torch.uint8)
    potentials = torch.empty_like(cur) if save_potential else cur[:0]
    u, o = torch.empty(n), torch.empty(n)
    last = torch.empty(n, dtype=torch.int32)
    _forward_kernel(cur.numpy(), state.u.detach().float().reshape(-1).contiguous().numpy(),
                    state.o.detach().float().reshape(-1).contiguous().numpy(),
                    state.last.to(torch.int32).reshape(-1).contiguous().numpy(), spikes.numpy(), fired.numpy(),
                    potentials.numpy(), u.numpy(), o.numpy(), last.numpy(), int(t0), float(theta), float(leak),
                    save_bytes, save_potential)
    shape = current.shape[1:]
    new = NeuronState(u.view(shape), o.view(shape), last.view(shape))
    return spikes.view(current.shape).to(current.dtype), fired, potentials, new


class _NumbaLIF(torch.autograd.Function):
    @staticmethod
    def forward(ctx, current, u0, o0, last0, theta, leak, t0, surrogate, lut):
        state = NeuronState(u0, o0, last0)
        spikes, fired, potentials, new = _forward(current, state, theta, leak, t0, surrogate.kind == "stdb",
                                                  surrogate.kind != "stdb")
        ctx.save_for_backward(fired, last0.to(torch.int32).reshape(-1).contiguous(), potentials,
                              (lut.float() / float(theta)).contiguous())
        ctx.theta, ctx.leak, ctx.t0, ctx.surrogate = float(theta), float(leak), int(t0), surrogate
        ctx.mark_non_differentiable(new.u, new.o, new.last)
        return spikes, new.u, new.o, new.last

    @staticmethod
    def backward(ctx, grad_spikes, _gu, _go, _gl):
        fired, last0, potentials, table = ctx.saved_tensors
        surrogate: Surrogate = ctx.surrogate
        grad = _flat(grad_spikes)
        out = torch.empty_like(grad)
        _backward_kernel(grad.numpy(), fired.numpy(), last0.numpy(), potentials.numpy(), table.numpy(), out.numpy(),
                         ctx.t0, ctx.theta, ctx.leak, float(surrogate.alpha), float(surrogate.beta),
                         KINDS[surrogate.kind], surrogate.through_reset)
        return out.view(grad_spikes.shape), None, None, None, None, None, None, None, None


def lif_numba(current, state: NeuronState, theta: float, leak: float, t0: int, surrogate: Surrogate, lut):
    if current.device.type != "cpu":
        raise ValueError("the numba backend runs on CPU tensors; use --backend fused or multistep on CUDA")
    if not (torch.is_grad_enabled() and current.requires_grad):     # evaluation, balancing: keep nothing
        spikes, _, _, state = _forward(current, state, theta, leak, t0, False, False)
        return spikes, state
    spikes, u, o, last = _NumbaLIF.apply(current, state.u, state.o, state.last, theta, leak, t0, surrogate, lut)
    return spikes, NeuronState(u, o, last)
