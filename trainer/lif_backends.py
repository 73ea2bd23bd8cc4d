"""The LIF backends by name (the equations and two of them: ``trainer.lif``; the fused
Triton kernels for CUDA: ``trainer.lif_fused``; their numba counterpart for the CPU:
``trainer.lif_numba``), as SpikingJelly picks a neuron's backend."""
from __future__ import annotations

import importlib.util

import torch

from trainer.lif import lif_multistep, lif_reference

BACKENDS = ("auto", "multistep", "reference", "fused", "numba")


def fused_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def neuron_backend(name: str, device: torch.device, surrogate: str = "stdb"):
    """The LIF function of backend ``name`` for tensors on ``device`` and a ``surrogate`` kind
    (the fused kernels have no "spikebp": "auto" takes multistep for it)."""
    if name == "auto":        # the compiled kernels where they run (no spikebp there), else multistep
        if surrogate == "spikebp":
            name = "multistep"
        elif device.type == "cuda":
            name = "fused" if fused_available() else "multistep"
        else:
            name = "numba" if device.type == "cpu" else "multistep"
    if name in ("fused", "numba") and surrogate == "spikebp":
        raise ValueError(f"the {name} backend has no spikebp derivative; use --backend multistep")
    if name == "numba":
        from trainer.lif_numba import lif_numba
        return lif_numba
    if name == "fused":
        if not fused_available():
            raise ValueError("the fused backend needs Triton (pip install triton); use --backend multistep")
        from trainer.lif_fused import lif_fused
        return lif_fused
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return {"multistep": lif_multistep, "reference": lif_reference}[name]
