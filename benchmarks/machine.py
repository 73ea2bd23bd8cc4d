"""The machine a benchmark ran on, as one line: CPU model, cores, the vector and matrix
extensions that decide its speed, torch's build and the GPU if one is used. Figures from
different CPUs differ by integer factors (AVX2 only against AVX-512 BF16/VNNI or AMX)."""
from __future__ import annotations

import os
import platform

import torch

EXTENSIONS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def cpu_model_and_flags() -> tuple[str, set[str]]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    return model, flags


def describe(device: str = "cpu") -> str:
    model, flags = cpu_model_and_flags()
    found = [e for e in EXTENSIONS if e in flags] or ["none of " + "/".join(EXTENSIONS)]
    line = (f"machine: {model}, {os.cpu_count()} logical CPUs, {torch.get_num_threads()} torch threads, "
            f"extensions {' '.join(found)}; torch {torch.__version__}")
    if str(device).startswith("cuda") and torch.cuda.is_available():
        line += f"; GPU {torch.cuda.get_device_name()}"
    return line


HEAP_CHOICES = ("reuse", "default")
HEAP_HELP = ("reuse: freed memory stays in the process for the next allocation, as python -m trainer runs "
             "(records.heap; every method in this process gets it); default: glibc's own policy")


def set_heap(choice: str) -> str:
    """Apply a benchmark's --heap choice; the words for its machine line."""
    from records.heap import reuse_freed_memory
    reused = choice == "reuse" and reuse_freed_memory()
    return "; heap: freed memory reused" if reused else "; heap: the C library's default"
