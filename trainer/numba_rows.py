"""Rows of fp32 or bf16 numbers for the CPU's compiled kernels (trainer.lif_numba, trainer.qcfs_numba).

numba has no bf16 type, so a bf16 tensor enters a kernel as its uint16 bits (``bits``): a row is
widened to fp32 exactly (the 16 bits shifted up) to compute on, and a result is rounded back to
nearest even, as torch's cast rounds (NaN stays NaN). An fp32 tensor is used as it is.
"""
from __future__ import annotations

import numba
import numpy as np
import torch

BF16_ONE = 0x3F80            # 1.0 in bf16 bits


@numba.njit(inline="always")
def load_row(src, dst, bf16):
    """dst (fp32) <- src: fp32 as is, or bf16 bits (uint16) widened exactly."""
    if bf16:
        wide = dst.view(np.uint32)
        for i in range(src.shape[0]):
            wide[i] = np.uint32(src[i]) << 16
    else:
        for i in range(src.shape[0]):
            dst[i] = src[i]


@numba.njit(inline="always")
def _bf16_bits(b, nan):
    """The bf16 bits (in a uint32) of the fp32 number with bits ``b``: rounded to nearest
    even, as torch's cast rounds; a NaN (``nan``) gives the quiet NaN."""
    return np.uint32(0x7FC0) if nan else (b + np.uint32(0x7FFF) + ((b >> 16) & np.uint32(1))) >> 16


@numba.njit(inline="always")
def store_row(src, dst, bf16):
    """dst <- src (fp32): fp32 as is, or bf16 bits rounded to nearest even (NaN stays NaN)."""
    if bf16:
        wide = src.view(np.uint32)
        for i in range(src.shape[0]):
            dst[i] = _bf16_bits(wide[i], src[i] != src[i])
    else:
        for i in range(src.shape[0]):
            dst[i] = src[i]


@numba.njit(inline="always")
def round_to_bf16(row):
    """row (fp32) <- each value rounded to bf16 as store_row rounds, kept in fp32 (exact)."""
    wide = row.view(np.uint32)
    for i in range(row.shape[0]):
        wide[i] = _bf16_bits(wide[i], row[i] != row[i]) << 16


def bits(x: torch.Tensor) -> np.ndarray:
    """A tensor's numbers for the kernels: fp32 as is, bf16 as its uint16 bits."""
    return x.view(torch.int16).numpy().view(np.uint16) if x.dtype == torch.bfloat16 else x.numpy()
