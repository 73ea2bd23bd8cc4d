"""Per-core plans: everything about a core that does not depend on the samples.

* Exactness: all arithmetic is float32 on integer values. Inputs are spikes in
  {-1, 0, 1} (or sums of a few spikes, see the pool rewrite) and weights are integers;
  every partial sum of a synaptic current is bounded by the sum of |w| over the
  neuron's fan-in, and while that bound is < 2**24 every partial sum is an exactly
  representable float32 integer, whatever the order of summation. A core whose bound
  reaches 2**24 is computed in float64 instead (exact to 2**53): ``CorePlan.dtype``.
* Folded average pools (docs/fixedpoint.md): the graph records the q x q pool export
  folded into a core, whose kernel is then constant over q x q blocks; such a core is
  computed as an exact integer sum-pool of the input spikes followed by the small
  kernel (q^2 fewer multiply-adds).
* CUDA: convolutions are explicit im2col + GEMM (``conv2d_gemm``: cuDNN may pick FFT or
  Winograd algorithms, which are not exact on integers). Matmuls may use TF32: every
  operand -- <= 8-bit weights, even dense weights in [-256, 255], spike counts <= 2**11 --
  is exact in TF32's 11-bit significand, and accumulation is float32. bf16 *inputs*
  would be exact as well, but torch stores bf16 matmul/conv outputs in bf16, which
  rounds the sums, so bf16 is not used (``tests/test_hwsim_exact.py`` proves both).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from export import fixedpoint as fx
from export.graph import Core, CoreGraph, Shortcut
from hwsim.counters import BlockOutput, SimError
from hwsim.int8_products import Int8Product

CL = torch.channels_last
FLOAT32_EXACT = 2 ** 24          # integers of magnitude <= 2**24 are exact in float32
SPARSE_FRACTION = 0.5            # compact a block's input when at most this fraction of it is active
GEMM_COLS_BUDGET = 1 << 30       # bytes of im2col columns per GEMM
_HALF = float(2 ** (fx.STATE_BITS - 1))


def _fan_out_orders(fan: np.ndarray, device: torch.device) -> dict[bool, torch.Tensor]:
    """Fan-out per input neuron, flat in (C, H, W) order (False) and, for maps, (H, W, C) order (True)."""
    fan = fan.astype(np.float64)
    orders = {False: torch.from_numpy(fan.reshape(-1)).to(device)}
    if fan.ndim == 3:
        orders[True] = torch.from_numpy(np.ascontiguousarray(fan.transpose(1, 2, 0)).reshape(-1)).to(device)
    return orders


class ShortcutPlan:
    """A core's shortcut (``export.graph.Shortcut``) on the device: its current over a block
    of steps from its source's spikes, ``shift(W s, weight_exp)`` with no wrap."""

    def __init__(self, sc: Shortcut, bound: int, out_shape: tuple[int, ...], device: torch.device,
                 dtype: torch.dtype, conv_impl: str):
        self.source, self.op, self.exp, self.conv_impl = sc.source, sc.op, sc.weight_exp, conv_impl
        self.stride, self.padding = sc.stride, sc.padding
        self.bound = bound                   # its exactness guard: the largest |sum| before the shift
        self.weight = torch.from_numpy(sc.weights).to(device=device, dtype=dtype)
        if sc.op == "conv":
            self.weight = self.weight.contiguous(memory_format=CL)
        self.fan_out = _fan_out_orders(sc.fan_out_per_input(out_shape), device)

    def current(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, *source shape) spikes -> the current (B, *out_shape), exact integers."""
        x = x.to(self.weight.dtype)
        if self.op == "identity":
            a = x * self.weight[0]
        elif self.conv_impl == "gemm":
            a = conv2d_gemm(x, self.weight, self.stride, self.padding)
        else:
            a = F.conv2d(x, self.weight, stride=self.stride, padding=self.padding)
        if self.exp > 0:
            a = a * float(2 ** self.exp)
        elif self.exp < 0:
            a = torch.floor(a * 2.0 ** self.exp)
        return a


class CorePlan:
    """Everything about one core that does not depend on the samples: weights on the
    device in the layout the fast path uses, the exactness guard, the rewrites."""

    def __init__(self, core: Core, device: torch.device, input_channels_last: bool, conv_impl: str = "native"):
        self.core = core
        self.conv_impl = conv_impl
        self.name, self.op, self.spiking = core.name, core.op, core.spiking
        self.in_shape, self.out_shape = tuple(core.input_shape), tuple(core.output_shape)
        self.neurons = math.prod(self.out_shape)
        self.device = device
        w = core.weights                    # int32
        o = w.shape[0]
        # the exactness guard: |any partial sum| <= sum of |w| over the fan-in (|input| <= 1)
        self.bound = fx.max_abs_current(w)
        self.exp = core.weight_exp if core.op == "dense" else 0
        a_bound = self.bound * 2 ** max(self.exp, 0)
        # Lava's Conv wraps its sums modulo 2**24 (fixedpoint.wrap_signed): only possible at |sum| >= 2**23
        self.need_conv_wrap = core.op == "conv" and self.bound >= 2 ** (fx.CONV_OUT_BITS - 1)
        if self.need_conv_wrap:
            a_bound = min(a_bound, 2 ** (fx.CONV_OUT_BITS - 1))
        # shortcut currents are added to the core's own: their sum must be exact as well
        sc_bounds = [fx.max_abs_current(sc.weights, max(sc.weight_exp, 0)) for sc in core.shortcuts]
        exact = self.bound < FLOAT32_EXACT and (not core.shortcuts or a_bound + sum(sc_bounds) < FLOAT32_EXACT)
        self.dtype = torch.float32 if exact else torch.float64
        a_bound += sum(sc_bounds)
        self.shortcuts = [ShortcutPlan(sc, bound, self.out_shape, device, self.dtype, conv_impl)
                          for sc, bound in zip(core.shortcuts, sc_bounds)]
        self.need_wrap = a_bound * 2 ** fx.ACT_SHIFT >= _HALF
        self.vth64 = float(core.vth << fx.VTH_SHIFT)
        bias = fx.neuron_bias(core)      # |bias| < 2**19: exact in float32, like the threshold
        self.bias_max = float(np.abs(bias).max()) if core.bias is not None else 0.0
        self.bias = None if core.bias is None else {      # per neuron, in (C, H, W) and in (H, W, C) order
            hwc: torch.from_numpy(np.ascontiguousarray(
                np.moveaxis(bias, 0, -1) if hwc else bias).reshape(-1).astype(np.float64)).to(device, self.dtype)
            for hwc in ((False, True) if len(self.out_shape) == 3 else (False,))}
        self.dv = core.dv
        self.m = fx.DECAY_UNITY - core.dv
        self.pool = core.pool if core.pool != (1, 1) else None
        self.pool_pad_explicit = False
        self.input_channels_last = input_channels_last
        self.weight_hwc = False          # dense: columns in (H, W, C) order, for channels-last inputs
        dt = self.dtype
        self.dtype_np = np.float32 if dt == torch.float32 else np.float64
        if core.op == "conv":
            kh, kw = w.shape[2:]
            (sy, sx), (py, px) = core.stride, core.padding
            self.stride, self.padding = (sy, sx), (py, px)
            if self.pool is not None:
                fy, fx_ = self.pool
                w = w[:, :, ::fy, ::fx_]
                h, wd = self.in_shape[1:]
                if py % fy == 0 and px % fx_ == 0 and h % fy == 0 and wd % fx_ == 0:
                    self.padding = (py // fy, px // fx_)
                else:
                    self.pool_pad_explicit = True
                    self.padding = (0, 0)
                self.stride = (sy // fy, sx // fx_)
            self.weight = torch.from_numpy(w).to(device=device, dtype=dt).contiguous(memory_format=CL)
            if device.type == "cpu":         # (KH, KW, C, O): one contiguous fan-out vector per input event
                ew = w.transpose(2, 3, 1, 0).astype(self.dtype_np)
                pad = (-ew.shape[2]) % 8                     # input channels padded to whole int64 words
                self.event_weight = np.ascontiguousarray(np.pad(ew, ((0, 0), (0, 0), (0, pad), (0, 0))))
                fy, fx_ = self.pool or (1, 1)
                ppy, ppx = core.padding if self.pool_pad_explicit else (0, 0)
                self.event_geometry = np.array([*self.stride, *self.padding, fy, fx_, ppy, ppx, *self.out_shape[1:]],
                                               dtype=np.int64)
        else:
            if len(self.in_shape) == 3:
                c, h, wd = self.in_shape
                w4 = w.reshape(o, c, h, wd)
                if self.pool is not None:
                    w4 = w4[:, :, ::self.pool[0], ::self.pool[1]]
                if input_channels_last:
                    w = _hwc_columns(w4)
                    self.weight_hwc = True
                else:
                    w = w4.reshape(o, -1)
            self.weight = torch.from_numpy(np.ascontiguousarray(w.T)).to(device=device, dtype=dt)  # (in, out)
            if device.type == "cpu":
                self.event_weight = self.weight.numpy()
        # event-driven blocks take int8 inputs: spikes, or sums of at most 127 after a folded pool;
        # a shortcut's current is computed densely (``shortcut_current``) and added by the kernel
        self.events_ok = device.type == "cpu" and (self.pool is None or math.prod(self.pool) <= 127)
        if device.type == "cpu":         # the compiled kernels' bias per neuron, in their order (empty: none)
            self.event_bias = (np.zeros(0, self.dtype_np) if self.bias is None or self.bias_max == 0
                               else self.bias[core.op == "conv"].numpy())
            # without leak, bias or shortcut a neuron without input events that did not fire keeps its state
            self.event_quiet = core.dv == 0 and not self.event_bias.any() and not core.shortcuts
        self.fan_out = _fan_out_orders(core.fan_out_per_input, device)
        # the int8 path (CPU): the block's current as one exact oneDNN int8 product, None where it is not exact
        self.int8 = None
        if device.type == "cpu" and self.dtype == torch.float32:
            if core.op == "conv":
                self.int8 = Int8Product.make("conv", core.weights, core.stride, core.padding)
            else:                        # the full (unpooled) weights, columns in the input's order
                wd = _hwc_columns(core.weights.reshape(o, *self.in_shape)) if self.weight_hwc else core.weights
                self.int8 = Int8Product.make("dense", wd)

    def describe(self) -> dict:
        return {"name": self.name, "op": self.op, "dtype": str(self.dtype).replace("torch.", ""),
                "sum_abs_w_bound": self.bound, "pool_rewrite": list(self.pool) if self.pool else None,
                "conv_wrap": self.need_conv_wrap, "wrap": bool(self.need_wrap), "ann_macs": self.core.ann_macs,
                "shortcuts": [{"source": sc.source, "op": sc.op, "sum_abs_w_bound": sc.bound} for sc in self.shortcuts]}

    # ---- synaptic current of a block of image-steps ------------------------------
    def synaptic(self, x: torch.Tensor, active: torch.Tensor | None) -> torch.Tensor | None:
        """x (B, *in_shape) spikes; ``active``: which inputs spiked in this block -- per channel
        (conv) or per input neuron in x's storage order (dense) -- or None for "compute
        densely". Returns A (B, *out_shape) in self.dtype (conv: channels-last), or None when
        no input spiked."""
        if x.dtype != self.dtype:
            x = x.to(self.dtype)
        b = x.shape[0]
        if self.op == "conv":
            w = self.weight
            if active is not None:
                idx = torch.nonzero(active).flatten()
                if idx.numel() == 0:
                    return None
                if idx.numel() <= SPARSE_FRACTION * x.shape[1]:     # compute on the active channels only
                    x = x.index_select(1, idx).contiguous(memory_format=CL)
                    w = w.index_select(1, idx).contiguous(memory_format=CL)
            x = self._sum_pool(x)
            if self.conv_impl == "gemm":
                return conv2d_gemm(x, w, self.stride, self.padding)
            a = F.conv2d(x, w, stride=self.stride, padding=self.padding)
            return a if a.is_contiguous(memory_format=CL) else a.contiguous(memory_format=CL)
        wt = self.weight
        xf = self._dense_input(x)
        if x.dim() == 4 and not self.weight_hwc and not x.is_contiguous():
            active = None                                     # x's storage order is not the weights' order
        if active is not None and self.pool is None:
            idx = torch.nonzero(active).flatten()
            if idx.numel() == 0:
                return None
            if idx.numel() <= SPARSE_FRACTION * xf.shape[1]:            # the active input neurons only
                xf = xf.index_select(1, idx)
                wt = wt.index_select(0, idx)
        return (xf @ wt).view(b, *self.out_shape)

    def _sum_pool(self, x: torch.Tensor) -> torch.Tensor:
        """A conv core's folded q x q pool as an exact integer sum-pool of its input (no pool: x)."""
        if self.pool is None:
            return x
        if self.pool_pad_explicit:
            py, px = self.core.padding
            x = F.pad(x, (px, px, py, py))
        return F.avg_pool2d(x, self.pool, self.pool, divisor_override=1)

    def _dense_input(self, x: torch.Tensor, pooled: bool = True) -> torch.Tensor:
        """A dense core's input (B, ...) as (B, in) in its weights' row order, the folded pool
        applied (``pooled``; the int8 path reads the unpooled input with the full weights)."""
        if pooled and self.pool is not None:
            x = F.avg_pool2d(x, self.pool, self.pool, divisor_override=1)
        if x.dim() == 4 and self.weight_hwc:
            return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)      # a view of a channels-last tensor
        return x.reshape(x.shape[0], -1)

    def run_block(self, kind: str, x: torch.Tensor, v: torch.Tensor, prev: torch.Tensor, out: np.ndarray,
                  sources: Sequence[torch.Tensor] = ()) -> BlockOutput:
        """The whole core (synaptic input and neurons) over a block of steps in compiled
        kernels: ``kind`` "events" gathers the synaptic input from the input events
        (``hwsim.events``); "int8" computes it as one exact int8 product
        (``hwsim.int8_products``), then updates the neurons (``hwsim.events.neuron_block``).
        x (steps*B, *in_shape) spikes, ``sources`` the spikes of the block that each shortcut
        reads, v and prev (B, neurons) in the output's storage order, updated in place;
        ``out`` (steps, B, neurons) int8, overwritten with the spikes (a buffer kept across
        blocks: fresh pages cost more than the kernel). The spikes are a view of ``out``,
        channels-last for a conv (whose v is kept in (H, W, C) order too)."""
        from hwsim.events import conv_core_events, dense_core_events, neuron_block
        steps, n = out.shape[:2]
        stats = np.zeros((n, 2), dtype=np.int64)
        counts = np.zeros((n, self.neurons), dtype=np.float32)
        extra = np.zeros((0, 0, 0), self.dtype_np)                              # empty: no shortcut
        if self.shortcuts:
            a = self.shortcut_current(sources)
            a = a.permute(0, 2, 3, 1) if a.dim() == 4 else a                  # the kernels' (H, W, C) order
            extra = a.contiguous().numpy().reshape(steps, n, -1)
        state = (v.numpy(), prev.numpy(), out, counts, self.event_bias, extra, stats, int(self.vth64), self.dv,
                 self.exp, self.need_conv_wrap, self.spiking, bool(self.need_wrap))
        if kind == "int8":
            if self.op == "conv":
                a = self.int8(x).permute(0, 2, 3, 1)                             # channels-last: a view
            else:
                a = self.int8(self._dense_input(x, pooled=False))
            neuron_block(a.contiguous().numpy().reshape(steps, n, -1), *state)
        elif self.op == "conv":
            xs = _int8_words(x.permute(0, 2, 3, 1))                               # (steps*B, H, W, C)
            xs = xs.reshape(steps, n, *xs.shape[1:])
            conv_core_events(xs, xs.view(np.int64), self.event_weight, self.event_geometry, *state, self.event_quiet)
        else:
            if x.dim() == 4 and self.pool is not None:
                x = x.to(self.dtype)                                            # avg_pool2d needs floats
            xs = _int8_words(self._dense_input(x)).reshape(steps, n, -1)
            dense_core_events(xs, xs.view(np.int64), self.event_weight, *state, self.event_quiet)
        if self.op == "conv":
            spikes = torch.from_numpy(out).view(steps * n, *self.out_shape[1:], self.out_shape[0]).permute(0, 3, 1, 2)
        else:
            spikes = torch.from_numpy(out).view(steps * n, *self.out_shape)
        counts = torch.from_numpy(counts) if self.spiking else None
        return BlockOutput(spikes, counts, self.op == "conv", int(stats[:, 0].sum()), int(stats[:, 1].max(initial=0)))

    def shortcut_current(self, sources: Sequence[torch.Tensor]) -> torch.Tensor:
        """The sum of the shortcuts' currents (steps*B, *out_shape) from their sources' spikes."""
        total = None
        for sc, src in zip(self.shortcuts, sources, strict=True):
            a = sc.current(src)
            total = a if total is None else total.add_(a.view(total.shape))
        return total


def _hwc_columns(w4: np.ndarray) -> np.ndarray:
    """Dense weights (O, C, H, W) as (O, H*W*C): columns in a channels-last input's order."""
    return w4.transpose(0, 2, 3, 1).reshape(len(w4), -1)


def _int8_words(x: torch.Tensor) -> np.ndarray:
    """x (..., K) as a contiguous int8 array whose last axis is zero-padded to whole int64 words
    (the event kernels test eight inputs at once)."""
    xs = x.to(torch.int8).contiguous().numpy()
    if xs.shape[-1] % 8:
        xs = np.concatenate([xs, np.zeros((*xs.shape[:-1], -xs.shape[-1] % 8), np.int8)], axis=-1)
    return xs


def make_plans(graph: CoreGraph, device: torch.device, conv_impl: str = "auto") -> list[CorePlan]:
    if conv_impl == "auto":
        # cuDNN may pick FFT / Winograd algorithms, which are not exact on integers:
        # on CUDA, convolutions are explicit im2col + GEMM (exact); oneDNN's direct
        # convolution on the CPU is exact and faster
        conv_impl = "gemm" if device.type == "cuda" else "native"
    if conv_impl not in ("native", "gemm"):
        raise SimError(f"conv_impl must be auto, native or gemm, got {conv_impl!r}")
    plans = []
    cl = True                      # the input spikes are kept channels-last
    for core in graph.cores:
        plans.append(CorePlan(core, device, input_channels_last=cl, conv_impl=conv_impl))
        cl = core.op == "conv"
    return plans


def conv2d_gemm(x: torch.Tensor, w: torch.Tensor, stride: tuple[int, int], padding: tuple[int, int]) -> torch.Tensor:
    """Cross-correlation as explicit im2col + one matrix product per slice of the batch
    (every partial sum is an integer below the exactness bound, whatever the GEMM's
    summation order or TF32 input rounding). x (B, C, H, W) in any layout; returns
    (B, O, H', W') channels-last."""
    b, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    (sy, sx), (py, px) = stride, padding
    ho, wo = (h + 2 * py - kh) // sy + 1, (wd + 2 * px - kw) // sx + 1
    xn = x.permute(0, 2, 3, 1)                                           # (B, H, W, C)
    if py or px:
        xn = F.pad(xn, (0, 0, px, px, py, py))
    wm = w.permute(0, 2, 3, 1).reshape(o, kh * kw * c).t()               # rows in (kh, kw, C) order
    out = torch.empty((b, ho, wo, o), dtype=x.dtype, device=x.device)
    per_image = ho * wo * kh * kw * c * x.element_size()
    step = max(1, GEMM_COLS_BUDGET // max(per_image, 1))
    for s in range(0, b, step):
        e = min(b, s + step)
        patches = xn[s:e].unfold(1, kh, sy).unfold(2, kw, sx)            # (b', H', W', C, kh, kw)
        cols = patches.permute(0, 1, 2, 4, 5, 3).reshape((e - s) * ho * wo, kh * kw * c)
        torch.mm(cols, wm, out=out[s:e].view((e - s) * ho * wo, o))
    return out.permute(0, 3, 1, 2)                                       # channels-last view
