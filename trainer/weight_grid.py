"""The export's weight grid, for a network that trains on it (quantization-aware fine-tuning).

Export (``export.quantize``) stores each weighted layer's weights as signed ``bits``-bit
mantissas at one scale per layer: the scale that maps the largest weight to ``2^(bits-1) - 1``
(or the most negative to ``-2^(bits-1)``) without clipping, weights rounded to nearest. An
average pool folded into a layer divides all its weights alike, so the grid relative to
the layer's own weights is the same before and after the fold. A network whose forward
pass uses ``on_grid`` weights computes, in float, with the very weights the core holds;
the straight-through estimator passes the gradient to the float weights unchanged.

Fine-tuning snaps every weight at every forward pass: VGG9's 32.1 M weights at each step.
``snapped_reference`` is the grid as torch operations (fp64 products, rounded half to even,
divided back, cast to the weights' dtype): a chain of passes over 8-byte copies. On the CPU
``_snap_kernel`` computes the same fp64 arithmetic per weight in one compiled pass that reads
the weights once and writes the snapped ones once: the same numbers, bit for bit (IEEE
products and quotients are correctly rounded in both; ``np.rint`` and ``torch.round`` both
round half to even).
"""
from __future__ import annotations

import numba
import numpy as np
import torch

from trainer.layers import ArchError, ResBlock
from trainer.memory_order import memory_order, rows
from trainer.models import ArchConfig

MIN_BITS, MAX_BITS = 2, 8


def check_grid_fits(cfg: ArchConfig) -> None:
    """Refuse an architecture the grid does not cover: a residual block's shortcut is
    quantized in its population's units (``export.quantize``), not on its own grid."""
    if any(isinstance(spec, ResBlock) for spec in cfg.layers):
        raise ArchError(f"--weight-bits: {cfg.name} has residual blocks, whose shortcuts export quantizes in "
                        "their population's units; training on the weight grid covers conv and linear chains")


def mantissa_scale(w_max: float, w_min: float, bits: int) -> float:
    """Largest scale that maps weights in [w_min, w_max] into [-2^(bits-1), 2^(bits-1) - 1]
    without clipping (1.0 for all-zero weights)."""
    hi, lo = 2 ** (bits - 1) - 1, 2 ** (bits - 1)
    candidates = [hi / w_max] if w_max > 0 else []
    candidates += [lo / -w_min] if w_min < 0 else []
    return min(candidates) if candidates else 1.0


def grid_scale(w: torch.Tensor, bits: int) -> float:
    """The scale of ``w``'s ``bits``-bit grid (``mantissa_scale`` of its extremes)."""
    lo, hi = torch.aminmax(w.detach())
    return mantissa_scale(float(hi), float(lo), bits)


def snapped_reference(w: torch.Tensor, scale: float) -> torch.Tensor:
    """round(w * scale) / scale in fp64, in ``w``'s dtype: the grid as torch computes it."""
    return torch.round(w.double() * scale).div_(scale).to(w.dtype)


@numba.njit(parallel=True, cache=True, nogil=True)
def _snap_kernel(w, scale, out):
    """out[i] = float32(rint(float64(w[i]) * scale) / scale)."""
    for i in numba.prange(w.shape[0]):
        out[i] = np.float32(np.rint(np.float64(w[i]) * scale) / scale)


def snapped(w: torch.Tensor, scale: float) -> torch.Tensor:
    """``snapped_reference``'s numbers, in ``w``'s memory layout (channels-last included): in one
    compiled pass for fp32 weights on the CPU, walking them in memory order (``trainer.memory_order``)."""
    if w.device.type != "cpu" or w.dtype != torch.float32:
        return snapped_reference(w, scale)
    out = torch.empty_like(w)                    # dense, in w's layout where w is dense
    order = memory_order(out[None])
    _snap_kernel(rows(w.detach()[None], order).reshape(-1).numpy(), float(scale),
                 rows(out[None], order).reshape(-1).numpy())   # a view of out: its memory order
    return out


class _OnGrid(torch.autograd.Function):
    """The grid's weights forward, the gradient to the float weights unchanged backward."""

    @staticmethod
    def forward(ctx, w, bits):
        return snapped(w, grid_scale(w, bits))

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def on_grid(w: torch.Tensor, bits: int) -> torch.Tensor:
    """``w`` rounded onto its layer's ``bits``-bit grid in the forward pass; identity in the backward."""
    return _OnGrid.apply(w, bits)
