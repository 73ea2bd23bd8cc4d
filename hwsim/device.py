"""Where hwsim runs: the device, TF32 on CUDA, and CPU threads for the recurrence."""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch



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


def tf32_round(x: np.ndarray) -> np.ndarray:
    """Round float32 values to TF32 (10 explicit mantissa bits, round to nearest even)."""
    b = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    drop = 13
    half = 1 << (drop - 1)
    lsb = (b >> drop) & 1
    b = ((b + half - 1 + lsb) >> drop) << drop
    return b.astype(np.uint32).view(np.float32)
