"""Data-parallel training under ``torchrun`` (nccl on GPUs, gloo on CPU), same command.

Every rank walks the same global batches (shuffling is seeded by (seed, epoch)) and
takes its slice ``rank::world``; gradients are averaged with one all-reduce per
parameter after the (possibly truncated-BPTT) backward passes of a step - the arithmetic
of DistributedDataParallel, without its one-forward-one-backward contract, which
truncated BPTT breaks. Poisson spikes are drawn for the global batch on every rank and
then sliced, so a run on N processes sees the spikes a single process would. Only rank 0
writes files; every rank evaluates the same validation set.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Group:
    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, x: torch.Tensor, dim: int = 0) -> torch.Tensor:
        """This rank's slice of a global batch."""
        if self.world == 1:
            return x
        index = torch.arange(self.rank, x.shape[dim], self.world, device=x.device)
        return x.index_select(dim, index)

    def average_gradients(self, params) -> None:
        if self.world == 1:
            return
        for p in params:
            if p.grad is not None:
                dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                p.grad.div_(self.world)

    def sum(self, values: list[float], device="cpu") -> list[float]:
        if self.world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.tolist()

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def setup(device: str) -> Group:
    """The process group torchrun describes in the environment, or a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Group()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if str(device).startswith("cuda") else "gloo")
    rank = dist.get_rank()
    if str(device).startswith("cuda"):
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)))
    return Group(rank=rank, world=dist.get_world_size())
