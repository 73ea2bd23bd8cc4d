"""The export's weight grid, for a network that trains on it (quantization-aware fine-tuning).

Export (``export.quantize``) stores each weighted layer's weights as signed ``bits``-bit
mantissas at one scale per layer: the scale that maps the largest weight to ``2^(bits-1) - 1``
(or the most negative to ``-2^(bits-1)``) without clipping, weights rounded to nearest. An
average pool folded into a layer divides all its weights alike, so the grid relative to
the layer's own weights is the same before and after the fold. A residual block's
shortcut (its 1x1 projection, or the identity) is not on a grid of its own: export stores
it in the units of the population it feeds (conv2's scale) as mantissas on Lava's
mixed-sign step times a power of two, the smallest that holds them (``shortcut_exponent``,
which export calls too), and ``block_on_grid`` gives the float weights that stand for
(and, for a negative exponent, the floor the core takes of the shortcut's summed current).
A network whose forward pass uses ``on_grid`` weights computes, in float, with the very
weights the core holds; the straight-through estimator passes the gradient to the float
weights unchanged.

Fine-tuning snaps every weight at every forward pass: VGG9's 32.1 M weights at each step.
``snapped_reference`` is the grid as torch operations (fp64 products, rounded half to even,
divided back, cast to the weights' dtype): a chain of passes over 8-byte copies. On the CPU
``_snap_kernel`` computes the same fp64 arithmetic per weight in one compiled pass that reads
the weights once and writes the snapped ones once: the same numbers, bit for bit (IEEE
products and quotients are correctly rounded in both; ``np.rint`` and ``torch.round`` both
round half to even).
"""
from __future__ import annotations

import dataclasses
import math

import numba
import numpy as np
import torch

from trainer.memory_order import memory_order, rows
from trainer.models import ResidualBlock

MIN_BITS, MAX_BITS = 2, 8
SHORTCUT_EXP_RANGE = (-7, 7)       # a shortcut's weight_exp, as Lava's Sparse takes it


class ShortcutRangeError(ValueError):
    """A shortcut whose weights need a weight_exp above the range in its population's units."""


def mixed_sign_step(bits: int) -> int:
    """The step of Lava's mixed-sign weight grid at ``bits`` bits (its Dense and Sparse
    weights): 2 for 8-bit weights; ``export.fixedpoint.dense_weight_step``'s rule."""
    return 2 ** (9 - bits)


def shortcut_exponent(target_max: float, target_min: float, bits: int) -> int:
    """The weight_exp of a shortcut whose weights, in its population's units, lie in
    [target_min, target_max]: the smallest that fits them into ``bits``-bit mantissas on
    the mixed-sign step (at least -7; 0 for all-zero weights); ShortcutRangeError above 7."""
    if target_max == 0 and target_min == 0:
        return 0
    fill = mantissa_scale(target_max, target_min, bits) * mixed_sign_step(bits)
    exp = math.ceil(math.log2(1.0 / fill))
    if exp > SHORTCUT_EXP_RANGE[1]:
        raise ShortcutRangeError(f"needs weight_exp {exp}, more than {SHORTCUT_EXP_RANGE[1]}")
    return max(exp, SHORTCUT_EXP_RANGE[0])


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
    def forward(ctx, w, scale):
        return snapped(w, scale)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def on_grid(w: torch.Tensor, bits: int) -> torch.Tensor:
    """``w`` rounded onto its layer's ``bits``-bit grid in the forward pass; identity in the backward."""
    return _OnGrid.apply(w, grid_scale(w, bits))


@dataclasses.dataclass
class BlockGrid:
    """A residual block's weights as its cores hold them (``block_on_grid``): conv1's and
    conv2's on their own grids, the shortcut's - a projection's weights, or the identity's
    one factor - in conv2's ``units`` (integer current per float current) with the
    exponent ``exp`` export stores it with."""
    conv1: torch.Tensor
    conv2: torch.Tensor
    shortcut: torch.Tensor | float
    units: float
    exp: int

    def shortcut_current(self, current: torch.Tensor) -> torch.Tensor:
        """The shortcut's current as the core sums it: for a negative exponent the core
        shifts the integer sum right, flooring it (``export.fixedpoint.shortcut_input``), so
        the float current is floored in the core's units - after it is rounded to the
        multiple of 2^exp it is, so that the float sum's own rounding cannot cross an integer;
        straight-through backward."""
        if self.exp >= 0:
            return current
        y = current * self.units
        floored = torch.floor(torch.round(y * 2.0 ** -self.exp) * 2.0 ** self.exp) / self.units
        return current + (floored - current).detach()

    def skip(self, block: ResidualBlock, x: torch.Tensor) -> torch.Tensor:
        """The shortcut's current for the block's input spikes ``x`` as the core computes it,
        then the shortcut's own bias, which export adds to conv2's (the neurons' bias: no floor)."""
        if block.shortcut is None:
            return self.shortcut_current(x * self.shortcut)
        current = self.shortcut_current(block.shortcut._conv_forward(x, self.shortcut, None))
        return current if block.shortcut.bias is None else current + block.shortcut.bias[:, None, None]


def block_on_grid(block: ResidualBlock, bits: int, pool: int = 1) -> BlockGrid:
    """A residual block's weights as its cores hold them at ``bits`` bits, straight-through
    backward (the module docstring). ``pool``: the side of the average pool folded into the
    block (export folds it into the shortcut, dividing its weights by pool**2)."""
    area = float(pool * pool)
    units = grid_scale(block.conv2.weight, bits)
    projection = block.shortcut is not None          # folded as export folds it, in float64
    w = block.shortcut.weight.double() / area if projection else torch.tensor([1.0 / area], dtype=torch.float64)
    lo, hi = torch.aminmax(w.detach())
    exp = shortcut_exponent(float(hi) * units, float(lo) * units, bits)
    scale = units / (2.0 ** exp * mixed_sign_step(bits))
    shortcut = ((_OnGrid.apply(w, scale) * area).to(block.shortcut.weight.dtype) if projection
                else float(snapped_reference(w, scale)) * area)
    return BlockGrid(on_grid(block.conv1.weight, bits), _OnGrid.apply(block.conv2.weight, units), shortcut, units, exp)
