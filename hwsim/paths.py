"""The three ways hwsim runs one core over a block of steps, behind one interface.

As Lava's ProcessModels implement one Process, each path computes the same block of a
core (its synaptic current, the neuron recurrence, the counts) from the same ``Block`` and
returns a ``BlockOutput``; they share the neuron state, so a core may switch paths from
block to block. ``choose_path`` is the one place that picks. Every ``plan`` here is the
core's ``hwsim.plan.CorePlan``, which builds its paths.

- ``DensePath``: a batched float conv / matmul over the block's steps x samples (oneDNN on
  the CPU, exact im2col + GEMM on CUDA; on the active input channels / neurons only where
  few are), then the step-by-step recurrence as in-place elementwise ops. Every core has
  it; the only path on CUDA.
- ``EventPath``: one compiled kernel that gathers each output's current from the input
  events and updates the neurons in the same pass (``hwsim.events``; CPU, int8 inputs).
- ``Int8Path``: the current as one exact oneDNN int8 product (``hwsim.int8_products``;
  CPU, float32 cores), then one compiled neuron kernel.

The dense recurrence is exact on float values because:

* conv sums wrap modulo 2**24 (``fixedpoint.wrap_signed``) and the current ``a << 6``
  wraps once (``wrap24``): both are exact float add/subtracts of 2**24 on exact values;
* the update ``clip(decay(v) - vth*o + u + bias)`` adds exactly representable operands; IEEE
  addition is correctly rounded, so the result is exact whenever the true result is
  representable, and otherwise it lies beyond 2**24, where the clip to +-(2**23 - 1)
  gives the same answer (rounding is monotone);
* ``decay`` (rounding toward zero) is ``q*m + trunc(r*m/4096)`` with ``v = 4096*q + r``:
  every intermediate stays below 2**24.

When ``|v|`` provably cannot reach the 24-bit clip within a block the per-step clip is
skipped (``host_checks``), and a layer without input spikes is not computed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from export import fixedpoint as fx
from hwsim.counters import BlockOutput
from hwsim.device import _threads
from hwsim.int8_products import Int8Product, int8_shift
from hwsim.tensors import CL, conv2d_gemm, flat, hwc_columns, int8_words

SPARSE_FRACTION = 0.5            # compact a block's input when at most this fraction of it is active
_V_MAX = float(fx.V_MAX)
_HALF = float(2 ** (fx.STATE_BITS - 1))
_FULL = float(2 ** fx.STATE_BITS)


@dataclass(frozen=True)
class BlockSettings:
    """How a simulation runs its blocks: ``sparse`` (the dense path on active inputs only),
    ``host_checks`` (skip the wrap and clip where bounds allow), ``recurrence_threads``."""
    sparse: bool
    host_checks: bool
    recurrence_threads: int | None


@dataclass
class Block:
    """One core's input over a block of ``steps`` steps of ``n`` samples, and its state.

    ``x`` (steps*n, *in_shape) spikes (channels-last for maps), ``hwc`` whether x's storage
    order is (H, W, C), ``sources`` the spikes each shortcut reads; ``v`` and ``prev`` (n,
    neurons) in the output's storage order, updated in place; ``counts`` (n, neurons) float32
    spikes per neuron over the chunk so far, in that order, to which the block's spikes are
    added (None: the output core, which does not spike); ``buffer`` (at least steps, n,
    neurons) int8, reused across blocks by the compiled paths for the spikes (fresh pages
    cost more than the kernel)."""
    x: torch.Tensor
    hwc: bool
    steps: int
    n: int
    v: torch.Tensor
    prev: torch.Tensor
    sources: Sequence[torch.Tensor]
    counts: torch.Tensor | None
    buffer: np.ndarray | None = None


def choose_path(plan, events: bool, int8: bool):
    """The path of one core's block: event-driven where ``events`` (the block's input density
    is below the core's limit) and the core has that path, else the int8 product where
    ``int8`` and the core has one, else dense."""
    if events and plan.events is not None:
        return plan.events
    if int8 and plan.int8 is not None:
        return plan.int8
    return plan.dense


# ---- the dense path -----------------------------------------------------------------
def _decay_(v: torch.Tensor, m: int, tmp: torch.Tensor) -> None:
    """v <- sign(v*m) * (|v*m| >> 12) exactly, all intermediates < 2**24."""
    q = torch.div(v, float(fx.DECAY_UNITY), out=tmp).trunc_()     # v = 4096 q + r, r has v's sign
    v.sub_(q, alpha=float(fx.DECAY_UNITY))                          # v <- r
    v.mul_(m / fx.DECAY_UNITY).trunc_()                             # trunc(r m / 4096)
    v.add_(q, alpha=float(m))                                       # + q m


def _prepare_current(plan, a: torch.Tensor) -> None:
    """The synaptic current as the neuron receives it, in place: weight-exp shift
    (arithmetic, i.e. floor, for negative exponents) and the conv's wrap to signed 24 bit."""
    if plan.exp > 0:
        a.mul_(float(2 ** plan.exp))
    elif plan.exp < 0:
        a.mul_(2.0 ** plan.exp).floor_()
    if plan.need_conv_wrap:
        half, full = 2.0 ** (fx.CONV_OUT_BITS - 1), 2.0 ** fx.CONV_OUT_BITS
        if a.dtype == torch.float32:       # |a| < 2**24 (the exactness guard): one wrap is enough, exactly
            hi, lo = a >= half, a < -half
            a.sub_(hi.to(a.dtype), alpha=full)
            a.add_(lo.to(a.dtype), alpha=full)
        else:                              # float64: exact for any realistic sum
            torch.remainder(a.add_(half), full, out=a).sub_(half)


def _wrap_(a: torch.Tensor) -> None:
    """a <- wrap24(a << 6), Lava's single wrap (only called where the bound says it can matter)."""
    a.mul_(float(2 ** fx.ACT_SHIFT))
    hi = a > _HALF
    lo = a <= -_HALF
    a.sub_(hi.to(a.dtype), alpha=_FULL)
    a.add_(lo.to(a.dtype), alpha=_FULL)


class DensePath:
    """Batched float synapses, then the recurrence in torch (the module docstring)."""
    name = "dense"

    def __init__(self, plan, weights: np.ndarray):
        """``weights``: the conv's (pool-subsampled) kernel, or the dense core's (out, in) matrix
        with columns in its input's storage order."""
        self.plan = plan
        if plan.op == "conv":
            self.weight = torch.from_numpy(weights).to(device=plan.device, dtype=plan.dtype).contiguous(
                memory_format=CL)
        else:                                                         # (in, out)
            self.weight = torch.from_numpy(np.ascontiguousarray(weights.T)).to(device=plan.device, dtype=plan.dtype)

    def synaptic(self, x: torch.Tensor, active: torch.Tensor | None) -> torch.Tensor | None:
        """x (B, *in_shape) spikes; ``active``: which inputs spiked in this block -- per channel
        (conv) or per input neuron in x's storage order (dense) -- or None for "compute
        densely". Returns A (B, *out_shape) in the plan's dtype (conv: channels-last), or None
        when no input spiked."""
        p = self.plan
        if x.dtype != p.dtype:
            x = x.to(p.dtype)
        b = x.shape[0]
        if p.op == "conv":
            w = self.weight
            if active is not None:
                idx = torch.nonzero(active).flatten()
                if idx.numel() == 0:
                    return None
                if idx.numel() <= SPARSE_FRACTION * x.shape[1]:     # compute on the active channels only
                    x = x.index_select(1, idx).contiguous(memory_format=CL)
                    w = w.index_select(1, idx).contiguous(memory_format=CL)
            x = p.sum_pool(x)
            if p.conv_impl == "gemm":
                return conv2d_gemm(x, w, p.stride, p.padding)
            a = F.conv2d(x, w, stride=p.stride, padding=p.padding)
            return a if a.is_contiguous(memory_format=CL) else a.contiguous(memory_format=CL)
        wt = self.weight
        xf = p.dense_input(x)
        if x.dim() == 4 and not p.weight_hwc and not x.is_contiguous():
            active = None                                     # x's storage order is not the weights' order
        if active is not None and p.pool is None:
            idx = torch.nonzero(active).flatten()
            if idx.numel() == 0:
                return None
            if idx.numel() <= SPARSE_FRACTION * xf.shape[1]:            # the active input neurons only
                xf = xf.index_select(1, idx)
                wt = wt.index_select(0, idx)
        return (xf @ wt).view(b, *p.out_shape)

    def run(self, block: Block, settings: BlockSettings) -> BlockOutput:
        """The batched synaptic computation (plus each shortcut's current), then the
        step-by-step recurrence on v and prev, in place; the spikes and their counts are
        None for the output core."""
        p, n, tb, v = self.plan, block.n, block.steps, block.v
        dev = v.device
        active = None
        if settings.sparse:                                        # which inputs spiked in the block
            spiked = flat(block.x)[0].ne(0).any(0)                     # (M,) in x's storage order
            if p.op == "conv":
                c = p.in_shape[0]
                active = spiked.view(-1, c).any(0) if block.hwc else spiked.view(c, -1).any(1)
            else:
                active = spiked
        a = self.synaptic(block.x, active)
        if a is None:                                              # no input spike in the block
            a = torch.zeros((tb * n, *p.out_shape), dtype=p.dtype, device=dev)
            if p.op == "conv":
                a = a.contiguous(memory_format=CL)
        af, out_hwc = flat(a)
        _prepare_current(p, af)
        if p.shortcuts:
            a.add_(p.shortcut_current(block.sources).view(a.shape))   # af is a view of a: it sees the sum
        active = torch.count_nonzero(af)
        lo, hi = torch.aminmax(af)
        amax = torch.maximum(hi, -lo).to(torch.float64)
        scale = float(2 ** fx.ACT_SHIFT)
        wrap, clamp = p.need_wrap, True
        if settings.host_checks:
            a64 = float(amax) * 2 ** fx.ACT_SHIFT
            wrap = wrap and a64 >= _HALF          # this block's currents cannot wrap: skip wrap24
            if not wrap:                          # |v| cannot reach the clip in this block: skip it
                vlo, vhi = torch.aminmax(v)
                clamp = max(float(vhi), -float(vlo)) + tb * (a64 + p.vth64 + p.bias_max) > _V_MAX
        if wrap:
            _wrap_(af)
            scale = 1.0
        out = torch.empty_like(a) if p.spiking else None
        of = flat(out)[0] if p.spiking else None
        pv = block.prev
        tmp = torch.empty_like(v) if p.dv else None
        bias = None if p.bias is None else p.bias[out_hwc]
        with _threads(dev, settings.recurrence_threads):
            for t in range(tb):
                if p.dv:
                    _decay_(v, p.m, tmp)
                if p.spiking:
                    v.sub_(pv, alpha=p.vth64)
                v.add_(af[t * n:(t + 1) * n], alpha=scale)
                if bias is not None:
                    v.add_(bias)
                if clamp:
                    v.clamp_(-_V_MAX, _V_MAX)
                if p.spiking:
                    pv = torch.gt(v, p.vth64, out=of[t * n:(t + 1) * n])
        del a, af
        per_sample = None
        if p.spiking:
            block.prev.copy_(pv)
            spikes = of.view(tb, n, -1).sum(0)
            block.counts.add_(spikes)
            per_sample = spikes.sum(1)
        return BlockOutput(out, per_sample, out_hwc, active, amax)


# ---- the compiled paths (CPU) -----------------------------------------------------------
class _CompiledPath:
    """What the compiled paths share: the kernels' arguments and the block's spikes as a
    view of the buffer (channels-last for a conv, whose v is kept in (H, W, C) order too)."""
    name = ""

    def __init__(self, plan):
        self.plan = plan
        # the kernels' bias per neuron, in their order (empty: none)
        self.bias = (np.zeros(0, plan.dtype_np) if plan.bias is None or plan.bias_max == 0
                     else plan.bias[plan.op == "conv"].numpy())

    def run(self, block: Block, settings: BlockSettings) -> BlockOutput:
        p, steps, n = self.plan, block.steps, block.n
        out = block.buffer[:steps]
        stats = np.zeros((n, 3), dtype=np.int64)
        counts = block.counts.numpy() if p.spiking else np.zeros((0, 0), np.float32)
        extra = np.zeros((0, 0, 0), p.dtype_np)                              # empty: no shortcut
        if p.shortcuts:
            a = p.shortcut_current(block.sources)
            a = a.permute(0, 2, 3, 1) if a.dim() == 4 else a                  # the kernels' (H, W, C) order
            extra = a.contiguous().numpy().reshape(steps, n, -1)
        state = (block.v.numpy(), block.prev.numpy(), out, counts, self.bias, extra, stats, int(p.vth64), p.dv,
                 p.exp, p.need_conv_wrap, p.spiking, bool(p.need_wrap))
        self.compute(block, state)
        if p.op == "conv":
            spikes = torch.from_numpy(out).view(steps * n, *p.out_shape[1:], p.out_shape[0]).permute(0, 3, 1, 2)
        else:
            spikes = torch.from_numpy(out).view(steps * n, *p.out_shape)
        per_sample = torch.from_numpy(stats[:, 2]) if p.spiking else None
        return BlockOutput(spikes, per_sample, p.op == "conv", int(stats[:, 0].sum()), int(stats[:, 1].max(initial=0)))

    def compute(self, block: Block, state: tuple) -> None:
        raise NotImplementedError


class EventPath(_CompiledPath):
    """Each output's current gathered from the input events, neurons in the same pass
    (``hwsim.events``); inputs are int8: spikes, or sums of at most 127 after a folded pool.

    A float32 core whose weights are int8 times a power of two (``int8_shift``: every 8-bit
    core) gathers int8 weight rows into int32 sums, exact below the float32 bound it already
    meets: a quarter of the weight traffic of float32 rows. Other cores gather their floats."""
    name = "events"

    def __init__(self, plan, weights: np.ndarray):
        """``weights``: the conv's (pool-subsampled) kernel, or the dense core's (in, out) matrix
        of its dense path, which the kernel reads in place unless it takes int8 rows."""
        super().__init__(plan)
        shift = int8_shift(weights) if plan.dtype == torch.float32 else None
        if shift is None:
            self.w_scale, self.sum_type = 1.0, np.zeros(0, plan.dtype_np)
            self.part_type, self.span = self.sum_type, 1 << 62
            rows = weights.astype(plan.dtype_np, copy=False)
        else:                                 # conv: partial sums of up to 256 int8 rows fit int16
            self.w_scale, self.sum_type = float(2 ** shift), np.zeros(0, np.int32)
            self.part_type, self.span = np.zeros(0, np.int16), 256
            rows = (np.asarray(weights, dtype=np.int64) >> shift).astype(np.int8)
        if plan.op == "conv":                 # (KH, KW, C, O): one contiguous fan-out vector per input event
            ew = rows.transpose(2, 3, 1, 0)
            pad = (-ew.shape[2]) % 8                     # input channels padded to whole int64 words
            self.weight = np.ascontiguousarray(np.pad(ew, ((0, 0), (0, 0), (0, pad), (0, 0))))
            fy, fx_ = plan.pool or (1, 1)
            ppy, ppx = plan.core.padding if plan.pool_pad_explicit else (0, 0)
            self.geometry = np.array([*plan.stride, *plan.padding, fy, fx_, ppy, ppx, *plan.out_shape[1:]],
                                     dtype=np.int64)
        else:
            self.weight = np.ascontiguousarray(rows)
        # without leak, bias or shortcut a neuron without input events that did not fire keeps its state
        self.quiet = plan.dv == 0 and not self.bias.any() and not plan.core.shortcuts

    def compute(self, block: Block, state: tuple) -> None:
        from hwsim.events import conv_core_events, dense_core_events
        p, x = self.plan, block.x
        if p.op == "conv":
            xs = int8_words(x.permute(0, 2, 3, 1))                               # (steps*B, H, W, C)
            xs = xs.reshape(block.steps, block.n, *xs.shape[1:])
            conv_core_events(xs, xs.view(np.int64), self.weight, self.w_scale, self.sum_type, self.part_type, self.span,
                             self.geometry, *state, self.quiet)
        else:
            if x.dim() == 4 and p.pool is not None:
                x = x.to(p.dtype)                                            # avg_pool2d needs floats
            xs = int8_words(p.dense_input(x)).reshape(block.steps, block.n, -1)
            dense_core_events(xs, xs.view(np.int64), self.weight, self.w_scale, self.sum_type, *state, self.quiet)


class Int8Path(_CompiledPath):
    """The block's current as one exact oneDNN int8 product of the full (unpooled) weights,
    then the compiled neuron update (``hwsim.events.neuron_block``)."""
    name = "int8"

    def __init__(self, plan, product: Int8Product):
        super().__init__(plan)
        self.product = product

    @classmethod
    def make(cls, plan) -> Int8Path | None:
        """The core's int8 path, None where the product would not be exact."""
        core = plan.core
        if plan.op == "conv":
            product = Int8Product.make("conv", core.weights, core.stride, core.padding)
        else:                        # columns in the input's order
            w = core.weights
            product = Int8Product.make("dense", hwc_columns(w.reshape(len(w), *plan.in_shape)) if plan.weight_hwc
                                       else w)
        return None if product is None else cls(plan, product)

    def compute(self, block: Block, state: tuple) -> None:
        from hwsim.events import neuron_block
        p = self.plan
        if p.op == "conv":
            a = self.product(block.x).permute(0, 2, 3, 1)                         # channels-last: a view
        else:
            a = self.product(p.dense_input(block.x, pooled=False))
        neuron_block(a.contiguous().numpy().reshape(block.steps, block.n, -1), *state)
