"""Work sized before it starts: the memory a command is about to hold, checked against what
the machine has before the work begins.

A command that outgrows the memory is killed by the kernel with nothing on stderr, after
minutes of work; a few that grow step by step never reach Python's ``MemoryError``. So each
command that holds something proportional to T (STDB's spike trains for backpropagation,
export's reference spike trains) estimates it from its options and input files first, and
refuses, naming them, what cannot fit. The estimates are stated where the work is
(``trainer.snn.training_window_memory``, ``export.exporter.require_export_memory``).
"""
from __future__ import annotations

import os
from pathlib import Path

from records.cli import BadInput
from records.heap import release_freed_memory

# The part of the available memory a command may plan to hold: the rest is for what the
# estimate leaves out (the interpreter, the model, the data set, the allocator's slack).
USABLE_FRACTION = 0.8


def gib(nbytes: float) -> str:
    return f"{nbytes / 2 ** 30:,.1f} GiB"


def _cgroup_room() -> int | None:
    """What the container's memory limit (cgroup v2, else v1) leaves; None without a limit."""
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            text = Path(limit).read_text().strip()
            if text == "max" or int(text) >= 2 ** 60:
                return None
            return max(0, int(text) - int(Path(usage).read_text().strip()))
        except (OSError, ValueError):
            continue
    return None


def available_memory(device: str = "cpu") -> int:
    """Bytes a new allocation can take now: a GPU's free memory, else the smaller of the
    kernel's MemAvailable and what the container's limit leaves (after this process has
    handed back the memory it freed: ``records.heap``)."""
    if str(device).startswith("cuda"):
        import torch
        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    release_freed_memory()
    room = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                room = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if room is None:
        room = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    cgroup = _cgroup_room()
    return room if cgroup is None else min(room, cgroup)


def require_memory(need: float, where: str, what: str, fix: str, device: str = "cpu") -> None:
    """Refuse, naming ``where`` (the options or file that set the size), work that would hold
    ``need`` bytes where the usable part of the available memory is less."""
    have = available_memory(device)
    if need > USABLE_FRACTION * have:
        place = "GPU memory" if str(device).startswith("cuda") else "memory"
        raise BadInput(f"{where}: {what} holds about {gib(need)}, and {gib(have)} of {place} is available; {fix}")
