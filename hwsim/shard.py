"""hwsim across processes: ``torchrun --nproc_per_node N -m hwsim.run ...``.

Each rank simulates a contiguous slice of the samples, encoded with their global indices
(``simulate(first_index=...)``), so every sample sees the spike trains it would see in one
process; the per-rank results are gathered and merged in rank order
(``SimResult.merged``), so the result is one process's, counts and per-sample arrays
alike. Only rank 0 writes and prints. gloo on CPUs, nccl on GPUs, one GPU per rank
(LOCAL_RANK).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from hwsim.counters import SimError, SimResult
from records.device import resolve_device


@dataclass(frozen=True)
class Shard:
    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def bounds(self, samples: int) -> tuple[int, int]:
        """This rank's samples [first, end): contiguous, sizes differing by at most one."""
        return samples * self.rank // self.world, samples * (self.rank + 1) // self.world

    def gather(self, part: SimResult) -> SimResult:
        """Every rank's part, merged in rank order (on every rank)."""
        if self.world == 1:
            return part
        parts: list[SimResult | None] = [None] * self.world
        dist.all_gather_object(parts, part)
        return SimResult.merged(parts)


def setup(device: str) -> Shard:
    """The process group torchrun describes in the environment, or a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Shard()
    on_gpu = resolve_device(device, SimError).type == "cuda"
    if on_gpu:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if on_gpu else "gloo")
    return Shard(rank=dist.get_rank(), world=dist.get_world_size())


def close(finished: bool = True) -> None:
    """Leave the process group (if any): after every rank is done when ``finished``, at once
    after an error. A rank that exits with it open aborts in the collective library's threads."""
    if dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()
