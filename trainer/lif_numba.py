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

The forward also counts the layer's spikes (trainer.snn's firing rates) and, where a dropout
layer follows, writes each spike times its mask's value, and the backward multiplies the
incoming gradient by the mask before the scan (``lif_numba.counted``): the separate count,
the multiply and its gradient were three more passes over the spikes (VGG9, T = 8, batch
32, bf16: 95 ms of a 933 ms iteration in torch's profiler).

Under bf16 autocast the synapses hand over bf16 currents. The kernels read them as they are
(bf16 -> fp32 is exact: the 16 bits shifted up), keep the neuron in fp32, and write bf16 spikes
(0 and 1 are exact) and a bf16 dL/dI rounded to nearest even, as torch's cast rounds: the same
numbers as casting to fp32 around an fp32 neuron, without the two casts' passes over memory.
The tensors are walked in their memory order (channels-last included), so no layout is copied.
"""
from __future__ import annotations

import numba
import numpy as np
import torch

from trainer.lif import NeuronState, Surrogate
from trainer.memory_order import like, memory_order, rows, state_row
from trainer.numba_rows import BF16_ONE, bits, load_row, round_to_bf16, store_row

BLOCK = 2048                 # neurons per block: a block's window of steps stays in L2
KINDS = {"stdb": 0, "linear": 1, "exp": 2}


@numba.njit(parallel=True, cache=True, nogil=True)
def _forward_kernel(cur, u0, o0, last0, mask, spikes, fired, potentials, u, o, last, counts, t0, theta, leak,
                    save_bytes, save_potential, bf16):
    """cur (T, N) float32 currents, or their bf16 bits (uint16) where ``bf16``; u0, o0 (N,)
    float32, last0 (N,) int32 the state before the window; mask (N,) the dropout mask the
    spikes are handed on through, in the spikes' type (empty: none); writes spikes (T, N)
    (float32, or bf16 bits where ``bf16``: 1, or the mask's value, where a neuron fired),
    fired (T, N) uint8 where ``save_bytes``, potentials (T, N) float32 where
    ``save_potential``, the state after the window u, o, last, and counts (blocks,) each
    block's spikes (before the mask)."""
    steps, n = cur.shape
    f = np.float32
    th, lk = f(theta), f(leak)
    one, zero = spikes.dtype.type(BF16_ONE if bf16 else 1.0), spikes.dtype.type(0)
    masked = mask.shape[0] > 0
    for blk in numba.prange((n + BLOCK - 1) // BLOCK):
        a = blk * BLOCK
        e = min(n, a + BLOCK)
        uu = u0[a:e].copy()
        oo = o0[a:e].copy()
        ll = last0[a:e].copy()
        c = np.empty(e - a, np.float32)
        fires = 0
        for k in range(steps):
            load_row(cur[k, a:e], c, bf16)
            s = spikes[k, a:e]
            for i in range(e - a):
                x = uu[i] * lk if leak != 1.0 else uu[i]
                x = (x + c[i]) - th * oo[i]
                uu[i] = x
                oo[i] = f(1.0) if x > th else f(0.0)
            if masked:
                m = mask[a:e]
                for i in range(e - a):
                    s[i] = m[i] if oo[i] != 0 else zero
            else:
                for i in range(e - a):
                    s[i] = one if oo[i] != 0 else zero
            tk = np.int32(t0 + k)
            for i in range(e - a):
                ll[i] = tk if oo[i] != 0 else ll[i]
            for i in range(e - a):
                fires += np.int32(oo[i] != 0)
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
        counts[blk] = fires


@numba.njit(parallel=True, cache=True, nogil=True)
def _backward_kernel(grad, mask, fired, last0, potentials, table, out, t0, theta, leak, alpha, beta, kind,
                     through_reset, bf16):
    """grad (T, N) dL/d spikes (float32, or bf16 bits where ``bf16``), after the dropout
    ``mask`` where it is not empty (its type and order; dL/d spikes = grad x mask, rounded to
    bf16 where ``bf16`` as torch's product rounds); fired (T, N) uint8
    (stdb), last0 (N,) int32 the last spike before the window, potentials (T, N) (linear,
    exp), table the STDB slopes alpha*exp(-beta*dt) / theta for dt = 0 .. size-1 and a 0
    after them (a neuron that never fired, or fired longer ago); writes out (T, N) = dL/d
    current (the dtype of grad). The scan runs in fp32 in a block's own workspace. The
    slopes are looked up in two loops without branches (ages, then a gather): with a branch
    per neuron the loop did not vectorize and the backward took 3.4x as long on real spikes."""
    steps, n = grad.shape
    f = np.float32
    th, lk, al, be = f(theta), f(leak), f(alpha), f(beta)
    inv = f(1.0) / th                                # x / theta as x * (1 / theta): gradients within an ulp
    size = table.shape[0] - 1
    masked = mask.shape[0] > 0
    for blk in numba.prange((n + BLOCK - 1) // BLOCK):
        a = blk * BLOCK
        e = min(n, a + BLOCK)
        ll = last0[a:e].copy()
        at = np.empty(e - a, np.int32)               # each neuron's row of the table at this step
        mf = np.empty(e - a if masked else 0, np.float32)   # the block's mask in fp32
        if masked:
            load_row(mask[a:e], mf, bf16)
        work = np.empty((steps, e - a), np.float32)   # each step's slope, then dL/du_t
        gr = np.empty(e - a, np.float32)
        for k in range(steps):                       # forward in time: each step's slope g_t / theta
            r = work[k]
            if kind == 0:
                b = fired[k, a:e]
                tk = np.int32(t0 + k)
                for i in range(e - a):               # selects, no branch: the loop vectorizes
                    last = tk if b[i] != 0 else ll[i]
                    ll[i] = last
                    age = tk - last
                    at[i] = age if (last >= 0) & (age < size) else size
                for i in range(e - a):
                    r[i] = table[at[i]]
            else:
                p = potentials[k, a:e]
                for i in range(e - a):
                    z = abs(p[i] * inv - f(1.0))
                    g = al * max(f(1.0) - z, f(0.0)) if kind == 1 else al * np.exp(-be * z)
                    r[i] = g * inv
        for j in range(steps):                       # backward in time: + c_t * dL/du_{t+1}
            k = steps - 1 - j
            r = work[k]
            load_row(grad[k, a:e], gr, bf16)
            if masked:
                for i in range(e - a):
                    gr[i] = gr[i] * mf[i]
                if bf16:
                    round_to_bf16(gr)
            if k == steps - 1:
                for i in range(e - a):
                    r[i] = gr[i] * r[i]
            else:
                nxt = work[k + 1]
                for i in range(e - a):
                    s = r[i]
                    carry = lk - th * s if through_reset else lk
                    r[i] = gr[i] * s + carry * nxt[i]
            store_row(r, out[k, a:e], bf16)


def _operand(x: torch.Tensor, order) -> torch.Tensor:
    """Rows of x in ``order``, in bf16 or else fp32, contiguous."""
    x = x.detach()
    if x.dtype not in (torch.float32, torch.bfloat16):
        x = x.float()
    return rows(x, order).contiguous()


def _mask_row(mask, order, like_tensor: torch.Tensor) -> torch.Tensor:
    """A dropout mask (one step's shape) as one row in ``order`` and the spikes' type; empty: none."""
    if mask is None:
        return torch.empty(0, dtype=like_tensor.dtype)
    return state_row(mask, order, like_tensor.dtype)


def _forward(current, state: NeuronState, theta: float, leak: float, t0: int, save_bytes: bool,
             save_potential: bool, mask=None):
    order = memory_order(current)
    cur = _operand(current, order)
    bf16 = cur.dtype == torch.bfloat16
    steps, n = cur.shape
    spikes = torch.empty_like(cur)
    fired = torch.empty((steps, n) if save_bytes else (0, 0), dtype=torch.uint8)
    potentials = torch.empty((steps, n) if save_potential else (0, 0))
    u, o = torch.empty(1, n), torch.empty(1, n)
    last = torch.empty((1, n), dtype=torch.int32)
    counts = np.empty((n + BLOCK - 1) // BLOCK, np.int64)
    mask_row = _mask_row(mask, order, cur)
    _forward_kernel(bits(cur), state_row(state.u, order, torch.float32).numpy(),
                    state_row(state.o, order, torch.float32).numpy(), state_row(state.last, order, torch.int32).numpy(),
                    bits(mask_row), bits(spikes), fired.numpy(), potentials.numpy(),
                    u[0].numpy(), o[0].numpy(), last[0].numpy(), counts, int(t0), float(theta), float(leak),
                    save_bytes, save_potential, bf16)
    shape = current.shape[1:]
    new = NeuronState(*(like(x, shape, order)[0] for x in (u, o, last)))
    return like(spikes, shape, order), fired, potentials, new, order, mask_row, int(counts.sum())


class _NumbaLIF(torch.autograd.Function):
    @staticmethod
    def forward(ctx, current, u0, o0, last0, theta, leak, t0, surrogate, lut, mask):
        state = NeuronState(u0, o0, last0)
        spikes, fired, potentials, new, order, mask_row, count = _forward(
            current, state, theta, leak, t0, surrogate.kind == "stdb", surrogate.kind != "stdb", mask)
        ctx.save_for_backward(fired, state_row(last0, order, torch.int32), potentials,
                              torch.cat([lut.float() / float(theta), torch.zeros(1)]), mask_row)
        ctx.theta, ctx.leak, ctx.t0, ctx.surrogate, ctx.order = float(theta), float(leak), int(t0), surrogate, order
        ctx.mark_non_differentiable(new.u, new.o, new.last)
        ctx.set_materialize_grads(False)        # no zero tensors for the state's (absent) gradients
        return spikes, new.u, new.o, new.last, count

    @staticmethod
    def backward(ctx, grad_spikes, _gu, _go, _gl, _gc):
        fired, last0, potentials, table, mask_row = ctx.saved_tensors
        surrogate: Surrogate = ctx.surrogate
        grad = _operand(grad_spikes, ctx.order)
        bf16 = grad.dtype == torch.bfloat16
        out = torch.empty_like(grad)
        _backward_kernel(bits(grad), bits(mask_row), fired.numpy(), last0.numpy(), potentials.numpy(), table.numpy(),
                         bits(out), ctx.t0, ctx.theta, ctx.leak, float(surrogate.alpha), float(surrogate.beta),
                         KINDS[surrogate.kind], surrogate.through_reset, bf16)
        return like(out, grad_spikes.shape[1:], ctx.order), None, None, None, None, None, None, None, None, None


def lif_numba_counted(current, state: NeuronState, theta: float, leak: float, t0: int, surrogate: Surrogate, lut,
                      mask=None):
    """The layer's spikes handed on through the dropout ``mask`` (None: none; the mask's
    product done as the spikes are written, and again on their gradient), its new state, and
    how many spikes it fired (counted in the kernel: no pass over the spikes)."""
    if current.device.type != "cpu":
        raise ValueError("the numba backend runs on CPU tensors; use --backend fused or multistep on CUDA")
    if not (torch.is_grad_enabled() and current.requires_grad):     # evaluation, balancing: keep nothing
        spikes, _, _, state, _, _, count = _forward(current, state, theta, leak, t0, False, False, mask)
        return spikes, state, count
    spikes, u, o, last, count = _NumbaLIF.apply(current, state.u, state.o, state.last, theta, leak, t0, surrogate,
                                                lut, mask)
    return spikes, NeuronState(u, o, last), count


def lif_numba(current, state: NeuronState, theta: float, leak: float, t0: int, surrogate: Surrogate, lut):
    spikes, state, _ = lif_numba_counted(current, state, theta, leak, t0, surrogate, lut)
    return spikes, state


lif_numba.reads_bf16 = True      # trainer.snn hands it the synapses' bf16 currents without a cast
lif_numba.counted = lif_numba_counted   # ... and has it count the spikes and apply a dropout mask as it fires
