"""The ANN stage's training speed on the CPU: the paper's ReLU ANN beside the low-latency
recipe's QCFS ANN with its activation in the reference torch expression and in the compiled
kernels (trainer.qcfs_numba), interleaved in one run.

    python benchmarks/ann_speed.py                          # VGG9, 3x32x32, batch 128, bf16, channels-last
    python benchmarks/ann_speed.py --arch vgg16 --batch 64 --fp32

One iteration is the trainer's ANN step (trainer.train.ANNStep's arithmetic): forward under
bf16 autocast (or fp32), cross-entropy, backward, SGD with momentum and weight decay, on
random images of CIFAR-10's shape. Methods: ``relu`` (the paper's recipe, no batch norm),
``relu+bn``, ``qcfs-reference`` and ``qcfs-numba`` (batch norm and L = 8 levels, the
low-latency recipe as the CIFAR runs train it). Each round times every method for ``--iters``
iterations in a rotating order; after ``--repeats`` rounds it prints min and median images/s
and the medians' ratios to ``relu+bn`` (the same network with ReLU: QCFS's cost) and of the
kernels to the reference.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.interleave import interleaved, items_per_second  # noqa: E402
from benchmarks.machine import describe  # noqa: E402
from trainer.models import ANN, build_config  # noqa: E402
from trainer.qcfs import qcfs  # noqa: E402

METHODS = {"relu": dict(norm=False, quant_levels=None), "relu+bn": dict(norm=True, quant_levels=None),
           "qcfs-reference": dict(norm=True, quant_levels=8), "qcfs-numba": dict(norm=True, quant_levels=8)}


class Step:
    """One method's network, optimizer and data."""

    def __init__(self, name: str, args):
        torch.manual_seed(0)
        self.ann = ANN(build_config(args.arch, (3, 32, 32), 10, conv_dropout=0.0, fc_dropout=0.0, **METHODS[name]))
        if name == "qcfs-reference":
            self.ann.qcfs_activation = qcfs
        self.ann = self.ann.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.SGD(self.ann.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        self.x = (torch.rand(args.batch, 3, 32, 32) * 2 - 1).contiguous(memory_format=torch.channels_last)
        self.y = torch.randint(0, 10, (args.batch,))
        self.bf16 = not args.fp32

    def __call__(self) -> None:
        with torch.autocast("cpu", torch.bfloat16, enabled=self.bf16):
            logits = self.ann(self.x)
        loss = F.cross_entropy(logits.float(), self.y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="vgg9", choices=["vgg5", "vgg9", "vgg11", "vgg16"])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--fp32", action="store_true", help="no bf16 autocast")
    p.add_argument("--iters", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    print(describe("cpu"))
    print(f"{args.arch}, batch {args.batch}, {'fp32' if args.fp32 else 'bf16 autocast'}, channels-last, "
          f"{args.repeats} rounds x {args.iters} iterations")
    steps = {name: Step(name, args) for name in METHODS}
    for step in steps.values():
        step()                                          # warm-up (numba compiles or loads its cache)
    rates = interleaved(steps, args.repeats, lambda name: items_per_second(steps[name], args.iters, args.batch))
    med = {name: statistics.median(v) for name, v in rates.items()}
    print(f"{'method':16s} {'min':>8s} {'median':>8s}  images/s   x relu+bn")
    for name, v in rates.items():
        print(f"{name:16s} {min(v):8.1f} {med[name]:8.1f}  {med[name] / med['relu+bn']:17.2f}")
    print(f"qcfs-numba / qcfs-reference: {med['qcfs-numba'] / med['qcfs-reference']:.2f}x")


if __name__ == "__main__":
    main()
