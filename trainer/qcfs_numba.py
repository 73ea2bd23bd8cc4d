"""QCFS's activation (trainer.qcfs) as one compiled pass each way on the CPU.

The reference ``qcfs.qcfs`` is eight torch operations, each a pass over the layer's
activations, and autograd keeps their intermediates; under bf16 autocast every one of them
also rounds to bf16. Here one loop reads the input once and writes the output once, and the
backward reads the input and dL/d output once, rebuilding what it needs, and writes dL/dx and
lambda's gradient.

The numbers: fp32 input gives the reference's numbers, bit for bit (the same fp32 operations in
the same order; numba does not contract a*b+c into one rounding); dL/dx is the reference's
autograd chain, bit for bit; lambda's gradient is its sum, in another order (within rounding).
A bf16 input (the synapses' output under autocast) is widened exactly, the activation computed
in fp32 with the fp32 lambda the SNN takes as its threshold, and rounded once to bf16 (the
reference rounds after each operation, and rounds lambda to bf16 first): the numbers of the
fp32 reference on the widened input, cast to bf16, and so are dL/dx's.
"""
from __future__ import annotations

import numba
import numpy as np
import torch

from trainer import qcfs
from trainer.numba_rows import bits, load_row, store_row

BLOCK = 16384                # activations per block a thread takes


@numba.njit(parallel=True, cache=True, nogil=True)
def _forward_kernel(x, out, lam, levels, bf16):
    """out = lam * clip(floor(x * L / lam + 1/2) / L, 0, 1), x and out fp32 or both bf16 bits."""
    n = x.shape[0]
    f = np.float32
    lm, lv = f(lam), f(levels)
    for blk in numba.prange((n + BLOCK - 1) // BLOCK):
        a = blk * BLOCK
        e = min(n, a + BLOCK)
        v = np.empty(e - a, np.float32)
        load_row(x[a:e], v, bf16)
        for i in range(e - a):
            y = v[i] / lm
            y = f(0.0) if y < f(0.0) else (f(1.0) if y > f(1.0) else y)     # a NaN goes through, as clamp's
            v[i] = np.floor(y * lv + f(0.5)) / lv * lm
        store_row(v, out[a:e], bf16)


@numba.njit(fastmath=True, cache=True, nogil=True)
def _sum(v):
    """sum(v) in fp64, in whatever order vectorizes (a block's terms of lambda's gradient)."""
    acc = 0.0
    for i in range(v.shape[0]):
        acc += np.float64(v[i])
    return acc


@numba.njit(parallel=True, cache=True, nogil=True)
def _backward_kernel(x, grad, grad_x, partial, lam, levels, bf16):
    """grad_x = dL/dx (the reference's chain: ((g * lam) / L * L if 0 <= x / lam <= 1 else 0) / lam);
    partial[block] = that block's dL/dlam = sum(g * q - (gu * x) / (lam * lam)), q = out / lam."""
    n = x.shape[0]
    f = np.float32
    lm, lv = f(lam), f(levels)
    lam2 = lm * lm
    for blk in numba.prange((n + BLOCK - 1) // BLOCK):
        a = blk * BLOCK
        e = min(n, a + BLOCK)
        v = np.empty(e - a, np.float32)
        g = np.empty(e - a, np.float32)
        load_row(x[a:e], v, bf16)
        load_row(grad[a:e], g, bf16)
        for i in range(e - a):
            u = v[i] / lm
            y = f(0.0) if u < f(0.0) else (f(1.0) if u > f(1.0) else u)
            q = np.floor(y * lv + f(0.5)) / lv
            gu = (g[i] * lm) / lv * lv if (u >= f(0.0) and u <= f(1.0)) else f(0.0)
            g[i] = g[i] * q + (-gu * v[i]) / lam2
            v[i] = gu / lm
        store_row(v, grad_x[a:e], bf16)
        partial[blk] = _sum(g)


def _flat(x: torch.Tensor) -> torch.Tensor:
    """The 1-D view of a dense tensor's memory (any dim order, channels-last included)."""
    return x.as_strided((x.numel(),), (1,))


def _dense(x: torch.Tensor) -> bool:
    """Whether x's elements fill its memory without gaps or overlaps, in some dim order."""
    order = sorted(range(x.dim()), key=lambda d: -x.stride(d))
    expected = 1
    for d in reversed(order):
        if x.shape[d] != 1 and x.stride(d) != expected:
            return False
        expected *= x.shape[d]
    return True


class _QCFS(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, lam, levels):
        bf16 = x.dtype == torch.bfloat16
        out = torch.empty_like(x)
        _forward_kernel(bits(_flat(x)), bits(_flat(out)), float(lam), int(levels), bf16)
        ctx.save_for_backward(x, lam)
        ctx.levels = int(levels)
        return out

    @staticmethod
    def backward(ctx, grad):
        x, lam = ctx.saved_tensors
        if grad.dtype != x.dtype or grad.stride() != x.stride():
            grad = torch.empty_like(x).copy_(grad)
        grad_x = torch.empty_like(x)
        partial = np.zeros((x.numel() + BLOCK - 1) // BLOCK)
        _backward_kernel(bits(_flat(x)), bits(_flat(grad)), bits(_flat(grad_x)), partial, float(lam), ctx.levels,
                         x.dtype == torch.bfloat16)
        return grad_x, torch.tensor(partial.sum(), dtype=lam.dtype), None


def takes(x: torch.Tensor) -> bool:
    """Whether the kernels take ``x``: a dense fp32 or bf16 CPU tensor."""
    return x.device.type == "cpu" and x.dtype in (torch.float32, torch.bfloat16) and _dense(x)


def qcfs_numba(x: torch.Tensor, threshold: torch.Tensor, levels: int) -> torch.Tensor:
    """``qcfs.qcfs`` on the CPU in one pass each way (the module docstring); lambda's gradient
    scaled as the reference scales it."""
    if not takes(x):
        raise ValueError(f"the numba QCFS takes dense fp32 or bf16 CPU tensors, not {x.dtype} on {x.device}")
    threshold = qcfs.scale_grad(threshold, qcfs.threshold_grad_scale(x, levels))
    return _QCFS.apply(x, threshold.float(), levels)


def activation(x: torch.Tensor, threshold: torch.Tensor, levels: int) -> torch.Tensor:
    """The ANN's QCFS activation: the numba kernels where they take ``x``, the reference elsewhere (CUDA)."""
    return qcfs_numba(x, threshold, levels) if takes(x) else qcfs.qcfs(x, threshold, levels)
