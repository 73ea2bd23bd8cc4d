"""Which torch device a command runs on, decided in one place for every stage."""
from __future__ import annotations

import torch


def resolve_device(device: str | torch.device, error: type[Exception] = ValueError) -> torch.device:
    """"auto": CUDA where torch sees a GPU, else the CPU; "cpu" or "cuda" (with an index) as
    asked. A device that is not there, or of another type, raises ``error`` naming --device."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise error(f"--device: unsupported device {device!r} (cpu, cuda or auto)") from None
    if dev.type not in ("cpu", "cuda"):
        raise error(f"--device: unsupported device {device!r} (cpu, cuda or auto)")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise error("--device: cuda requested, but torch sees no CUDA GPU")
    return dev
