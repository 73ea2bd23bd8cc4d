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

import numpy as np
import torch
import torch.nn.functional as F

from export import fixedpoint as fx
from export.graph import Core, CoreGraph, Shortcut
from hwsim.counters import SimError
from hwsim.path_choice import PathCosts
from hwsim.paths import DensePath, EventPath, Int8Path
from hwsim.tensors import CL, conv2d_gemm, hwc_columns

FLOAT32_EXACT = 2 ** 24          # integers of magnitude <= 2**24 are exact in float32
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
    """Everything about one core that does not depend on the samples: the exactness guard,
    the rewrites, the bias and threshold in the kernels' units, and its paths
    (``hwsim.paths``): ``dense`` always, ``events`` and ``int8`` where the CPU can run them,
    and, where it has both, what each has cost it so far (``costs``)."""

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
        self.dtype_np = np.float32 if self.dtype == torch.float32 else np.float64
        if core.op == "conv":
            (sy, sx), (py, px) = core.stride, core.padding
            self.stride, self.padding = (sy, sx), (py, px)
            if self.pool is not None:    # the folded pool: sum-pool the input, then the subsampled kernel
                fy, fx_ = self.pool
                w = w[:, :, ::fy, ::fx_]
                h, wd = self.in_shape[1:]
                if py % fy == 0 and px % fx_ == 0 and h % fy == 0 and wd % fx_ == 0:
                    self.padding = (py // fy, px // fx_)
                else:
                    self.pool_pad_explicit = True
                    self.padding = (0, 0)
                self.stride = (sy // fy, sx // fx_)
        elif len(self.in_shape) == 3:
            w4 = w.reshape(o, *self.in_shape)
            if self.pool is not None:
                w4 = w4[:, :, ::self.pool[0], ::self.pool[1]]
            self.weight_hwc = input_channels_last
            w = hwc_columns(w4) if input_channels_last else w4.reshape(o, -1)
        self.fan_out = _fan_out_orders(core.fan_out_per_input, device)
        cpu = device.type == "cpu"
        self.dense = DensePath(self, w)
        # event-driven blocks take int8 inputs: spikes, or sums of at most 127 after a folded pool
        self.events = (EventPath(self, w if core.op == "conv" else self.dense.weight.numpy())
                       if cpu and (self.pool is None or math.prod(self.pool) <= 127) else None)
        self.int8 = Int8Path.make(self) if cpu and self.dtype == torch.float32 else None
        # what each of the two CPU paths has cost this core on this machine (``hwsim.path_choice``)
        self.costs = PathCosts() if self.events is not None and self.int8 is not None else None

    def describe(self) -> dict:
        return {"name": self.name, "op": self.op, "dtype": str(self.dtype).replace("torch.", ""),
                "sum_abs_w_bound": self.bound, "pool_rewrite": list(self.pool) if self.pool else None,
                "conv_wrap": self.need_conv_wrap, "wrap": bool(self.need_wrap), "ann_macs": self.core.ann_macs,
                "shortcuts": [{"source": sc.source, "op": sc.op, "sum_abs_w_bound": sc.bound} for sc in self.shortcuts]}

    def sum_pool(self, x: torch.Tensor) -> torch.Tensor:
        """A conv core's folded q x q pool as an exact integer sum-pool of its input (no pool: x)."""
        if self.pool is None:
            return x
        if self.pool_pad_explicit:
            py, px = self.core.padding
            x = F.pad(x, (px, px, py, py))
        return F.avg_pool2d(x, self.pool, self.pool, divisor_override=1)

    def dense_input(self, x: torch.Tensor, pooled: bool = True) -> torch.Tensor:
        """A dense core's input (B, ...) as (B, in) in its weights' column order, the folded
        pool applied (``pooled``; the int8 path reads the unpooled input with the full weights)."""
        if pooled and self.pool is not None:
            x = F.avg_pool2d(x, self.pool, self.pool, divisor_override=1)
        if x.dim() == 4 and self.weight_hwc:
            return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)      # a view of a channels-last tensor
        return x.reshape(x.shape[0], -1)

    def shortcut_current(self, sources) -> torch.Tensor:
        """The sum of the shortcuts' currents (steps*B, *out_shape) from their sources' spikes."""
        total = None
        for sc, src in zip(self.shortcuts, sources, strict=True):
            a = sc.current(src)
            total = a if total is None else total.add_(a.view(total.shape))
        return total


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
