"""Tensor layouts that every hwsim path shares: channels-last maps, flat views in storage
order, dense weights in a channels-last input's column order, int8 words for the event
kernels, and the exact im2col + GEMM convolution of the CUDA path."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

CL = torch.channels_last
GEMM_COLS_BUDGET = 1 << 30       # bytes of im2col columns per GEMM


def flat(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """(B, ...) -> a (B, M) view in storage order, and whether that order is (H, W, C)."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=CL):
        return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1), True
    return x.reshape(x.shape[0], -1), False


def hwc_columns(w4: np.ndarray) -> np.ndarray:
    """Dense weights (O, C, H, W) as (O, H*W*C): columns in a channels-last input's order."""
    return w4.transpose(0, 2, 3, 1).reshape(len(w4), -1)


def int8_words(x: torch.Tensor) -> np.ndarray:
    """x (..., K) as a contiguous int8 array whose last axis is zero-padded to whole int64 words
    (the event kernels test eight inputs at once)."""
    xs = x.to(torch.int8)
    if xs.shape[-1] % 8:                   # torch's pad: 7x numpy's concatenate on a 3-channel input
        xs = F.pad(xs, (0, -xs.shape[-1] % 8))
    return xs.contiguous().numpy()


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
