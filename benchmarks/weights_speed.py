"""The per-step work over every weight on the CPU, interleaved in one run: the optimizer's
update in torch's three forms, and the snap onto the export's weight grid that fine-tuning
does at every forward pass, as torch operations and as one compiled pass.

    python benchmarks/weights_speed.py                   # VGG9's 32.1 M parameters (CIFAR-10)
    python benchmarks/weights_speed.py --arch vgg16 --repeats 9

VGG9's two 4,096-wide layers hold 79 % of its weights but little of its compute: at the
batches the CPU runs (the ANN at 128, STDB at 32 x T = 4) a pass over every weight,
gradient and moment is a share of an iteration worth measuring. Optimizers: SGD (momentum
0.9, weight decay 5e-4) and Adam, each as ``for-loop`` (one parameter at a time: the
reference), ``foreach`` (torch's default on the CPU: one kernel per operation over all
parameters) and ``fused`` (one kernel per parameter for the whole update, what
``trainer.recipe.make_optimizer`` builds on the CPU). Grid: ``trainer.weight_grid``'s
8-bit snap of every weight with its straight-through gradient, as torch operations
(``w + (snapped_reference(w) - w).detach()``) against ``on_grid`` (one compiled pass).
The gradients are fixed random numbers; each round times ``--iters`` calls of every method
in a rotating order; min and median milliseconds per call after ``--repeats`` rounds, and
the medians' ratios to the first form of each group.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.interleave import interleaved  # noqa: E402
from benchmarks.machine import describe  # noqa: E402
from trainer.models import ANN, build_config  # noqa: E402
from trainer.recipe import OptimConfig  # noqa: E402
from trainer.weight_grid import grid_scale, on_grid, snapped_reference  # noqa: E402

FORMS = {"for-loop": dict(foreach=False, fused=False), "foreach": dict(foreach=True, fused=False),
         "fused": dict(foreach=False, fused=True)}
RECIPES = {"sgd": OptimConfig(optimizer="sgd", lr=0.05, weight_decay=5e-4),
           "adam": OptimConfig(optimizer="adam", lr=3e-4, weight_decay=0.0)}


def optimizer(params, opt: OptimConfig, form: str) -> torch.optim.Optimizer:
    if opt.optimizer == "sgd":
        return torch.optim.SGD(params, lr=opt.lr, momentum=opt.momentum, weight_decay=opt.weight_decay,
                               **FORMS[form])
    return torch.optim.Adam(params, lr=opt.lr, weight_decay=opt.weight_decay, **FORMS[form])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="vgg9", choices=["vgg5", "vgg9", "vgg11", "vgg16"])
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    print(describe("cpu"))
    torch.manual_seed(0)
    template = ANN(build_config(args.arch, (3, 32, 32), 10))
    n = sum(t.numel() for t in template.parameters())
    print(f"{args.arch}: {n / 1e6:.1f} M parameters in {len(list(template.parameters()))} tensors, fp32; "
          f"{args.repeats} rounds x {args.iters} calls")
    calls = {}
    for name, opt in RECIPES.items():
        for form in FORMS:
            params = [t.detach().clone().requires_grad_() for t in template.parameters()]
            for t in params:
                t.grad = torch.randn_like(t) * 1e-3
            calls[f"{name} {form}"] = optimizer(params, opt, form).step
    weights = [t for t in template.parameters() if t.dim() > 1]
    calls["grid torch"] = lambda: [w + (snapped_reference(w, grid_scale(w, 8)) - w).detach() for w in weights]
    calls["grid compiled"] = lambda: [on_grid(w, 8) for w in weights]
    for call in calls.values():
        call()                                          # warm-up: moment buffers, numba's compilation

    def ms_per_call(name: str) -> float:
        start = time.perf_counter()
        for _ in range(args.iters):
            calls[name]()
        return (time.perf_counter() - start) / args.iters * 1e3
    ms = interleaved(calls, args.repeats, ms_per_call)
    firsts = {}
    print(f"{'method':<16} {'min ms':>8} {'median ms':>10}  x the group's first")
    for name, values in ms.items():
        median = statistics.median(values)
        base = firsts.setdefault(name.split()[0], median)
        print(f"{name:<16} {min(values):8.1f} {median:10.1f}  {median / base:8.2f}")


if __name__ == "__main__":
    main()
