"""The "fused" LIF backend: the recurrence over a window as one Triton kernel per layer.

The equations are trainer.lif's. Each program owns BLOCK neurons and walks the window's
steps in registers (potential, last spike, spike and age never leave the chip); memory
traffic is one read of the currents and one write of the spikes per step.

Forward writes the spikes for the next synapse (fp32, or bf16 under bf16 autocast, which
the next conv then reads without a cast), and one byte per neuron-step for the backward;
the linear and exp surrogates also keep the fp32 potentials. Backward is one kernel of two
passes per neuron: forward in time to rebuild the spike ages from the bytes and write
dL/do_t * g_t / theta (and, with the reset's gradient, the carry leak - g_t), then backward in
time to add carry * dL/du_{t+1}. The arithmetic and
its order are the reference's, and floating-point contraction is off, so spikes are
bit-exact; gradients agree to an ulp (exp may round differently, and the multistep
backend's scan adds leak * next in one rounding).

A layer is walked in its memory order (``trainer.memory_order``): channels-last currents
give channels-last spikes, with no copy either way.

Runs on CUDA tensors; on the CPU only under Triton's interpreter (TRITON_INTERPRET=1 set
before this module is imported), which is how the tests check it without a GPU.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from trainer.lif import NeuronState, Surrogate
from trainer.memory_order import like, memory_order, rows, state_row

BLOCK = 1024
KINDS = {"stdb": 0, "linear": 1, "exp": 2}
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"
# Bit-exactness with the torch backends: no a*b+c contracted into one rounding.
NO_FMA = {} if INTERPRETED else {"enable_fp_fusion": False}


@triton.jit(do_not_specialize=["n", "steps", "t0"])
def _forward_kernel(cur_ptr, u0_ptr, o0_ptr, last0_ptr, spike_ptr, byte_ptr, pot_ptr, u_ptr, o_ptr, last_ptr,
                    n, steps, t0, theta, leak, SAVE_BYTES: tl.constexpr, SAVE_POTENTIAL: tl.constexpr,
                    BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    u = tl.load(u0_ptr + offs, mask=mask, other=0.0)
    o = tl.load(o0_ptr + offs, mask=mask, other=0.0)
    last = tl.load(last0_ptr + offs, mask=mask, other=-1)
    for k in range(steps):
        at = k * n.to(tl.int64) + offs
        u = leak * u + tl.load(cur_ptr + at, mask=mask, other=0.0) - theta * o
        fired = u > theta
        o = fired.to(tl.float32)
        last = tl.where(fired, t0 + k, last)
        tl.store(spike_ptr + at, o.to(spike_ptr.dtype.element_ty), mask=mask)
        if SAVE_BYTES:
            tl.store(byte_ptr + at, fired.to(tl.uint8), mask=mask)
        if SAVE_POTENTIAL:
            tl.store(pot_ptr + at, u, mask=mask)
    tl.store(u_ptr + offs, u, mask=mask)
    tl.store(o_ptr + offs, o, mask=mask)
    tl.store(last_ptr + offs, last, mask=mask)


@triton.jit(do_not_specialize=["n", "steps", "t0", "lut_size"])
def _backward_kernel(grad_ptr, byte_ptr, last0_ptr, pot_ptr, lut_ptr, out_ptr, carry_ptr, n, steps, t0, lut_size,
                     theta, leak, alpha, beta, KIND: tl.constexpr, THROUGH_RESET: tl.constexpr,
                     BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    last = tl.load(last0_ptr + offs, mask=mask, other=-1)
    for k in range(steps):                      # forward in time: dL/do_t * g_t / theta
        at = k * n.to(tl.int64) + offs
        if KIND == 0:
            fired = tl.load(byte_ptr + at, mask=mask, other=0) != 0
            last = tl.where(fired, t0 + k, last)
            age = t0 + k - last
            known = mask & (last >= 0) & (age < lut_size)
            slope = tl.load(lut_ptr + tl.where(known, age, 0), mask=known, other=0.0)
        else:
            z = tl.load(pot_ptr + at, mask=mask, other=0.0) / theta - 1.0
            if KIND == 1:
                slope = alpha * tl.maximum(1.0 - tl.abs(z), 0.0)
            else:
                slope = alpha * tl.exp(-beta * tl.abs(z))
        grad = tl.load(grad_ptr + at, mask=mask, other=0.0)
        scaled = slope / theta
        tl.store(out_ptr + at, grad * scaled, mask=mask)
        if THROUGH_RESET:
            tl.store(carry_ptr + at, leak - theta * scaled, mask=mask)
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for i in range(steps):                      # backward in time: + carry * dL/du_{t+1} (0 after the last)
        at = (steps - 1 - i) * n.to(tl.int64) + offs
        if THROUGH_RESET:
            acc = tl.load(out_ptr + at, mask=mask, other=0.0) + tl.load(carry_ptr + at, mask=mask, other=0.0) * acc
        else:
            acc = tl.load(out_ptr + at, mask=mask, other=0.0) + leak * acc
        tl.store(out_ptr + at, acc, mask=mask)


def _grid(n: int):
    return (triton.cdiv(n, BLOCK),)


def _spike_dtype(current: torch.Tensor) -> torch.dtype:
    """The synapses' dtype: under autocast the next conv/matmul reads the spikes as they are (0/1 is exact)."""
    device = current.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else torch.float32


def _forward(current, state: NeuronState, theta: float, leak: float, t0: int, save_bytes: bool,
             save_potential: bool):
    """Run the forward kernel: spikes, bytes (or an empty stand-in), potentials (same), new state,
    the neurons' memory order (the bytes and potentials are rows in it)."""
    order, shape = memory_order(current), current.shape[1:]
    cur = rows(current.float(), order).contiguous()
    steps, n = cur.shape
    spikes = torch.empty(cur.shape, dtype=_spike_dtype(current), device=cur.device)
    fired = torch.empty(cur.shape if save_bytes else 0, dtype=torch.uint8, device=cur.device)
    potentials = torch.empty_like(cur) if save_potential else cur[:0]
    u, o = torch.empty_like(cur[:1]), torch.empty_like(cur[:1])
    last = torch.empty((1, n), dtype=torch.int32, device=cur.device)
    _forward_kernel[_grid(n)](cur, state_row(state.u, order, torch.float32), state_row(state.o, order, torch.float32),
                              state_row(state.last, order, torch.int32), spikes, fired, potentials, u, o, last, n,
                              steps, t0, float(theta), float(leak), SAVE_BYTES=save_bytes,
                              SAVE_POTENTIAL=save_potential, BLOCK=BLOCK, **NO_FMA)
    new = NeuronState(*(like(x, shape, order)[0] for x in (u, o, last)))
    return like(spikes, shape, order), fired, potentials, new, order


class _FusedLIF(torch.autograd.Function):
    @staticmethod
    def forward(ctx, current, u0, o0, last0, theta, leak, t0, surrogate, lut):
        state = NeuronState(u0, o0, last0)
        spikes, fired, potentials, new, order = _forward(current, state, theta, leak, t0, True,
                                                         surrogate.kind != "stdb")
        ctx.save_for_backward(fired, state_row(last0, order, torch.int32), potentials, lut.float().contiguous())
        ctx.theta, ctx.leak, ctx.t0, ctx.surrogate, ctx.order = float(theta), float(leak), int(t0), surrogate, order
        ctx.mark_non_differentiable(new.u, new.o, new.last)
        return spikes, new.u, new.o, new.last

    @staticmethod
    def backward(ctx, grad_spikes, _gu, _go, _gl):
        fired, last0, potentials, lut = ctx.saved_tensors
        surrogate: Surrogate = ctx.surrogate
        grad = rows(grad_spikes.float(), ctx.order).contiguous()
        steps, n = grad.shape
        grad_current = torch.empty_like(grad)
        carry = torch.empty_like(grad) if surrogate.through_reset else grad[:0]
        _backward_kernel[_grid(n)](grad, fired, last0, potentials, lut, grad_current, carry, n, steps, ctx.t0,
                                   lut.numel(), ctx.theta, ctx.leak, float(surrogate.alpha), float(surrogate.beta),
                                   KIND=KINDS[surrogate.kind], THROUGH_RESET=surrogate.through_reset, BLOCK=BLOCK,
                                   **NO_FMA)
        return like(grad_current, grad_spikes.shape[1:], ctx.order), None, None, None, None, None, None, None, None


def lif_fused(current, state: NeuronState, theta: float, leak: float, t0: int, surrogate: Surrogate, lut):
    if current.device.type != "cuda" and not INTERPRETED:
        raise ValueError("the fused backend runs on CUDA tensors (or on the CPU with TRITON_INTERPRET=1 set "
                         "before import, for tests); use --backend multistep on the CPU")
    if not (torch.is_grad_enabled() and current.requires_grad):     # evaluation, balancing: keep nothing
        spikes, _, _, state, _ = _forward(current, state, theta, leak, t0, False, False)
        return spikes, state
    spikes, u, o, last = _FusedLIF.apply(current, state.u, state.o, state.last, theta, leak, t0, surrogate, lut)
    return spikes, NeuronState(u, o, last)
