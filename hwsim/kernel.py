"""The neuron recurrence of a chunk of samples, bit-exact to ``export.fixedpoint``.

The graph is a feed-forward chain (plus shortcuts to earlier populations) and the
reference is layer-synchronous, so the synaptic input of a layer for a whole *block* of
time steps is one batched conv / matmul over ``steps x samples`` once the previous
layer's spikes of those steps are known (``hwsim.plan``); only the neuron recurrence
then runs step by step, as a handful of in-place elementwise ops on (samples, neurons).
Exact on float values because:

* conv sums wrap modulo 2**24 (``fixedpoint.wrap_signed``) and the current ``a << 6``
  wraps once (``wrap24``): both are exact float add/subtracts of 2**24 on exact values;
* the update ``clip(decay(v) - vth*o + u + bias)`` adds exactly representable operands; IEEE
  addition is correctly rounded, so the result is exact whenever the true result is
  representable, and otherwise it lies beyond 2**24, where the clip to +-(2**23 - 1)
  gives the same answer (rounding is monotone);
* ``decay`` (rounding toward zero) is ``q*m + trunc(r*m/4096)`` with ``v = 4096*q + r``:
  every intermediate stays below 2**24.

Compiled paths on the CPU: a core whose block input has at most ``simulate.EVENT_DENSITY``
(``EVENT_DENSITY_INT8`` where the core has an int8 product) non-zero entries per input and
image-step runs the whole block in one compiled kernel that gathers each output's current
from the input events only and updates the neurons in the same pass (``hwsim.events``,
numba); a denser block of a core with an exact int8 product gets its current as one
oneDNN int8 product (``hwsim.int8_products``) and its neurons from one compiled kernel
(``CorePlan.run_block``). Otherwise the dense float path: a denser block whose input
has silent channels (conv) / silent neurons (dense) is computed on the active ones only
(``sparse``), a layer without input spikes is skipped, and when ``|v|`` provably cannot
reach the 24-bit clip within a block the per-step clip is skipped. A core with shortcuts
(``export.graph.Shortcut``) adds each shortcut's current, one batched conv / product over
its source's spikes of the block, kept until the block ends (on every path).
All paths share the state, so a core may switch between them from block to block. Every event is counted:
spikes, synaptic events (input spikes x fan-out), neuron updates and active neuron updates.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from export import fixedpoint as fx
from hwsim.counters import BlockOutput, ChunkCounts
from hwsim.device import _threads
from hwsim.plan import CL, CorePlan

_V_MAX = float(fx.V_MAX)
_HALF = float(2 ** (fx.STATE_BITS - 1))
_FULL = float(2 ** fx.STATE_BITS)


def _decay_(v: torch.Tensor, m: int, tmp: torch.Tensor) -> None:
    """v <- sign(v*m) * (|v*m| >> 12) exactly, all intermediates < 2**24."""
    q = torch.div(v, float(fx.DECAY_UNITY), out=tmp).trunc_()     # v = 4096 q + r, r has v's sign
    v.sub_(q, alpha=float(fx.DECAY_UNITY))                          # v <- r
    v.mul_(m / fx.DECAY_UNITY).trunc_()                             # trunc(r m / 4096)
    v.add_(q, alpha=float(m))                                       # + q m


def _prepare_current(plan: CorePlan, a: torch.Tensor) -> None:
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


def _to_input(x: np.ndarray | torch.Tensor, dev: torch.device) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
    tb, nb = t.shape[:2]
    t = t.to(dev, non_blocking=True).reshape(tb * nb, *t.shape[2:]).to(torch.float32)
    return t.contiguous(memory_format=CL)


def _flat(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """(B, ...) -> a (B, M) view in storage order, and whether that order is (H, W, C)."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=CL):
        return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1), True
    return x.reshape(x.shape[0], -1), False


def _dense_block(p: CorePlan, x: torch.Tensor, hwc: bool, s_tot: torch.Tensor, v: torch.Tensor,
                 prev: torch.Tensor, tb: int, dev: torch.device, sparse: bool, host_checks: bool,
                 rec_threads: int | None, sources: Sequence[torch.Tensor] = ()) -> BlockOutput:
    """One core over a block on the dense path: the batched synaptic computation (plus each
    shortcut's current from its source's spikes of the block, ``sources``), then the
    step-by-step recurrence on v and prev (B, neurons), in place; the spikes and their
    counts are None for the output core."""
    n = v.shape[0]
    active = None
    if sparse:
        if p.op == "conv":
            c = p.in_shape[0]
            active = (s_tot.view(-1, c).amax(0) if hwc else s_tot.view(c, -1).amax(1)) > 0
        else:
            active = s_tot > 0
    a = p.synaptic(x, active)
    if a is None:                                              # no input spike in the block
        a = torch.zeros((tb * n, *p.out_shape), dtype=p.dtype, device=dev)
        if p.op == "conv":
            a = a.contiguous(memory_format=CL)
    af, out_hwc = _flat(a)
    _prepare_current(p, af)
    if p.shortcuts:
        a.add_(p.shortcut_current(sources).view(a.shape))   # af is a view of a: it sees the sum
    active = torch.count_nonzero(af)
    lo, hi = torch.aminmax(af)
    amax = torch.maximum(hi, -lo).to(torch.float64)
    scale = float(2 ** fx.ACT_SHIFT)
    wrap, clamp = p.need_wrap, True
    if host_checks:
        a64 = float(amax) * 2 ** fx.ACT_SHIFT
        wrap = wrap and a64 >= _HALF          # this block's currents cannot wrap: skip wrap24
        if not wrap:                          # |v| cannot reach the clip in this block: skip it
            vlo, vhi = torch.aminmax(v)
            clamp = max(float(vhi), -float(vlo)) + tb * (a64 + p.vth64 + p.bias_max) > _V_MAX
    if wrap:
        _wrap_(af)
        scale = 1.0
    out = torch.empty_like(a) if p.spiking else None
    of = _flat(out)[0] if p.spiking else None
    pv = prev
    tmp = torch.empty_like(v) if p.dv else None
    bias = None if p.bias is None else p.bias[out_hwc]
    with _threads(dev, rec_threads):
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
    counts = None
    if p.spiking:
        prev.copy_(pv)
        counts = of.view(tb, n, -1).sum(0)
    return BlockOutput(out, counts, out_hwc, active, amax)


def _run_chunk(plans: Sequence[CorePlan], x_chunk, steps: int, block: int, dev: torch.device,
               sparse: bool, record: bool, rec_threads: int | None, host_checks: bool,
               event_density: Sequence[float], int8: bool) -> ChunkCounts:
    """All steps of one chunk of samples, in blocks of ``block`` steps: per block and core,
    one batched synaptic computation, then the step-by-step neuron recurrence on flat
    (samples, neurons) views in storage order. Core i's block runs event-driven when its
    input has at most ``event_density[i]`` non-zero entries (per input and image-step),
    else on the int8 path where ``int8`` and the core has one (``CorePlan.int8``), else dense."""
    n = int(x_chunk.shape[1])
    f64 = torch.float64
    spikes_acc = [torch.zeros(n, dtype=f64, device=dev) for _ in plans]
    syn_acc = [torch.zeros((), dtype=f64, device=dev) for _ in plans]
    active_acc = [torch.zeros((), dtype=torch.int64, device=dev) for _ in plans]
    maxabs_acc = [torch.zeros((), dtype=f64, device=dev) for _ in plans]
    in_acc = torch.zeros(n, dtype=f64, device=dev)
    v: list[torch.Tensor | None] = [None] * len(plans)      # flat (n, M), storage order of the core's output
    prev: list[torch.Tensor | None] = [None] * len(plans)
    out_hwc = [False] * len(plans)
    buffers: list[np.ndarray | None] = [None] * len(plans)   # event-driven cores' spikes, reused per block
    trains = [[] for p in plans if p.spiking] if record else None
    sources = {sc.source for p in plans for sc in p.shortcuts}      # populations a shortcut reads
    for t0 in range(0, steps, block):
        tb = min(block, steps - t0)
        x = _to_input(x_chunk[t0:t0 + tb], dev)                       # (tb*n, C, H, W) channels-last
        xf, hwc = _flat(x)
        s_sum = xf.abs().view(tb, n, -1).sum(0)                       # (n, M): |spikes| per sample and input
        per_sample = s_sum.sum(1, dtype=f64)                          # (n,): the block's input spikes per sample
        in_acc += per_sample
        kept = {"input": (x, s_sum, hwc)} if "input" in sources else {}   # a shortcut source's block
        k = 0
        for i, p in enumerate(plans):
            s_tot = s_sum.sum(0)                                      # (M,): the block's spikes per input
            syn_acc[i] += (s_tot.to(f64) * p.fan_out[hwc and len(p.in_shape) == 3]).sum()
            for sc in p.shortcuts:                                    # events arriving through the shortcuts
                _, src_sum, src_hwc = kept[sc.source]
                syn_acc[i] += (src_sum.sum(0).to(f64) * sc.fan_out[src_hwc]).sum()
            if v[i] is None:
                v[i] = torch.full((n, p.neurons), p.core.v_init, dtype=p.dtype, device=dev)
                prev[i] = torch.zeros_like(v[i])
            shortcut_spikes = [kept[sc.source][0] for sc in p.shortcuts]
            events = (event_density[i] > 0 and p.events_ok
                      and float(per_sample.sum()) <= event_density[i] * tb * n * s_tot.numel())
            if events or (int8 and p.int8 is not None):
                if buffers[i] is None:
                    buffers[i] = np.empty((block, n, p.neurons), dtype=np.int8)
                res = p.run_block("events" if events else "int8", x, v[i], prev[i], buffers[i][:tb], shortcut_spikes)
            else:
                res = _dense_block(p, x, hwc, s_tot, v[i], prev[i], tb, dev, sparse, host_checks, rec_threads,
                                   shortcut_spikes)
            out, counts, out_hwc[i], active, amax = res
            active_acc[i] += active
            maxabs_acc[i] = torch.clamp(maxabs_acc[i], min=amax)
            if p.spiking:
                s_sum = counts
                per_sample = s_sum.sum(1, dtype=f64)
                spikes_acc[i] += per_sample
                if record:
                    trains[k].append(out.view(tb, n, *p.out_shape).to(torch.uint8).contiguous().cpu().numpy())
                    k += 1
                x, hwc = out, out_hwc[i]
                if p.name in sources:
                    kept[p.name] = (out, s_sum, hwc)
    p = plans[-1]
    out_v = v[-1]
    if out_hwc[-1]:                                                    # back to (C, H, W) order
        c, h, w = p.out_shape
        out_v = out_v.view(n, h, w, c).permute(0, 3, 1, 2)
    out_v = out_v.reshape(n, -1)
    return ChunkCounts(spikes=torch.stack(spikes_acc).round().to(torch.int64).cpu().numpy(),
                       synaptic_events=torch.stack(syn_acc).round().to(torch.int64).cpu().numpy(),
                       active=torch.stack(active_acc).cpu().numpy(),
                       max_abs=torch.stack(maxabs_acc).round().to(torch.int64).cpu().numpy(),
                       input_spikes=in_acc.round().to(torch.int64).cpu().numpy(),
                       output=out_v.round().to(torch.int64).cpu().numpy(),
                       trains=[np.concatenate(t, axis=0) for t in trains] if record else None)
