"""Fast integer LIF core: runs a CoreGraph on many samples at once, bit-exact to
``export.fixedpoint.run_reference``.

Why it is fast (and still exact)
--------------------------------
* The graph is a feed-forward chain and the reference is layer-synchronous, so the
  synaptic input of a layer for a whole *block* of time steps is one batched
  conv / matmul over ``steps x samples`` once the previous layer's spikes of those
  steps are known; only the neuron recurrence then runs step by step, as a handful
  of in-place elementwise ops on (samples, neurons).
* All arithmetic is float32 on integer values. That is exact, not approximate:
  - inputs are spikes in {-1, 0, 1} (or sums of a few spikes, see the pool rewrite)
    and weights are integers; every partial sum of a synaptic current is bounded by
    the sum of |w| over the neuron's fan-in, and while that bound is < 2**24 every
    partial sum is an exactly representable float32 integer, whatever the order of
    summation. A core whose bound reaches 2**24 is computed in float64 instead
    (exact to 2**53) -- see ``CorePlan.dtype``.
  - Conv sums wrap modulo 2**24 (``fixedpoint.wrap_signed``), the current ``a << 6``
    wraps once (``wrap24``): both are exact float add/subtracts of 2**24 on exact values.
  - the neuron update ``clip(decay(v) - vth*o + u)`` adds exactly representable
    operands; IEEE addition is correctly rounded, so the result is exact whenever
    the true result is representable, and otherwise it lies beyond 2**24, where the
    clip to +-(2**23 - 1) gives the same answer (rounding is monotone).
  - ``decay`` (rounding toward zero) is done as ``q*m + trunc(r*m/4096)`` with
    ``v = 4096*q + r``: every intermediate stays below 2**24.
* Folded average pools (SPEC 3): a 2x2 pool folded into the next layer gives a
  kernel that is constant over 2x2 blocks; such a layer is computed as an exact
  integer sum-pool of the input spikes followed by the small kernel (4x fewer
  multiply-adds). Detected from the weights, so it is exact for any graph.
* Event-driven: work follows the spikes. On the CPU a block whose input has silent
  channels (conv) / silent neurons (dense) is computed on the active ones only
  (``sparse``), a layer without input spikes is skipped, and every event is counted:
  spikes, synaptic events (input spikes x fan-out), neuron updates and active neuron
  updates (non-zero synaptic input).
* On the CPU, when ``|v|`` provably cannot reach the 24-bit clip within a block (from
  the block's largest current), the per-step clip is skipped.
* CUDA: the same code, except that convolutions are explicit im2col + GEMM
  (``conv2d_gemm``: cuDNN may pick FFT or Winograd algorithms, which are not exact on
  integers). Matmuls may use TF32: every operand -- <= 8-bit weights, even dense weights
  in [-256, 255], spike counts <= 2**11 -- is exact in TF32's 11-bit significand, and
  accumulation is float32. bf16 *inputs* would be exact as well, but torch stores bf16
  matmul/conv outputs in bf16, which rounds the sums, so bf16 is not used
  (``tests/test_hwsim_exact.py`` proves both points on the CPU).

Public API: ``simulate(graph, spikes | (images, seed), ...)`` -> ``SimResult`` (per-core
``LayerCounts``); ``pool_rewrite`` / ``core_macs`` (per-layer MACs of the ANN a core came from).
"""
from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from export import fixedpoint as fx
from export.graph import Core, CoreGraph

CL = torch.channels_last
FLOAT32_EXACT = 2 ** 24          # integers of magnitude <= 2**24 are exact in float32
SPARSE_FRACTION = 0.5            # compact a block's input when at most this fraction of it is active
_V_MAX = float(fx.V_MAX)
_HALF = float(2 ** (fx.STATE_BITS - 1))
_FULL = float(2 ** fx.STATE_BITS)


class SimError(ValueError):
    """Inputs that do not fit the graph, or a device that is not there."""


# --------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------
@dataclass
class LayerCounts:
    """Event counts of one core over all samples and steps.

    ``synaptic_events`` are the events *arriving* at this core: the previous layer's
    (for the first core: the input's) spikes times their fan-out into this core.
    ``spikes`` are the spikes this core's neurons emit (0 for the output core).
    """
    name: str
    op: str
    neurons: int
    spiking: bool
    vth: int
    float_threshold: float
    spikes: int
    synaptic_events: int
    neuron_updates: int
    active_neuron_updates: int
    max_abs_input: int
    spikes_per_sample: np.ndarray           # (samples,) int64

    @property
    def avg_spikes_per_neuron(self) -> float:
        """The paper's Fig. 3: spikes of the layer over T steps / neurons, averaged over samples."""
        n = len(self.spikes_per_sample)
        return float(self.spikes) / (self.neurons * n) if n and self.neurons else 0.0


@dataclass
class SimResult:
    timesteps: int
    samples: int
    layers: list[LayerCounts]
    input_neurons: int
    input_spikes: int                       # non-zero input spikes (signed ones count once)
    input_spikes_per_sample: np.ndarray
    output: np.ndarray                      # (samples, classes) int64: output voltage after T steps
    spike_trains: list[np.ndarray] | None = None   # per spiking core (T, samples, *shape) uint8
    device: str = "cpu"
    seconds: float = 0.0
    plan: list[dict] = field(default_factory=list)

    @property
    def predictions(self) -> np.ndarray:
        """argmax of the output voltage (ties: the lowest class index)."""
        return np.argmax(self.output, axis=1) if self.output.size else np.zeros(0, dtype=np.int64)

    def accuracy(self, labels) -> float:
        labels = np.asarray(labels).reshape(-1)
        if len(labels) != self.samples:
            raise SimError(f"{len(labels)} labels for {self.samples} samples")
        return float(np.mean(self.predictions == labels)) if self.samples else 0.0

    @property
    def spikes(self) -> int:
        """All spikes of the network's neurons (input spikes excluded: they are the same
        for every network fed the same inputs)."""
        return int(sum(l.spikes for l in self.layers))

    @property
    def synaptic_events(self) -> int:
        return int(sum(l.synaptic_events for l in self.layers))

    @property
    def image_steps(self) -> int:
        return self.samples * self.timesteps


# --------------------------------------------------------------------------------------
# per-core plan
# --------------------------------------------------------------------------------------
def _block_factor(w4: np.ndarray, dims: tuple[int, int], fy: int, fx_: int) -> bool:
    """Is ``w4`` (O, C, H, W) constant over aligned fy x fx blocks of its last two axes?"""
    h, w = dims
    if fy < 1 or fx_ < 1 or (fy == 1 and fx_ == 1) or h % fy or w % fx_:
        return False
    for part in (w4[:2], w4):                  # a cheap look at two rows first, then all of it
        o, c = part.shape[:2]
        blocks = part.reshape(o, c, h // fy, fy, w // fx_, fx_)
        if not np.array_equal(blocks, np.broadcast_to(blocks[:, :, :, :1, :, :1], blocks.shape)):
            return False
    return True


def pool_rewrite(core: Core) -> tuple[int, int] | None:
    """The (fy, fx) of a folded average pool that ``core``'s weights are constant over
    (conv: blocks of stride size; dense on a (C, H, W) input: the largest square block), else None."""
    w = core.weights
    if core.op == "conv":
        (sy, sx), (kh, kw) = core.stride, w.shape[2:]
        return (sy, sx) if (sy > 1 or sx > 1) and _block_factor(w, (kh, kw), sy, sx) else None
    if len(core.input_shape) != 3:
        return None
    c, h, wd = core.input_shape
    w4 = w.reshape(w.shape[0], c, h, wd)
    best, tried, ok = None, set(), set()
    for f in range(2, min(h, wd) + 1):
        if any(f % g == 0 and g not in ok for g in range(2, f) if g in tried):
            continue                               # constant over f-blocks implies over its divisors' blocks
        tried.add(f)
        if _block_factor(w4, (h, wd), f, f):
            ok.add(f)
            best = f
    return (best, best) if best else None


def core_macs(core: Core, pool: tuple[int, int] | None | str = "detect") -> int:
    """Multiply-accumulates per step of the layer this core implements; a folded pool is
    counted at the unfolded size (the ANN's conv/linear after its pool)."""
    if pool == "detect":
        pool = pool_rewrite(core)
    fy, fx_ = pool or (1, 1)
    if core.op == "dense":
        return int(core.weights.shape[0]) * int(core.weights.shape[1]) // (fy * fx_)
    o, c, kh, kw = core.weights.shape
    return math.prod(core.output_shape) * c * (kh // fy) * (kw // fx_)


def tf32_round(x: np.ndarray) -> np.ndarray:
    """Round float32 values to TF32 (10 explicit mantissa bits, round to nearest even)."""
    b = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    drop = 13
    half = 1 << (drop - 1)
    lsb = (b >> drop) & 1
    b = ((b + half - 1 + lsb) >> drop) << drop
    return b.astype(np.uint32).view(np.float32)


def bf16_round(x: np.ndarray) -> np.ndarray:
    """Round float32 values to bfloat16 (7 explicit mantissa bits, RNE), back as float32."""
    return torch.from_numpy(np.asarray(x, dtype=np.float32)).to(torch.bfloat16).float().numpy()


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
        self.bound = int(np.abs(w.reshape(o, -1)).sum(axis=1, dtype=np.int64).max(initial=0))
        self.dtype = torch.float32 if self.bound < FLOAT32_EXACT else torch.float64
        self.exp = core.weight_exp if core.op == "dense" else 0
        a_bound = self.bound * 2 ** max(self.exp, 0)
        # Lava's Conv wraps its sums modulo 2**24 (fixedpoint.wrap_signed): only possible at |sum| >= 2**23
        self.need_conv_wrap = core.op == "conv" and self.bound >= 2 ** (fx.CONV_OUT_BITS - 1)
        if self.need_conv_wrap:
            a_bound = min(a_bound, 2 ** (fx.CONV_OUT_BITS - 1))
        self.need_wrap = a_bound * 2 ** fx.ACT_SHIFT >= _HALF
        self.vth64 = float(core.vth << fx.VTH_SHIFT)
        self.dv = core.dv
        self.m = fx.DECAY_UNITY - core.dv
        self.pool = pool_rewrite(core)
        self.pool_pad_explicit = False
        self.input_channels_last = input_channels_last
        self.weight_hwc = False          # dense: columns in (H, W, C) order, for channels-last inputs
        dt = self.dtype
        if core.op == "conv":
            kh, kw = w.shape[2:]
            (sy, sx), (py, px) = core.stride, core.padding
            self.stride, self.padding = (sy, sx), (py, px)
            if self.pool is not None:
                w = w[:, :, ::sy, ::sx]
                h, wd = self.in_shape[1:]
                if py % sy == 0 and px % sx == 0 and h % sy == 0 and wd % sx == 0:
                    self.padding = (py // sy, px // sx)
                else:
                    self.pool_pad_explicit = True
                    self.padding = (0, 0)
                self.stride = (1, 1)
            self.weight = torch.from_numpy(w).to(device=device, dtype=dt).contiguous(memory_format=CL)
        else:
            if len(self.in_shape) == 3:
                c, h, wd = self.in_shape
                w4 = w.reshape(o, c, h, wd)
                if self.pool is not None:
                    w4 = w4[:, :, ::self.pool[0], ::self.pool[1]]
                if input_channels_last:
                    w = w4.transpose(0, 2, 3, 1).reshape(o, -1)
                    self.weight_hwc = True
                else:
                    w = w4.reshape(o, -1)
            self.weight = torch.from_numpy(np.ascontiguousarray(w.T)).to(device=device, dtype=dt)  # (in, out)
        fan = core.fan_out_per_input.astype(np.float64)
        self.fan_out = {False: torch.from_numpy(fan.reshape(-1)).to(device)}     # flat, (C, H, W) order
        if fan.ndim == 3:                                                          # flat, (H, W, C) order
            self.fan_out[True] = torch.from_numpy(np.ascontiguousarray(fan.transpose(1, 2, 0)).reshape(-1)).to(device)
        self.macs_per_step = core_macs(core, self.pool)

    def describe(self) -> dict:
        return {"name": self.name, "op": self.op, "dtype": str(self.dtype).replace("torch.", ""),
                "sum_abs_w_bound": self.bound, "pool_rewrite": list(self.pool) if self.pool else None,
                "conv_wrap": self.need_conv_wrap, "wrap": bool(self.need_wrap), "macs_per_step": self.macs_per_step}

    # ---- synaptic current of a block of image-steps ------------------------------
    def synaptic(self, x: torch.Tensor, active: torch.Tensor | None) -> torch.Tensor | None:
        """x (B, *in_shape) spikes (float); ``active``: which inputs spiked in this block --
        per channel (conv) or per input neuron in x's storage order (dense) -- or None for
        "compute densely". Returns A (B, *out_shape) in self.dtype (conv: channels-last),
        or None when no input spiked."""
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
            if self.pool is not None:
                if self.pool_pad_explicit:
                    py, px = self.core.padding
                    x = F.pad(x, (px, px, py, py))
                x = F.avg_pool2d(x, self.pool, self.pool, divisor_override=1)    # exact integer sum-pool
            if self.conv_impl == "gemm":
                return conv2d_gemm(x, w, self.stride, self.padding)
            a = F.conv2d(x, w, stride=self.stride, padding=self.padding)
            return a if a.is_contiguous(memory_format=CL) else a.contiguous(memory_format=CL)
        wt = self.weight
        if self.pool is not None:
            x = F.avg_pool2d(x, self.pool, self.pool, divisor_override=1)
        if x.dim() == 4 and self.weight_hwc:
            xf = x.permute(0, 2, 3, 1).reshape(b, -1)       # a view of a channels-last tensor
        else:
            if x.dim() == 4 and not x.is_contiguous():
                active = None                                 # x's storage order is not the weights' order
            xf = x.reshape(b, -1)
        if active is not None and self.pool is None:
            idx = torch.nonzero(active).flatten()
            if idx.numel() == 0:
                return None
            if idx.numel() <= SPARSE_FRACTION * xf.shape[1]:            # the active input neurons only
                xf = xf.index_select(1, idx)
                wt = wt.index_select(0, idx)
        return (xf @ wt).view(b, *self.out_shape)


# --------------------------------------------------------------------------------------
# the neuron recurrence
# --------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------
# simulate
# --------------------------------------------------------------------------------------
def resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SimError("device 'cuda' requested but torch sees no CUDA GPU")
    if dev.type not in ("cpu", "cuda"):
        raise SimError(f"unsupported device {device!r} (cpu, cuda or auto)")
    return dev


@contextmanager
def _tf32(device: torch.device, enable: bool):
    """TF32 matmuls on CUDA (exact here: see the module docstring), restored afterwards."""
    if device.type != "cuda":
        yield
        return
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = enable
    torch.backends.cudnn.allow_tf32 = enable
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


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


GEMM_COLS_BUDGET = 1 << 30        # bytes of im2col columns per GEMM


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


def _default_sizes(graph: CoreGraph, device: torch.device, n: int, steps: int,
                   chunk: int | None, block: int | None) -> tuple[int, int]:
    """Samples per chunk and steps per block. One block's buffer of the widest layer is
    kept near ``buffer`` bytes: on the CPU, buffers beyond glibc's mmap threshold (32 MiB)
    are fresh pages on every allocation, and page faults cost more than small GEMMs lose."""
    widest = max([math.prod(graph.input.shape)] + [math.prod(c.output_shape) for c in graph.cores])
    if device.type == "cuda":
        buffer, most = 1 << 30, 1 << 16
        chunk = chunk or 512
    else:
        buffer, most = 16 << 20, 4096
        chunk = chunk or 8
    chunk = max(1, min(chunk, n)) if n else 1
    if block is None:
        image_steps = max(16, min(most, buffer // (4 * widest)))
        block = max(1, image_steps // chunk)
    return chunk, max(1, min(block, steps))


def simulate(graph: CoreGraph, inputs, *, timesteps: int | None = None, device: str | torch.device = "cpu",
             chunk: int | None = None, steps_per_block: int | None = None, record_spikes: bool = False,
             sparse: bool | str = "auto", progress: Callable[[int], None] | None = None,
             tf32: bool = True, encode_workers: int | None = None,
             recurrence_threads: int | None = 1, conv_impl: str = "auto",
             threads: int | None = None, plans: list[CorePlan] | None = None,
             host_checks: bool | None = None) -> SimResult:
    """Run ``graph`` on many samples; bit-exact to ``export.fixedpoint.run_reference``.

    ``inputs``: spike trains (T, N, C, H, W) in {-1, 0, 1} (numpy or torch), or a tuple
    ``(images, seed)`` of uint8 images (N, C, H, W), encoded chunk by chunk with
    ``graph.input.encode`` for ``timesteps`` steps (default ``graph.timesteps``).
    ``chunk``: samples per chunk; ``steps_per_block``: time steps per batched synaptic
    computation (defaults follow the device and a memory budget). ``sparse``: compute a
    block's synaptic input on its active input channels/neurons only ("auto": on CPU).
    ``progress(k)`` is called after each chunk with the number of samples it held.
    ``recurrence_threads``: CPU threads for the step-by-step neuron updates (None: torch's).
    ``conv_impl``: "native" (torch's conv: oneDNN's direct convolution on the CPU), "gemm"
    (im2col + matmul), "auto" (gemm on CUDA, where cuDNN may choose FFT/Winograd algorithms
    that are not exact: "native" is not guaranteed exact there).
    ``threads``: torch CPU threads while simulating (None: leave torch's setting).
    ``plans``: ``make_plans(graph, device)`` built beforehand (weights on the device, pool
    rewrites), to reuse across calls on an unchanged graph; built here when None.
    ``host_checks``: data-dependent shortcuts that need a device sync (skip a block's
    wrap24 / clip when its currents cannot need them, skip silent inputs); None: on the CPU.
    """
    dev = resolve_device(device)
    if host_checks is None:
        host_checks = dev.type == "cpu"
    if sparse == "auto":
        sparse = host_checks
    images = seed = spikes_in = None
    if isinstance(inputs, tuple):
        images, seed = inputs
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4:
            raise SimError(f"images must be uint8 (N, C, H, W), got {images.dtype} {images.shape}")
        if tuple(images.shape[1:]) != graph.input.shape:
            raise SimError(f"images of shape {tuple(images.shape[1:])} do not fit the graph input "
                           f"{graph.input.shape}")
        steps = int(timesteps or graph.timesteps)
        n = len(images)
        seed = int(seed)
    else:
        spikes_in = inputs
        if spikes_in.ndim != 5 or tuple(spikes_in.shape[2:]) != graph.input.shape:
            raise SimError(f"input spikes must be (T, N, *{graph.input.shape}), got {tuple(spikes_in.shape)}")
        steps, n = int(spikes_in.shape[0]), int(spikes_in.shape[1])
        if timesteps is not None and int(timesteps) != steps:
            raise SimError(f"timesteps={timesteps} but the input spikes have {steps} steps")
    if steps < 1:
        raise SimError("need at least one time step")
    t_start = time.perf_counter()
    if plans is None:
        plans = make_plans(graph, dev, conv_impl)
    elif len(plans) != len(graph.cores) or any(p.core is not c or p.device != dev
                                                for p, c in zip(plans, graph.cores)):
        raise SimError("plans were made for another graph or device")
    if dev.type == "cuda" and tf32:
        # TF32 keeps 11 significant bits: exact for <= 8-bit weights (all the graph format allows)
        # and spike counts; checked anyway, the check is cheap
        tf32 = all(np.array_equal(tf32_round(c.weights.astype(np.float32)), c.weights) for c in graph.cores)
    chunk, block = _default_sizes(graph, dev, n, steps, chunk, steps_per_block)
    ncores = len(plans)
    in_neurons = math.prod(graph.input.shape)

    spikes_ps = np.zeros((ncores, n), dtype=np.int64)
    syn_tot = np.zeros(ncores, dtype=np.int64)
    active_tot = np.zeros(ncores, dtype=np.int64)
    max_abs = np.zeros(ncores, dtype=np.int64)
    in_spikes_ps = np.zeros(n, dtype=np.int64)
    output = np.zeros((n, plans[-1].neurons), dtype=np.int64)
    trains = ([np.zeros((steps, n, *p.out_shape), dtype=np.uint8) for p in plans if p.spiking]
              if record_spikes else None)

    chunks = [(a, min(a + chunk, n)) for a in range(0, n, chunk)]
    pool = None
    futures: dict[int, object] = {}
    if images is not None:
        workers = encode_workers or (min(8, max(1, (torch.get_num_threads() if dev.type == "cpu" else 8))))
        pool = ThreadPoolExecutor(max_workers=max(1, workers))

        def submit(k):
            a, b = chunks[k]
            step = max(1, (b - a + workers - 1) // workers)
            futures[k] = [pool.submit(graph.input.encode, images[s:min(s + step, b)], steps, seed, s)
                          for s in range(a, b, step)]

        def fetch(k):
            parts = [f.result() for f in futures.pop(k)]
            return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
        for k in range(min(2, len(chunks))):
            submit(k)
    try:
        with _tf32(dev, tf32), _threads(torch.device("cpu"), threads), torch.inference_mode():
            for k, (a, b) in enumerate(chunks):
                if images is not None:
                    x_chunk = fetch(k)
                    if k + 2 < len(chunks):
                        submit(k + 2)
                else:
                    x_chunk = spikes_in[:, a:b]
                res = _run_chunk(plans, x_chunk, steps, block, dev, sparse, record_spikes, recurrence_threads,
                                 host_checks)
                spikes_ps[:, a:b] = res["spikes"]
                syn_tot += res["syn"]
                active_tot += res["active"]
                max_abs = np.maximum(max_abs, res["max_abs"])
                in_spikes_ps[a:b] = res["in_spikes"]
                output[a:b] = res["output"]
                if record_spikes:
                    for tr, rec in zip(trains, res["trains"]):
                        tr[:, a:b] = rec
                if progress is not None:
                    progress(b - a)
    finally:
        if pool is not None:
            for fs in futures.values():
                for f in fs:
                    f.cancel()
            pool.shutdown(wait=True)
    layers = []
    for i, p in enumerate(plans):
        c = p.core
        layers.append(LayerCounts(
            name=c.name, op=c.op, neurons=p.neurons, spiking=c.spiking, vth=c.vth,
            float_threshold=float(c.float_threshold), spikes=int(spikes_ps[i].sum()),
            synaptic_events=int(syn_tot[i]), neuron_updates=p.neurons * steps * n,
            active_neuron_updates=int(active_tot[i]), max_abs_input=int(max_abs[i]),
            spikes_per_sample=spikes_ps[i].copy()))
    return SimResult(timesteps=steps, samples=n, layers=layers, input_neurons=in_neurons,
                     input_spikes=int(in_spikes_ps.sum()), input_spikes_per_sample=in_spikes_ps,
                     output=output, spike_trains=trains, device=str(dev),
                     seconds=time.perf_counter() - t_start,
                     plan=[p.describe() | {"device": str(dev), "chunk": chunk, "steps_per_block": block}
                           for p in plans])


def _to_input(x: np.ndarray | torch.Tensor, dev: torch.device) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
    tb, nb = t.shape[:2]
    t = t.to(dev, non_blocking=True).reshape(tb * nb, *t.shape[2:]).to(torch.float32)
    return t.contiguous(memory_format=CL)


@contextmanager
def _threads(dev: torch.device, k: int | None):
    """Run the step-by-step elementwise recurrence on ``k`` CPU threads: its ops are small,
    and on a busy machine a thread barrier per op costs more than the op."""
    if dev.type != "cpu" or not k or k == torch.get_num_threads():
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(k)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _flat(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """(B, ...) -> a (B, M) view in storage order, and whether that order is (H, W, C)."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=CL):
        return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1), True
    return x.reshape(x.shape[0], -1), False


def _run_chunk(plans: Sequence[CorePlan], x_chunk, steps: int, block: int, dev: torch.device,
               sparse: bool, record: bool, rec_threads: int | None = 1, host_checks: bool = True) -> dict:
    """All steps of one chunk of samples, in blocks of ``block`` steps: per block and core,
    one batched synaptic computation, then the step-by-step neuron recurrence on flat
    (samples, neurons) views in storage order."""
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
    trains = [[] for p in plans if p.spiking] if record else None
    for t0 in range(0, steps, block):
        tb = min(block, steps - t0)
        x = _to_input(x_chunk[t0:t0 + tb], dev)                       # (tb*n, C, H, W) channels-last
        xf, hwc = _flat(x)
        s_sum = xf.abs().view(tb, n, -1).sum(0)                       # (n, M): |spikes| per sample and input
        in_acc += s_sum.sum(1, dtype=f64)
        k = 0
        for i, p in enumerate(plans):
            s_tot = s_sum.sum(0)                                      # (M,): the block's spikes per input
            syn_acc[i] += (s_tot.to(f64) * p.fan_out[hwc and len(p.in_shape) == 3]).sum()
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
            af, out_hwc[i] = _flat(a)
            if v[i] is None:
                v[i] = torch.zeros((n, af.shape[1]), dtype=p.dtype, device=dev)
                prev[i] = torch.zeros_like(v[i])
            _prepare_current(p, af)
            active_acc[i] += torch.count_nonzero(af)
            lo, hi = torch.aminmax(af)
            amax = torch.maximum(hi, -lo).to(f64)
            maxabs_acc[i] = torch.maximum(maxabs_acc[i], amax)
            scale = float(2 ** fx.ACT_SHIFT)
            wrap, clamp = p.need_wrap, True
            if host_checks:
                a64 = float(amax) * 2 ** fx.ACT_SHIFT
                wrap = wrap and a64 >= _HALF          # this block's currents cannot wrap: skip wrap24
                if not wrap:                          # |v| cannot reach the clip in this block: skip it
                    vlo, vhi = torch.aminmax(v[i])
                    clamp = max(float(vhi), -float(vlo)) + tb * (a64 + p.vth64) > _V_MAX
            if wrap:
                _wrap_(af)
                scale = 1.0
            out = torch.empty_like(a) if p.spiking else None
            of = _flat(out)[0] if p.spiking else None
            vi, pv = v[i], prev[i]
            tmp = torch.empty_like(vi) if p.dv else None
            with _threads(dev, rec_threads):
                for t in range(tb):
                    if p.dv:
                        _decay_(vi, p.m, tmp)
                    if p.spiking:
                        vi.sub_(pv, alpha=p.vth64)
                    vi.add_(af[t * n:(t + 1) * n], alpha=scale)
                    if clamp:
                        vi.clamp_(-_V_MAX, _V_MAX)
                    if p.spiking:
                        pv = torch.gt(vi, p.vth64, out=of[t * n:(t + 1) * n])
            del a, af
            if p.spiking:
                prev[i].copy_(pv)
                s_sum = of.view(tb, n, -1).sum(0)
                spikes_acc[i] += s_sum.sum(1, dtype=f64)
                if record:
                    trains[k].append(out.view(tb, n, *p.out_shape).to(torch.uint8).contiguous().cpu().numpy())
                    k += 1
                x, hwc = out, out_hwc[i]
    p = plans[-1]
    out_v = v[-1]
    if out_hwc[-1]:                                                    # back to (C, H, W) order
        c, h, w = p.out_shape
        out_v = out_v.view(n, h, w, c).permute(0, 3, 1, 2)
    out_v = out_v.reshape(n, -1)
    return {"spikes": torch.stack(spikes_acc).round().to(torch.int64).cpu().numpy(),
            "syn": torch.stack(syn_acc).round().to(torch.int64).cpu().numpy(),
            "active": torch.stack(active_acc).cpu().numpy(),
            "max_abs": torch.stack(maxabs_acc).round().to(torch.int64).cpu().numpy(),
            "in_spikes": in_acc.round().to(torch.int64).cpu().numpy(),
            "output": out_v.round().to(torch.int64).cpu().numpy(),
            "trains": [np.concatenate(t, axis=0) for t in trains] if record else None}
