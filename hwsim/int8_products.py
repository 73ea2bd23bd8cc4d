"""Exact synaptic currents on the CPU's int8 matrix units (AMX, VNNI), through oneDNN.

A core's current over a block is ``W s``: binary spikes times integer weights. oneDNN's
quantized convolution and inner product -- the kernels behind torch's x86 int8 inference,
``torch.ops.onednn`` -- take u8 inputs and s8 weights, accumulate in int32 and can return
float32. With unit scales and zero points that float32 is the integer sum itself, exact
while ``|sum| < 2**24``: the bound every float32 core already meets (``CorePlan.dtype``).
On a CPU with AMX this is 10-50x the float32 rate, so on such a CPU the whole product
costs less than gathering even a few percent of events; without VNNI it costs more than
gathering the events of most firing rates (``hwsim.path_choice`` measures which wins).

Exactness conditions, checked here:

* inputs are 0/1 planes: CPUs without VNNI multiply u8 x s8 pairs into saturating int16
  (``vpmaddubsw``); with binary inputs a pair sums to at most 2 * 128, far from saturation.
  Signed inputs (the first core's Poisson spikes in {-1, 0, 1}) are two binary planes,
  ``W s = W [s > 0] - W [s < 0]``;
* weights are int8 after factoring out a power of two, ``W = 2**k W8`` (Lava's dense
  weights are multiples of 2 in [-256, 254]); the result is scaled back by ``2**k``, exact;
* a folded average pool is computed as the core defines it, the full kernel with the
  core's stride and padding on the unpooled spikes (no sum-pool: its counts are not 0/1);
* the ops exist in this torch and agree with a float64 product on a small case
  (``available``, once per process); otherwise hwsim keeps its other paths.
"""
from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

CL = torch.channels_last


@functools.lru_cache(maxsize=1)
def available() -> bool:
    """Whether torch has oneDNN's int8 ops here and they are exact on a small conv and product."""
    try:
        rng = np.random.default_rng(0)
        w = rng.integers(-128, 128, size=(16, 8, 3, 3))
        x = torch.from_numpy(rng.random((2, 8, 6, 6)) < 0.5).to(torch.uint8).contiguous(memory_format=CL)
        conv = _Conv(w, (1, 1), (1, 1))
        ref = F.conv2d(x.double(), torch.from_numpy(w).double(), padding=1)
        wd = rng.integers(-128, 128, size=(5, 8 * 6 * 6))
        dense = _Linear(wd)
        xf = x.reshape(2, -1)
        return bool(torch.equal(conv(x).double(), ref)
                    and torch.equal(dense(xf).double(), xf.double() @ torch.from_numpy(wd).double().T))
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


def int8_shift(weights: np.ndarray) -> int | None:
    """The smallest k with ``weights = 2**k * w8``, w8 in int8's range; None when there is none."""
    w = np.asarray(weights)
    if w.size == 0:
        return 0
    if w.dtype.kind not in "iu":
        w = w.astype(np.int64)
    lo, hi = int(w.min()), int(w.max())
    k = 0                                    # the smallest shift that brings the range into int8's
    while (lo >> k) < -128 or (hi >> k) > 127:
        k += 1
    # every weight a multiple of 2**k: the OR of all of them has k trailing zero bits (one pass)
    return k if k == 0 or int(np.bitwise_or.reduce(w, axis=None)) & ((1 << k) - 1) == 0 else None


class _Conv:
    """One prepacked oneDNN u8 x s8 convolution: x (B, C, H, W) uint8 0/1 -> float32 sums, channels-last."""

    def __init__(self, w8: np.ndarray, stride, padding):
        o = int(w8.shape[0])
        self.stride, self.padding = [int(s) for s in stride], [int(p) for p in padding]
        self.scales, self.zeros = torch.ones(o), torch.zeros(o, dtype=torch.int64)
        w = torch.from_numpy(np.asarray(w8, dtype=np.int8))
        self.packed = torch.ops.onednn.qconv_prepack(w, self.scales, 1.0, 0, self.stride, self.padding, [1, 1], 1, None)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.onednn.qconv2d_pointwise(x.contiguous(memory_format=CL), 1.0, 0, self.packed, self.scales,
                                                  self.zeros, None, self.stride, self.padding, [1, 1], 1, 1.0, 0,
                                                  torch.float32, "none", [], "")


class _Linear:
    """One prepacked oneDNN u8 x s8 inner product: x (B, M) uint8 0/1 -> float32 sums (B, O)."""

    def __init__(self, w8: np.ndarray):
        o = int(w8.shape[0])
        self.scales, self.zeros = torch.ones(o), torch.zeros(o, dtype=torch.int64)
        self.packed = torch.ops.onednn.qlinear_prepack(torch.from_numpy(np.ascontiguousarray(w8, dtype=np.int8)),
                                                       None)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.onednn.qlinear_pointwise(x.contiguous(), 1.0, 0, self.packed, self.scales, self.zeros,
                                                  None, 1.0, 0, torch.float32, "none", [], "")


class Int8Product:
    """A core's synaptic current ``W s`` (before its weight-exp shift) on oneDNN's int8 units.

    conv: ``weights`` (O, C, KH, KW) with the core's stride and padding; dense: ``weights``
    (O, M) whose columns are in the order of the flattened input it will be given (the
    caller permutes them for channels-last inputs). Call ``make`` to get one only where it
    is exact."""

    def __init__(self, op: str, weights: np.ndarray, shift: int, stride=(1, 1), padding=(0, 0)):
        self.op, self.shift = op, shift
        w8 = np.asarray(weights, dtype=np.int64) >> shift
        self.impl = _Conv(w8, stride, padding) if op == "conv" else _Linear(w8)

    @classmethod
    def make(cls, op: str, weights: np.ndarray, stride=(1, 1), padding=(0, 0)) -> "Int8Product | None":
        shift = int8_shift(weights)
        if op not in ("conv", "dense") or shift is None or not available():
            return None
        return cls(op, weights, shift, stride, padding)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x: spikes in {-1, 0, 1}, (B, C, H, W) for a conv, (B, M) for a dense core: a spike
        buffer (int8, uint8 or bool) or floats. Returns float32 W x (conv: channels-last)."""
        pos = neg = None
        if x.dtype in (torch.int8, torch.uint8, torch.bool):
            u = x.view(torch.uint8)
            if int(torch.amax(u)) <= 1:              # 0/1 already (a -1 reads as 255): no copy
                pos = u
        elif float(torch.amin(x)) >= 0:
            pos = x.to(torch.uint8)
        if pos is None:                              # signed: two binary planes
            pos, neg = (x > 0).to(torch.uint8), (x < 0).to(torch.uint8)
        a = self.impl(pos)
        if neg is not None:
            a.sub_(self.impl(neg))
        if self.shift:
            a.mul_(float(2 ** self.shift))
        return a
