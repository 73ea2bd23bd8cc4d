"""The export's weight grid, for a network that trains on it (quantization-aware fine-tuning).

Export (``export.quantize``) stores each weighted layer's weights as signed ``bits``-bit
mantissas at one scale per layer: the scale that maps the largest weight to ``2^(bits-1) - 1``
(or the most negative to ``-2^(bits-1)``) without clipping, weights rounded to nearest. An
average pool folded into a layer divides all its weights alike, so the grid relative to
the layer's own weights is the same before and after the fold. A network whose forward
pass uses ``on_grid`` weights computes, in float, with the very weights the core holds;
the straight-through estimator passes the gradient to the float weights unchanged.
"""
from __future__ import annotations

import torch

from trainer.layers import ArchError, ResBlock
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


def on_grid(w: torch.Tensor, bits: int) -> torch.Tensor:
    """``w`` rounded onto its layer's ``bits``-bit grid in the forward pass; identity in the backward."""
    with torch.no_grad():
        scale = mantissa_scale(float(w.max()), float(w.min()), bits)
        snapped = torch.round(w.double() * scale).div_(scale).to(w.dtype)
    return w + (snapped - w).detach()
