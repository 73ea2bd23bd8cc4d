"""A layer's neurons as rows in their memory order, for the compiled LIF kernels
(``trainer.lif_numba``, ``trainer.lif_fused``) and the weight grid's compiled snap
(``trainer.weight_grid``).

The neuron recurrence is elementwise, so a kernel may walk a step's neurons in any order
as long as currents, state, spikes and gradients share it. Walking them in the order
they lie in memory makes a channels-last layer (``trainer.snn``) a view, not a copy, on
the way in and on the way out: its spikes keep the layout the next conv computes in.
"""
from __future__ import annotations

import torch


def memory_order(x: torch.Tensor) -> tuple[int, ...]:
    """The dims of one step (x[0]) from the slowest in memory to the fastest."""
    step = x[0]
    return tuple(sorted(range(step.dim()), key=lambda d: (-step.stride(d), d)))


def rows(x: torch.Tensor, order) -> torch.Tensor:
    """(T, ...) -> (T, N), each step's neurons in ``order``; a view where x lies that way, else a copy."""
    return x.permute(0, *(d + 1 for d in order)).reshape(x.shape[0], -1)


def like(flat: torch.Tensor, shape, order) -> torch.Tensor:
    """The (T, *shape) tensor whose memory is ``flat`` (T, N) laid out in ``order``."""
    permuted = flat.view(flat.shape[0], *(shape[d] for d in order))
    inverse = sorted(range(len(order)), key=lambda d: order[d])
    return permuted.permute(0, *(d + 1 for d in inverse))


def state_row(x: torch.Tensor, order, dtype) -> torch.Tensor:
    """A state tensor (one step's shape) as one contiguous row of ``dtype`` in ``order``."""
    return rows(x.detach().to(dtype)[None], order).reshape(-1).contiguous()
